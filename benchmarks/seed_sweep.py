"""Accuracy over seeds: train one configuration once per seed and report the spread.

    python -m benchmarks.seed_sweep DATA_DIR --preset rsc15 --seeds 1-12 [--set key=value]
        [--jobs 2] [--bar recall@20=0.68] [--json OUT.json]

GRU4Rec's training is chaotic: the same preset lands a few thousandths of Recall@20 apart
from one seed to the next (the reference's own runs too), so one run cannot tell whether a
change helped or whether a published figure is reached. This trains on `--train-split`,
evaluates `--test-split` with every seed (conservative ties), prints each seed's metrics,
their mean, standard deviation, min and max, and for each `--bar` how many seeds reach it.
Each run is single-threaded (the metrics do not depend on the thread count) and `--jobs`
of them run at a time, in separate processes. Nothing is tracked in MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from gru4rec.commands.options import parse_sets
from gru4rec.errors import Gru4RecError
from gru4rec.fileio import write_json
from gru4rec.jobs.train_evaluate import evaluate_split, train_model
from gru4rec.network.config import apply_overrides, get_preset

METRICS = ("recall@20", "mrr@20", "ndcg@20")


def parse_seeds(text: str) -> list[int]:
    """'1-12', '3', '1,5,9' or a mix ('1-3,7') -> the seeds in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"--seeds: {part!r} is not a seed or a range like 1-12") from None
        if last < first:
            raise ValueError(f"--seeds: the range {part!r} runs backwards")
        seeds += [seed for seed in range(first, last + 1) if seed not in seeds]
    return seeds


def parse_bar(text: str) -> tuple[str, float]:
    """'recall@20=0.68' -> ('recall@20', 0.68)."""
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise ValueError(
            f"--bar: expected METRIC=VALUE such as recall@20=0.68, got {text!r}"
        ) from None


def run_seed(job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one seed (in a worker process); returns its metrics."""
    overrides = {**job["overrides"], "seed": str(job["seed"])}
    config = apply_overrides(get_preset(job["preset"]), overrides)
    data_dir = Path(job["data_dir"])
    with tempfile.TemporaryDirectory(prefix="seed-sweep-") as out:
        model, items, fit = train_model(
            data_dir,
            config,
            Path(out) / "model",
            split=job["train_split"],
            device="cpu",
            num_threads=1,
        )
        metrics = evaluate_split(model, items, data_dir, split=job["test_split"])
    return {
        "seed": job["seed"],
        "train_s": fit.seconds,
        "n_events": metrics["n_events"],
        **{name: metrics[name] for name in METRICS},
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sd (0 for one seed), min and max of each metric over the seeds."""
    summary = {}
    for name in METRICS:
        values = [result[name] for result in results]
        summary[name] = {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return summary


def sweep(jobs: list[dict[str, Any]], processes: int) -> list[dict[str, Any]]:
    """Run the jobs, `processes` at a time; each seed is printed as its result comes in."""
    results = []
    with contextlib.ExitStack() as stack:
        finished: Iterator[dict[str, Any]] = map(run_seed, jobs)
        if processes > 1:  # spawn: fresh interpreters, not forks of a process that ran torch
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)
            finished = stack.enter_context(pool).map(run_seed, jobs)
        for result in finished:
            results.append(result)
            print(
                f"seed {result['seed']}: "
                + ", ".join(f"{name} {result[name]:.4f}" for name in METRICS),
                flush=True,
            )
    return results


def report(results: list[dict[str, Any]], bars: list[tuple[str, float]]) -> dict[str, Any]:
    summary = summarise(results)
    print(f"\n{'seed':>6}  " + "  ".join(f"{name:>9}" for name in METRICS) + "  train s")
    for result in results:
        print(
            f"{result['seed']:>6}  "
            + "  ".join(f"{result[name]:9.4f}" for name in METRICS)
            + f"  {result['train_s']:7.1f}"
        )
    for stat in ("mean", "sd", "min", "max"):
        print(f"{stat:>6}  " + "  ".join(f"{summary[name][stat]:9.4f}" for name in METRICS))
    reached = {}
    for name, value in bars:
        count = sum(result[name] >= value for result in results)
        reached[f"{name}>={value}"] = count
        print(
            f"{name} >= {value}: {count} of {len(results)} seeds (mean {summary[name]['mean']:.4f})"
        )
    return {"seeds": results, "summary": summary, "bars_reached": reached}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", type=Path, help="prepared data (`gru4rec prepare`)")
    parser.add_argument("--preset", default="rsc15", help="settings to start from")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed override (repeatable); not the seed",
    )
    parser.add_argument("--seeds", default="1-12", help="seeds: 1-12, 1,5,9 or a mix")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--train-split", default="train", help="split to train on")
    parser.add_argument("--test-split", default="test", help="split evaluated with each seed")
    parser.add_argument(
        "--bar",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="count the seeds reaching it, e.g. recall@20=0.68 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        bars = [parse_bar(text) for text in args.bar]
        overrides = parse_sets(args.overrides)
        if "seed" in overrides:
            raise ValueError("--set: the seeds come from --seeds, not --set seed=...")
        apply_overrides(get_preset(args.preset), overrides)  # fail before any training
    except (ValueError, Gru4RecError) as error:
        parser.error(str(error))
    unknown = [name for name, _ in bars if name not in METRICS]
    if unknown:
        parser.error(f"--bar: unknown metric {unknown[0]!r}; one of {', '.join(METRICS)}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    jobs = [
        {
            "seed": seed,
            "preset": args.preset,
            "overrides": overrides,
            "data_dir": str(args.data_dir),
            "train_split": args.train_split,
            "test_split": args.test_split,
        }
        for seed in seeds
    ]
    results = sweep(jobs, min(args.jobs, len(jobs)))
    output = {"preset": args.preset, "overrides": overrides, **report(results, bars)}
    if args.json:
        write_json(args.json, output)


if __name__ == "__main__":
    main()
