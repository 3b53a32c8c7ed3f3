"""Replay a time-ordered log night by night: warm start against training from scratch.

    python -m benchmarks.replay_bench [--first-night 1] [--warm-epochs 3] [--window-days 0]
        [--seeds 1,2,3] [--set key=value] [--json OUT.json]

The log (YOOCHOOSE 100k, from ../shared/data) is cut by session start day. On night n the
job knows days 0..n: the events of the sessions that start up to the end of day n+1 are
prepared with the real `prepare` (test = the sessions of day n+1, no valid split), and

    scratch   GRU4Rec with the preset (its n_epochs) on all of train, from new weights
    warm      from the previous night's warm model (the first night: that night's scratch
              model) and its optimiser state, `--warm-epochs` on train's last
              `--window-days` days (0: all of train)
    fresh     (`--also-fresh`) the same with the optimiser started afresh
    stale     the previous night's warm model, not retrained, on tonight's item map (new
              items keep their initial rows): what skipping a night costs

are scored on day n+1 (full ranking, conservative ties). Prints Recall@20 / MRR@20 and
training seconds per night and seed, then means over seeds and the total time of each
arm. One training thread, so that the times compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.seed_sweep import parse_seeds
from benchmarks.train_bench import SHARED_DATA

DAY = 86400.0
ARMS = ("scratch", "warm", "fresh", "stale")
LOG_FILES = ("yoochoose-clicks-100k_train_full.txt.gz", "yoochoose-clicks-100k_test.txt.gz")


def read_log() -> pl.DataFrame:
    """The YOOCHOOSE 100k events (SessionId, ItemId, Time) with each session's start day."""
    folder = SHARED_DATA / "yoochoose_100k"
    missing = [name for name in LOG_FILES if not (folder / name).exists()]
    if missing:
        raise SystemExit(f"replay_bench: {', '.join(missing)} missing in {folder}.")
    events = pl.concat([pl.read_csv(folder / name, separator="\t") for name in LOG_FILES])
    day = (pl.col("Time").min().over("SessionId") // DAY).cast(pl.Int64)
    return events.with_columns(day.alias("day"))


def prepare_night(events: pl.DataFrame, day: int, folder: Path) -> Path:
    """A prepared directory: train = sessions starting before `day` (days since 1970),
    test = that day's."""
    from gru4rec.pipelines.options import PrepareOptions
    from gru4rec.pipelines.prepare import prepare
    from gru4rec.pipelines.sources import resolve_spec

    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "clicks.tsv"
    events.filter(pl.col("day") <= day).drop("day").write_csv(log, separator="\t")
    # As the published split was prepared (consecutive repeats kept), so that the last
    # night is the usual YOOCHOOSE 100k task; no valid split.
    options = PrepareOptions(test_start=float(day * DAY), valid_days=0, remove_repeats=False)
    prepare([log], folder / "data", resolve_spec("gru4rec-tsv"), options)
    return folder / "data"


def run_seed(
    events: pl.DataFrame,
    first: int,
    nights: list[int],
    seed: int,
    args: argparse.Namespace,
    work: Path,
) -> list[dict[str, Any]]:
    """One seed's nights (numbered from the log's first day `first`); prints each."""
    from gru4rec.jobs.train_evaluate import WarmStartSource, evaluate_split, train_model
    from gru4rec.network.config import apply_overrides, get_preset
    from gru4rec.network.warm_start import warm_start_model

    config = apply_overrides(get_preset(args.preset), {**args.overrides, "seed": str(seed)})
    warm_config = apply_overrides(config, {"n_epochs": str(args.warm_epochs), **args.warm_set})
    rows = []
    previous: WarmStartSource | None = None
    for night in nights:
        data = prepare_night(events, first + night + 1, work / f"night{night}")

        def scored(model: Any, items: pl.DataFrame, data: Path = data) -> dict[str, float]:
            metrics = evaluate_split(model, items, data, cutoffs=(20,))
            return {"recall@20": metrics["recall@20"], "mrr@20": metrics["mrr@20"]}

        row: dict[str, Any] = {"seed": seed, "night": night, "test_day": night + 1}
        model, items, fit = train_model(
            data, config, work / f"scratch{night}", device="cpu", num_threads=1
        )
        row["scratch"] = {**scored(model, items), "train_s": fit.seconds}
        if previous is None:
            row["warm"] = dict(row["scratch"])
        else:
            # Not retrained, but on tonight's item map: the same test events as the others.
            stale, _ = warm_start_model(previous.model, previous.items, items, warm_config)
            row["stale"] = {**scored(stale.eval(), items), "train_s": 0.0}
            if args.also_fresh:
                fresh = dataclasses.replace(previous, optimizer=None)
                trained, _, fit_fresh = train_model(
                    data,
                    warm_config,
                    work / f"fresh{night}",
                    device="cpu",
                    num_threads=1,
                    warm_start=fresh,
                    window_days=args.window_days,
                )
                row["fresh"] = {**scored(trained, items), "train_s": fit_fresh.seconds}
            model, items, fit = train_model(
                data,
                warm_config,
                work / f"warm{night}",
                device="cpu",
                num_threads=1,
                warm_start=previous,
                window_days=args.window_days,
            )
            row["warm"] = {**scored(model, items), "train_s": fit.seconds}
        previous = WarmStartSource(
            f"night {night}", model, warm_config, items, optimizer=fit.optimizer_state
        )
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict[str, Any]) -> str:
    parts = [f"seed {row['seed']} night {row['night']} (test day {row['test_day']})"]
    for arm in ARMS:
        if arm in row:
            r = row[arm]
            parts.append(f"{arm} {r['recall@20']:.4f} / {r['mrr@20']:.4f} in {r['train_s']:.1f} s")
    return "; ".join(parts)


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Per night and arm: mean over seeds; then each arm's total training time."""
    lines = ["night  arm      Recall@20  MRR@20   train s (mean over seeds)"]
    nights = sorted({row["night"] for row in rows})
    totals: dict[str, list[float]] = {}
    for night in nights:
        for arm in ARMS:
            runs = [row[arm] for row in rows if row["night"] == night and arm in row]
            if not runs:
                continue
            mean = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
            totals.setdefault(arm, []).append(mean["train_s"])
            lines.append(
                f"{night:>5}  {arm:<7}  {mean['recall@20']:9.4f}  {mean['mrr@20']:.4f}"
                f"  {mean['train_s']:8.1f}"
            )
    for arm, seconds in totals.items():
        lines.append(f"total training time, {arm}: {sum(seconds):.1f} s")
    if totals.get("scratch") and totals.get("warm"):
        lines.append(f"warm / scratch time: {sum(totals['warm']) / sum(totals['scratch']):.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="rsc15", help="settings of every model")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every model",
    )
    parser.add_argument(
        "--warm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the warm starts only (e.g. learning_rate)",
    )
    parser.add_argument(
        "--first-night",
        type=int,
        default=1,
        help="the first night: days 0..N known (day 0 is the log's first)",
    )
    parser.add_argument("--warm-epochs", type=int, default=3, help="epochs of a warm start")
    parser.add_argument(
        "--window-days",
        type=float,
        default=0.0,
        help="warm starts train on train's last N days (0: all of train)",
    )
    parser.add_argument("--seeds", default="1", help="seeds: 1-3, 1,5,9")
    parser.add_argument(
        "--also-fresh",
        action="store_true",
        help="also warm-start with a fresh optimiser (the 'fresh' arm)",
    )
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args(argv)

    def pairs(texts: list[str], option: str) -> dict[str, str]:
        if any("=" not in text for text in texts):
            parser.error(f"{option} takes key=value")
        return dict(text.split("=", 1) for text in texts)

    args.overrides = pairs(args.sets, "--set")
    args.warm_set = pairs(args.warm_set, "--warm-set")
    args.window_days = args.window_days or None
    events = read_log()
    first, last = events["day"].min(), events["day"].max()
    assert isinstance(first, int) and isinstance(last, int)
    # A night needs a next day with a test worth the name (the log's last day has 1 session).
    days = events.group_by("day").agg(pl.col("SessionId").n_unique()).sort("day")
    full = [d - first for d, n in days.iter_rows() if n >= 100]
    nights = [d - 1 for d in full if d - 1 >= args.first_night]
    print(
        f"log: days {first}..{last} (day 0 = {first}); nights {nights}; "
        f"warm: {args.warm_epochs} epochs on the last {args.window_days or 'all'} days"
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gru4rec-replay-") as work:
        for seed in parse_seeds(args.seeds):
            rows += run_seed(events, first, nights, seed, args, Path(work) / f"seed{seed}")
    print("\n".join(summarise(rows)))
    print(f"wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
