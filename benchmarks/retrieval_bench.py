"""Retrieval benchmarks: approximate indexes against exact search, and `recommend` throughput
against the machine's measured matrix-multiply rate, all measured in one run.

    python -m benchmarks.retrieval_bench --model MODEL_DIR [--data DATA_DIR] [--catalogue 1000000]

1. For the model's item vectors (queries: states of its test sessions) and for a generated
   catalogue (`--catalogue` items, clustered vectors with a popularity bias), build flat,
   HNSW and IVF indexes and print recall@k against exact search and the query speed-up.
2. For the model, serve its test sessions with exact top-k at several batch sizes and print
   sessions/s, the FLOPs of a session (GRU encoding + scoring all items), the achieved
   GFLOP/s and its fraction of the fp32 matmul rate measured at the scoring shape.
Medians of `--repeats` runs. The machine is shared and noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks.matmul import matmul_rate
from gru4rec.network.model import GRU4Rec
from gru4rec.scoring.neural import GRU4RecScorer, item_vectors, query_vectors
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.retrieval import IndexOptions, ItemIndex


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def approximate_indexes(
    name: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    repeats: int,
    options: dict[str, IndexOptions],
) -> list[dict[str, object]]:
    """Recall@k against exact search and speed-up of each index kind on one catalogue."""
    rows = []
    exact = ItemIndex.build(vectors, IndexOptions("flat"))
    _, truth = exact.search(queries, k)
    exact_seconds = median_seconds(lambda: exact.search(queries, k), repeats)
    for kind, option in options.items():
        index = exact if kind == "flat" else ItemIndex.build(vectors, option)
        _, found = index.search(queries, k)
        seconds = (
            exact_seconds
            if kind == "flat"
            else median_seconds(functools.partial(index.search, queries, k), repeats)
        )
        hits = np.mean(
            [len(set(t) & set(f)) / k for t, f in zip(truth.tolist(), found.tolist(), strict=True)]
        )
        rows.append(
            {
                "catalogue": name,
                "items": len(vectors),
                "dim": vectors.shape[1],
                "kind": kind,
                "build_s": round(index.meta["build_seconds"], 2),
                f"recall@{k}": round(float(hits), 4),
                "queries/s": round(len(queries) / seconds),
                "speed-up": round(exact_seconds / seconds, 2),
            }
        )
    return rows


def synthetic_catalogue(
    n_items: int, dim: int, n_queries: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item vectors with a popularity bias, and queries near random clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1024, dim)).astype(np.float32)
    vectors = np.empty((n_items, dim + 1), dtype=np.float32)
    for start in range(0, n_items, 100_000):  # in chunks: bounded temporary memory
        stop = min(start + 100_000, n_items)
        cluster = rng.integers(0, len(centres), stop - start)
        vectors[start:stop, :dim] = centres[cluster] + 0.5 * rng.normal(size=(stop - start, dim))
    vectors[:, dim] = np.log1p(rng.zipf(1.3, n_items).clip(max=10_000)).astype(np.float32)
    queries = centres[rng.integers(0, len(centres), n_queries)] + 0.5 * rng.normal(
        size=(n_queries, dim)
    )
    return vectors, np.hstack([queries, np.ones((n_queries, 1))]).astype(np.float32)


def gru_model(recommender: Recommender) -> GRU4Rec:
    """The GRU4Rec network a recommender serves (this benchmark measures GRU4Rec only)."""
    if not isinstance(recommender.scorer, GRU4RecScorer):
        raise SystemExit(f"--model must be a GRU4Rec model, not {recommender.scorer.family}")
    return recommender.scorer.model


def session_flops(recommender: Recommender, mean_length: float) -> float:
    """FLOPs to encode a session of `mean_length` items and score every item for it."""
    gru_flops = 0.0
    model = gru_model(recommender)
    for layer in model.gru_layers:
        hidden = layer.hidden_size
        inputs = 0 if layer.input_size is None else layer.input_size  # one-hot input: a gather
        gru_flops += 2 * 3 * hidden * (inputs + hidden)
    dim = model.item_weight.shape[1] + 1
    return gru_flops * mean_length + 2.0 * dim * recommender.n_items


def throughput(
    recommender: Recommender,
    sessions: list[list[object]],
    k: int,
    batch_sizes: list[int],
    repeats: int,
) -> list[dict[str, object]]:
    """Sessions/s of exact top-k at each batch size, against the fp32 matmul rate."""
    mapped = [s for s in recommender.to_indices(sessions)[0] if s]
    flops = session_flops(recommender, float(np.mean([len(s) for s in mapped])))
    rows = []
    for batch_size in batch_sizes:
        batch = (mapped * (1 + batch_size // len(mapped)))[:batch_size]
        original = [[recommender.item_ids[i] for i in s] for s in batch]
        serve = functools.partial(recommender.recommend, original, k, batch_size=batch_size)
        seconds = median_seconds(serve, repeats)
        rate = matmul_rate(
            batch_size,
            gru_model(recommender).item_weight.shape[1] + 1,
            recommender.n_items,
            repeats=3,
        )
        achieved = flops * batch_size / seconds / 1e9
        rows.append(
            {
                "index": "none (torch)"
                if recommender.index is None
                else recommender.index.options.kind,
                "batch": batch_size,
                "sessions/s": round(batch_size / seconds),
                "MFLOP/session": round(flops / 1e6, 1),
                "GFLOP/s": round(achieved, 1),
                "matmul GFLOP/s": round(rate, 1),
                "fraction": round(achieved / rate, 3),
            }
        )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    header = list(rows[0])
    widths = [max(len(str(h)), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[h]).rjust(w) for h, w in zip(header, widths, strict=True)))
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory")
    parser.add_argument(
        "--data",
        type=Path,
        help="prepared data whose test sessions are the queries "
        "(default: the model's training data directory)",
    )
    parser.add_argument(
        "--catalogue",
        type=int,
        default=1_000_000,
        help="items of the generated catalogue (0: skip)",
    )
    parser.add_argument(
        "--dim", type=int, default=128, help="vector width of the generated catalogue"
    )
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512, 4096])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    recommender = Recommender.from_path(args.model, device="cpu", index="none")
    data = args.data or Path(
        json.loads((args.model / "config.json").read_text())["extra"]["data_dir"]
    )
    test = pl.read_parquet(data / "test.parquet")
    sessions = test.group_by("session_id", maintain_order=True).agg("item_id")["item_id"].to_list()
    queries_sessions = [s for s in recommender.to_indices(sessions[: args.queries])[0] if s]
    queries = query_vectors(recommender.encode_indices(queries_sessions))
    vectors = item_vectors(gru_model(recommender))
    model_options = {
        "flat": IndexOptions("flat"),
        "hnsw": IndexOptions("hnsw", hnsw_m=32, ef_construction=200, ef_search=128),
        "ivf": IndexOptions(
            "ivf", nlist=0, nprobe=32
        ),  # nlist 0: about 4 sqrt(n), >= 39 points each
    }
    print(
        f"threads: torch {torch.get_num_threads()}; catalogues: model {len(vectors):,} items, generated {args.catalogue:,}\n"
    )
    results = {
        "approximate": approximate_indexes(
            "model", vectors, queries, args.k, args.repeats, model_options
        )
    }
    if args.catalogue:
        big_vectors, big_queries = synthetic_catalogue(args.catalogue, args.dim, args.queries)
        big_options = {
            "flat": IndexOptions("flat"),
            "hnsw": IndexOptions("hnsw", hnsw_m=16, ef_construction=64, ef_search=128),
            "ivf": IndexOptions("ivf", nlist=4096, nprobe=32),
        }
        results["approximate"] += approximate_indexes(
            "generated", big_vectors, big_queries, args.k, args.repeats, big_options
        )
    print("approximate indexes against exact search (speed-up = exact time / index time):")
    print_table(results["approximate"])

    results["throughput"] = throughput(
        recommender, sessions, args.k, args.batch_sizes, args.repeats
    )
    exact = Recommender.from_path(args.model, device="cpu", index="flat")
    results["throughput"] += throughput(exact, sessions, args.k, args.batch_sizes, args.repeats)
    print(
        "recommend throughput, exact top-k (fraction = achieved / measured fp32 matmul rate at the scoring shape):"
    )
    print_table(results["throughput"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
