"""Batch recommendations single-process against Ray with 1 and 2 actors, one run.

    python -m benchmarks.ray_bench --model MODEL_DIR --data PREPARED_DIR
        [--sessions 1000000] [--batch-size 4096] [--json OUT.json]

The test sessions of PREPARED_DIR, replicated under new session ids to `--sessions`, are
written once to a Parquet file; then the same recommendation (k 20, exact top-k) runs

    local, 1 thread    `recommend_file` (what `gru4rec recommend` runs) with torch on 1 thread
    ray, 1 actor       `recommend_on_ray` with one actor of 1 CPU
    local, 2 threads   the single process on 2 threads
    ray, 2 actors      two actors of 1 CPU each

each timed end to end (reading, grouping, scoring, writing; Ray's start-up included), and
prints sessions/s and the Ray / local ratio at the same core count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl


def replicated_sessions(data_dir: Path, n_sessions: int, path: Path) -> int:
    """Write the test split's events, copied under new session ids until `n_sessions`."""
    events = pl.read_parquet(data_dir / "test.parquet", columns=["session_id", "item_id", "time"])
    ids = events["session_id"].unique(maintain_order=True)
    copies = -(-n_sessions // len(ids))
    code = events.with_columns(pl.col("session_id").rank("dense").cast(pl.Int64) - 1)
    frames = [code.with_columns(pl.col("session_id") + copy * len(ids)) for copy in range(copies)]
    frame = pl.concat(frames).filter(pl.col("session_id") < n_sessions)
    frame.write_parquet(path)
    return int(frame["session_id"].n_unique())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory")
    parser.add_argument("--data", type=Path, required=True, help="its prepared data directory")
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions to score")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4096,
        help="sessions per bucket (Ray) and per scoring batch",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from gru4rec.jobs.batch_recommend import recommend_file
    from gru4rec.jobs.ray_recommend import RayPool, recommend_on_ray
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.serving.recommend import Recommender

    spec = resolve_spec("prepared")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gru4rec-ray-bench-") as folder:
        sessions = Path(folder) / "sessions.parquet"
        n = replicated_sessions(args.data, args.sessions, sessions)
        print(f"{n:,} sessions ({sessions.stat().st_size / 2**20:.0f} MiB of Parquet)", flush=True)
        for cores in (1, 2):
            torch.set_num_threads(cores)
            recommender = Recommender.from_path(args.model, device="cpu", index="none")
            started = time.perf_counter()
            recommend_file(
                recommender,
                sessions,
                spec,
                Path(folder) / "local.parquet",
                batch_size=args.batch_size,
            )
            results[f"local_{cores}"] = n / (time.perf_counter() - started)
            started = time.perf_counter()
            recommend_on_ray(
                str(args.model),
                sessions,
                spec,
                Path(folder) / f"ray{cores}",
                batch_size=args.batch_size,
                pool=RayPool(actors=cores),
            )
            results[f"ray_{cores}"] = n / (time.perf_counter() - started)
            print(
                f"{cores} core(s): local {results[f'local_{cores}']:,.0f} sessions/s, ray "
                f"{results[f'ray_{cores}']:,.0f} sessions/s, ray / local "
                f"{results[f'ray_{cores}'] / results[f'local_{cores}']:.2f}",
                flush=True,
            )
    results["sessions"] = n
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
