"""How much a session's recommendations move with the batch, the threads and the engine.

    python -m benchmarks.score_identity --model MODEL_DIR --data PREPARED_DIR [--ray] [--k 20]

Scores the test split's sessions in one process with batches of 1 (one thread: the
baseline), 512 and 4,096 and 1 or 2 threads, and with `--ray` through `recommend --engine
ray`; prints, against the baseline, the share of identical (session, rank) items and the
largest score difference, absolute and relative.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch


def compare(base: pl.DataFrame, other: pl.DataFrame) -> dict[str, float]:
    joined = base.join(other, on=["session", "rank"], suffix="_other")
    diff = (joined["score"] - joined["score_other"]).abs().to_numpy()
    scale = np.maximum(np.abs(joined["score"].to_numpy()), 1e-6)
    return {
        "identical_items": float((joined["item_id"] == joined["item_id_other"]).to_numpy().mean()),
        "max_abs": float(diff.max()),
        "max_rel": float((diff / scale).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory")
    parser.add_argument("--data", type=Path, required=True, help="its prepared data directory")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--ray", action="store_true", help="also through Ray (gru4rec[ray])")
    args = parser.parse_args(argv)

    from gru4rec.jobs.batch_recommend import recommend_file
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.serving.recommend import Recommender

    recommender = Recommender.from_path(args.model, device="cpu", index="none")
    test = pl.read_parquet(args.data / "test.parquet").sort("session_id", "time")
    sessions = test.group_by("session_id", maintain_order=True).agg("item_id")
    lists = sessions["item_id"].to_list()

    def scored(batch_size: int, threads: int) -> pl.DataFrame:
        torch.set_num_threads(threads)
        return recommender.recommend(lists, args.k, batch_size=batch_size)[0]

    kept_threads = torch.get_num_threads()  # restored: a caller's process keeps its own
    try:
        base = scored(1, 1)
        longest = max(len(s) for s in lists)
        print(
            f"{len(lists):,} sessions (longest {longest} events), k {args.k}; "
            "against batch 1, 1 thread:"
        )
        for batch_size, threads in ((512, 1), (1, 2), (512, 2), (4096, 2)):
            row = compare(base, scored(batch_size, threads))
            print(f"  batch {batch_size:>5}, {threads} threads: {row}")
    finally:
        torch.set_num_threads(kept_threads)
    if args.ray:
        from gru4rec.jobs.ray_recommend import recommend_on_ray

        ids = sessions.with_row_index("session").select("session", "session_id")
        with tempfile.TemporaryDirectory() as folder:
            spec, source = resolve_spec("prepared"), args.data / "test.parquet"
            recommend_file(recommender, source, spec, Path(folder) / "one.parquet", k=args.k)
            recommend_on_ray(str(args.model), source, spec, Path(folder) / "ray", k=args.k)
            one, ray = (
                pl.read_parquet(path).join(ids, on="session_id").drop("session_id")
                for path in (Path(folder) / "one.parquet", Path(folder) / "ray")
            )
        print(f"  recommend --engine local: {compare(base, one)}")
        print(f"  recommend --engine ray:   {compare(base, ray)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
