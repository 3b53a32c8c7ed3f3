"""The ranker on a catalogue of a million items: candidates through HNSW against exact work.

    python -m benchmarks.ranker_scale [--items 1000000] [--sessions 400000] [--queries 2000]
        [--epochs 1] [--threads N] [--json OUT.json]

Draws a synthetic log over `--items` items (`gru4rec.pipelines.synthetic`; every item in
the catalogue, seen or not), splits its sessions in time order into train (80%), valid
(10%) and the query sessions (10%), trains GRU4Rec on train (the rsc15 preset, `--epochs`),
fits the kNN baselines, searches the hybrid's weights and learns the ranker on valid as
`select` does. Then, in the same run, serves the query sessions through `Recommender`
(top 20) four ways and prints sessions/s and how many of each top 20 agree (the share of
identical items):

    ranker, candidates from an HNSW index    what `recommend --index hnsw` serves
    ranker, exact candidates                 every item scored by GRU4Rec for its top N
    hybrid, exact                            every item scored (no index can serve it)
    GRU4Rec, HNSW                            the plain model through the same index
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=400_000)
    parser.add_argument("--queries", type=int, default=2000, help="query sessions served")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--weights",
        metavar="REPEAT,DECAY,KNN",
        help="the hybrid's weights (default: searched on valid, as select does: one pass "
        "scoring every item for every validation prediction, then some 230 weightings)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="sessions scored together (every family scores (batch, items) matrices)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import polars as pl
    import torch

    from gru4rec.network.config import apply_overrides, get_preset
    from gru4rec.network.data import SessionData
    from gru4rec.network.families import build_network
    from gru4rec.network.train import fit
    from gru4rec.pipelines.synthetic import ITEM_ID_BASE, SyntheticLog, generate_clicks
    from gru4rec.scoring.baselines import fit_baseline
    from gru4rec.scoring.hybrid import HybridScorer, MixtureWeights, choose_weights
    from gru4rec.scoring.neural import GRU4RecScorer
    from gru4rec.scoring.ranker import RankerParts, RankerScorer, fit_ranker, ranker_table
    from gru4rec.serving.families.hybrid import HYBRID_KNN
    from gru4rec.serving.families.ranker import RANKER_BASELINES
    from gru4rec.serving.recommend import Recommender
    from gru4rec.serving.retrieval import IndexOptions, ItemIndex

    if args.threads:
        torch.set_num_threads(args.threads)
    figures: dict[str, Any] = {"items": args.items, "threads": torch.get_num_threads()}
    started = time.perf_counter()
    spec = SyntheticLog(n_sessions=args.sessions, n_items=args.items, days=30, seed=7)
    clicks = generate_clicks(spec)
    lengths = clicks.group_by("session_id", maintain_order=True).len()["len"].to_numpy()
    lengths = lengths.astype(np.int64)
    keep = np.repeat(lengths >= 2, lengths)  # one-event sessions predict nothing
    item_idx = (clicks["item_id"].to_numpy() - ITEM_ID_BASE)[keep]
    lengths = lengths[lengths >= 2]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = len(lengths)
    cuts = [0, int(n * 0.8), int(n * 0.9), n]

    def part(first: int, last: int) -> SessionData:
        return SessionData(
            item_idx[offsets[first] : offsets[last]], offsets[first : last + 1] - offsets[first]
        )

    train, valid, queries = (part(cuts[i], cuts[i + 1]) for i in range(3))
    figures["events"] = {"train": len(train.item_idx), "valid": len(valid.item_idx)}
    print(f"log: {n:,} sessions, {len(item_idx):,} events, {args.items:,} items")

    config = apply_overrides(get_preset("rsc15"), {"n_epochs": str(args.epochs)})
    model = build_network(args.items, config)
    support = np.bincount(train.item_idx, minlength=args.items)
    t = time.perf_counter()
    fit(model, train, config, item_support=support)
    figures["train_seconds"] = time.perf_counter() - t
    gru = GRU4RecScorer(model.eval(), config)
    baselines = {name: fit_baseline(name, train, args.items) for name in RANKER_BASELINES}
    hybrid = HybridScorer(gru, MixtureWeights(), baselines[HYBRID_KNN])
    t = time.perf_counter()
    if args.weights:
        repeat, decay, knn = (float(x) for x in args.weights.split(","))
        weights = MixtureWeights(repeat=repeat, decay=decay, knn=knn)
        hybrid.weights = weights
    else:
        weights = choose_weights(hybrid, valid, batch_size=args.batch_size).best
    figures["weights"] = weights.to_dict()
    parts = RankerParts.fit(gru, baselines, train, weights)
    table = ranker_table(parts, valid, batch_size=args.batch_size)
    learned = fit_ranker(table, n_items=args.items)
    figures["ranker_seconds"] = time.perf_counter() - t
    figures["valid_out_of_fold"] = {k: learned.metrics[k] for k in ("recall@20", "mrr@20")}
    print(
        f"trained in {time.perf_counter() - started:.0f} s; ranker {figures['valid_out_of_fold']}"
    )

    t = time.perf_counter()
    hnsw = ItemIndex.build(gru.item_vectors(), IndexOptions("hnsw"))
    figures["index_seconds"] = time.perf_counter() - t
    ranker = RankerScorer(parts, learned.booster)
    items = pl.DataFrame({"item_id": np.arange(args.items), "item_idx": np.arange(args.items)})
    sessions = [
        queries.item_idx[queries.session_offsets[i] : queries.session_offsets[i + 1]].tolist()
        for i in range(min(args.queries, queries.n_sessions))
    ]
    ways = {
        "ranker_hnsw": Recommender(ranker, items, hnsw),
        "ranker_exact": Recommender(RankerScorer(parts, learned.booster), items),
        "hybrid_exact": Recommender(hybrid, items),
        "gru4rec_hnsw": Recommender(gru, items, hnsw),
    }
    tops: dict[str, np.ndarray] = {}
    for name, recommender in ways.items():
        recommender.recommend(sessions[:8], k=20)  # warm up
        t = time.perf_counter()
        table_out, _ = recommender.recommend(sessions, k=20, batch_size=args.batch_size)
        seconds = time.perf_counter() - t
        tops[name] = _top_lists(table_out, len(sessions))
        figures[name] = {"sessions_per_s": len(sessions) / seconds, "seconds": seconds}
        print(f"{name:>13}: {len(sessions) / seconds:8.1f} sessions/s")
    for a, b in [
        ("ranker_hnsw", "ranker_exact"),
        ("ranker_hnsw", "hybrid_exact"),
        ("ranker_exact", "hybrid_exact"),
    ]:
        agreement = _agreement(tops[a], tops[b])
        figures[f"agreement_{a}_{b}"] = agreement
        print(f"top-20 agreement, {a} vs {b}: {agreement:.4f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _top_lists(table: Any, n_sessions: int) -> np.ndarray:
    out = np.full((n_sessions, 20), -1, dtype=np.int64)
    for session, rank, item in table.select("session", "rank", "item_id").iter_rows():
        out[session, rank - 1] = item
    return out


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The mean share of a top-20 list's items also in the other list."""
    shares = [len(set(x[x >= 0]) & set(y[y >= 0])) / 20 for x, y in zip(a, b, strict=True)]
    return float(np.mean(shares))


if __name__ == "__main__":
    raise SystemExit(main())
