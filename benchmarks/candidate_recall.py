"""Candidate recall: the share of a split's next items that a ranker's candidate set holds.

    python -m benchmarks.candidate_recall --model MODEL_DIR --data PREPARED_DIR
        [--split test] [--n-gru 50 100 200] [--n-knn 50] [--n-popular 20]
        [--index none|flat|hnsw|ivf] [--json OUT.json]

The sources (`gru4rec.scoring.candidates`): the GRU4Rec model's top items (through the model's
saved FAISS index of `--index`, or exactly with none), the session's own items, V-SKNN's and
item-kNN's top items (fitted on the data's train split) and the most popular items. For
each `--n-gru`, prints each source's recall, the union's and its mean size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a GRU4Rec model directory")
    parser.add_argument("--data", type=Path, required=True, help="prepared data")
    parser.add_argument("--split", default="test", help="the split whose targets count")
    parser.add_argument("--n-gru", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--n-knn", type=int, default=50)
    parser.add_argument("--n-popular", type=int, default=20)
    parser.add_argument("--index", default="none", choices=["none", "flat", "hnsw", "ivf"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from gru4rec.network.data import load_items, load_split
    from gru4rec.scoring.baselines import fit_baseline
    from gru4rec.scoring.candidates import SOURCES, CandidateSets, CandidateSizes
    from gru4rec.scoring.candidates import candidate_recall as recall_of
    from gru4rec.serving.recommend import Recommender

    items = load_items(args.data)
    train, _ = load_split(args.data, "train", item_ids=items["item_id"])
    split, _ = load_split(args.data, args.split, item_ids=items["item_id"])
    recommender = Recommender.from_path(args.model, device="cpu", index=args.index)
    vsknn = fit_baseline("vsknn", train, items.height)
    iknn = fit_baseline("iknn", train, items.height)
    support = items.sort("item_idx")["support"].to_numpy()
    rows: list[dict[str, Any]] = []
    print(f"{args.split}: {split.n_sessions:,} sessions; sources {', '.join(SOURCES)}")
    for n_gru in args.n_gru:
        sizes = CandidateSizes(n_gru=n_gru, n_knn=args.n_knn, n_popular=args.n_popular)
        sets = CandidateSets(recommender.scorer, vsknn, iknn, support, sizes, recommender.index)  # type: ignore[arg-type]
        started = time.perf_counter()
        found = recall_of(sets, split)
        found.update({"n_gru": n_gru, "seconds": time.perf_counter() - started})
        rows.append(found)
        by_source = ", ".join(f"{s} {found[f'recall_{s}']:.4f}" for s in SOURCES)
        print(
            f"n_gru {n_gru:>4}: union recall {found['recall']:.4f} (mean size "
            f"{found['mean_size']:.0f}); {by_source}"
        )
    if args.json:
        args.json.write_text(json.dumps({"index": args.index, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
