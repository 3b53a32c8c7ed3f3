"""The served model under load: concurrent clients, and requests beyond the limits.

    python -m benchmarks.serving_load --model MODEL_DIR --data PREPARED_DIR
        [--clients 1 4 16] [--seconds 60] [--max-requests 200000] [--workers 1]
        [--oversized] [--json OUT.json]

The model is logged to a temporary MLflow store and served by a real `mlflow models serve`
(--env-manager local, the same scoring server `mlflow models build-docker` puts in an image)
on 127.0.0.1. For each number of clients, that many threads each keep one connection and
send one test session per request (k 20) until `--seconds` pass or `--max-requests` are
sent: requests/s, latency p50 / p99, errors (any answer but 200). With `--oversized`: one
request of a million sessions and one session of 100,000 events, each answered 400 by the
model's limits; the server's peak memory (RSS, its processes together) is sampled while
they are read and answered.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.local_server import free_port, running_server
from benchmarks.serving_bench import percentile, serve_command, served_model, test_sessions


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _body(sessions: list[list[Any]], k: int = 20) -> bytes:
    return json.dumps({"inputs": {"items": sessions}, "params": {"k": k}}).encode()


def load(port: int, sessions: list[list[Any]], clients: int, seconds: float, cap: int) -> dict:
    """`clients` threads sending one session a request until `seconds` or `cap` requests."""
    bodies = [_body([session]) for session in sessions]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    sent = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        position = number
        while time.perf_counter() < deadline:
            with lock:
                if sent[0] >= cap:
                    return
                sent[0] += 1
            started = time.perf_counter()
            try:
                connection.request(
                    "POST",
                    "/invocations",
                    bodies[position % len(bodies)],
                    {"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors[number] += 1
            except (OSError, http.client.HTTPException):
                errors[number] += 1
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            latencies[number].append((time.perf_counter() - started) * 1000)
            position += clients

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [value for values in latencies for value in values]
    return {
        "clients": clients,
        "requests": len(every),
        "seconds": elapsed,
        "requests_per_s": len(every) / elapsed,
        "p50_ms": percentile(every, 50),
        "p99_ms": percentile(every, 99),
        "errors": sum(errors),
    }


def oversized(port: int, server_pid: int, sessions: list[list[Any]]) -> list[dict]:
    """A million sessions in one request, and one session of 100,000 events."""
    import psutil

    def rss() -> int:
        root = psutil.Process(server_pid)
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    cases = {
        "1,000,000 sessions": [sessions[i % len(sessions)] for i in range(1_000_000)],
        "one session of 100,000 events": [
            [item for _ in range(100_000 // len(sessions[0]) + 1) for item in sessions[0]][:100_000]
        ],
    }
    results = []
    for name, payload in cases.items():
        body = _body(payload)
        before, peak, running = rss(), [0], [True]

        def sample(peak: list[int] = peak, running: list[bool] = running) -> None:
            while running[0]:
                peak[0] = max(peak[0], rss())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        running[0] = False
        sampler.join()
        results.append(
            {
                "request": name,
                "body_mb": len(body) / 2**20,
                "status": response.status,
                "seconds": time.perf_counter() - started,
                "server_rss_before_mb": before / 2**20,
                "server_rss_peak_mb": peak[0] / 2**20,
                "message": json.loads(answer).get("message", "")[
                    -240:
                ],  # MLflow echoes the input first
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory")
    parser.add_argument("--data", type=Path, required=True, help="its prepared data directory")
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=60.0, help="per number of clients")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per number of clients")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--oversized", action="store_true", help="also the requests too large")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    sessions = test_sessions(args.data, 5_000)
    result: dict[str, Any] = {
        "model": str(args.model),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "workers": args.workers,
        "load": [],
    }
    with tempfile.TemporaryDirectory(prefix="gru4rec-load-") as folder:
        model = served_model(args.model, Path(folder))
        port = free_port()
        command, env = serve_command(model, port, args.workers)
        with running_server(
            command, f"http://127.0.0.1:{port}/ping", Path(folder) / "serve.log", env
        ) as server:
            load(port, sessions, 1, 2.0, 50)  # warm up
            for clients in args.clients:
                row = load(port, sessions, clients, args.seconds, args.max_requests)
                result["load"].append(row)
                print(
                    f"{clients:>3} clients: {row['requests']:,} requests in {row['seconds']:.0f} s, "
                    f"{row['requests_per_s']:,.0f}/s, p50 {row['p50_ms']:.1f} ms, "
                    f"p99 {row['p99_ms']:.1f} ms, errors {row['errors']}"
                )
            if args.oversized:
                result["oversized"] = oversized(port, server.pid, sessions)
                for case in result["oversized"]:
                    print(
                        f"{case['request']} ({case['body_mb']:.1f} MB): HTTP {case['status']} in "
                        f"{case['seconds']:.1f} s, server RSS {case['server_rss_before_mb']:.0f} -> "
                        f"peak {case['server_rss_peak_mb']:.0f} MB: {case['message']}"
                    )
    print(f"CPU: {result['cpu']}, {result['cores']} cores, {args.workers} server worker(s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
