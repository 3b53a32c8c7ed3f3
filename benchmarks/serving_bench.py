"""The served model's latency and throughput against the `recommend` command's, one run.

    python -m benchmarks.serving_bench --model MODEL_DIR --data PREPARED_DIR
        [--requests 500] [--batch 1000] [--sessions 20000] [--json OUT.json]

The model is logged to a temporary MLflow store and served by a real `mlflow models serve`
(--env-manager local) on 127.0.0.1. Sessions are the test split's sessions (item ids, in
order). Measured, each on the same machine in the same run:

    single     `--requests` requests of one session each (dataframe_split, k 20), one after
               another on one kept-alive connection: latency p50 / p90 / p99
    batched    the first `--sessions` sessions in requests of `--batch`: sessions/s
    recommend  the same sessions through `Recommender` in this process, as the `recommend`
               command scores them (same k, exact top-k): sessions/s

The server is one worker (MLflow's default is one per `--workers`); under a load balancer
throughput grows with the workers and machines behind it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.local_server import free_port, running_server


def test_sessions(data_dir: Path, limit: int) -> list[list[Any]]:
    """The first `limit` sessions of the test split as lists of original item ids."""
    events = pl.read_parquet(data_dir / "test.parquet", columns=["session_id", "item_id"])
    grouped = events.group_by("session_id", maintain_order=True).agg("item_id").head(limit)
    return grouped["item_id"].to_list()


def served_model(model_dir: Path, folder: Path) -> Path:
    """The model logged as MLflow logs it (with its pinned environment), downloaded."""
    import mlflow

    from gru4rec.serving import tracking

    with tracking.start_run(f"sqlite:///{folder / 'mlflow.db'}", "serving-bench", "bench"):
        info = tracking.log_model(model_dir)
    return Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(folder / "m")))


def serve_command(model: Path, port: int, workers: int = 1) -> tuple[list[str], dict[str, str]]:
    """`mlflow models serve` of `model` on 127.0.0.1:`port` in this environment, and its
    environment (the server runs `uvicorn` from PATH: this interpreter's)."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        str(model),
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    bin_dir = Path(sys.executable).parent
    return command, {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def post(connection: http.client.HTTPConnection, sessions: list[list[Any]], k: int) -> int:
    body = json.dumps(
        {
            "dataframe_split": {"columns": ["items"], "data": [[s] for s in sessions]},
            "params": {"k": k},
        }
    )
    connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise SystemExit(f"serving_bench: HTTP {response.status}: {payload[:500]!r}")
    return len(json.loads(payload)["predictions"])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory")
    parser.add_argument("--data", type=Path, required=True, help="its prepared data directory")
    parser.add_argument("--requests", type=int, default=500, help="single-session requests")
    parser.add_argument("--batch", type=int, default=1000, help="sessions per batched request")
    parser.add_argument("--sessions", type=int, default=20000, help="sessions for throughput")
    parser.add_argument("--k", type=int, default=20, help="recommendations per session")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from gru4rec.serving.recommend import Recommender

    sessions = test_sessions(args.data, max(args.sessions, args.requests))
    result: dict[str, Any] = {"model": str(args.model), "k": args.k}
    with tempfile.TemporaryDirectory(prefix="gru4rec-serving-") as folder:
        model = served_model(args.model, Path(folder))
        port = free_port()
        command, env = serve_command(model, port)
        url = f"http://127.0.0.1:{port}"
        with running_server(command, f"{url}/ping", Path(folder) / "serve.log", env):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            for session in sessions[:20]:  # warm up
                post(connection, [session], args.k)
            latencies = []
            for session in sessions[: args.requests]:
                started = time.perf_counter()
                post(connection, [session], args.k)
                latencies.append((time.perf_counter() - started) * 1000)
            result["single_ms"] = {f"p{q}": percentile(latencies, q) for q in (50, 90, 99)}
            batched = sessions[: args.sessions]
            started = time.perf_counter()
            for first in range(0, len(batched), args.batch):
                post(connection, batched[first : first + args.batch], args.k)
            result["served_sessions_per_s"] = len(batched) / (time.perf_counter() - started)

    recommender = Recommender.from_path(args.model, device="cpu", index="none")
    batched = sessions[: args.sessions]
    started = time.perf_counter()
    recommender.recommend(batched, k=args.k, batch_size=1024)  # as the command
    result["recommend_sessions_per_s"] = len(batched) / (time.perf_counter() - started)
    result["n_sessions"] = len(batched)

    single = result["single_ms"]
    print(
        f"single session (n={args.requests}): p50 {single['p50']:.1f} ms, "
        f"p90 {single['p90']:.1f} ms, p99 {single['p99']:.1f} ms"
    )
    print(
        f"batched ({args.batch} sessions a request, {len(batched)} sessions): "
        f"{result['served_sessions_per_s']:,.0f} sessions/s served"
    )
    print(
        f"recommend in process: {result['recommend_sessions_per_s']:,.0f} sessions/s; served / "
        f"in process {result['served_sessions_per_s'] / result['recommend_sessions_per_s']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
