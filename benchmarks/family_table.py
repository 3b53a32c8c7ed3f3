"""Every candidate family of `select`, on validation and on test, over seeds: one table.

    python -m benchmarks.family_table DATA [--preset rsc15] [--seeds 1-3] [--set KEY=VALUE]
        [--candidates spop,sknn,vsknn,gru4rec,hybrid,ranker] [--threads N] [--json OUT.json]
    python -m benchmarks.family_table --from-json seed1.json --from-json seed2.json ...

Per seed, exactly what `gru4rec select DATA --set seed=N` does (`gru4rec.jobs.selection`):
each candidate is fitted on train_tr and scored on valid (the ranker out of fold), the one
`select` would choose is the best on valid; then, for the table, EVERY candidate is refitted
on train and scored once on test (conservative ties), overall and on repeat / new targets.
Prints each family's mean (sd) over the seeds, which family `select` chose per seed, and
the seconds: each candidate's own work and the whole selection with and without the ranker
(the GRU4Rec trainings, baselines and weight search are shared, counted once), and `select`'s
whole time (the validation stage, then the chosen candidate refitted on train) with and
without the ranker among the candidates.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.seed_sweep import parse_seeds

HEADLINE = ("recall@20", "mrr@20")
GROUPS = ("", "repeat_", "new_")


def run_seed(
    data: Path,
    preset: str,
    seed: int,
    candidates: str,
    threads: int | None,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    from gru4rec.jobs.selection import Fitting, parse_candidates
    from gru4rec.jobs.train_evaluate import evaluate_split
    from gru4rec.network.data import load_items
    from gru4rec.options import Compute
    from gru4rec.serving import families

    items = load_items(data)
    chosen_list = parse_candidates(candidates, preset)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="family-table-") as scratch:
        fitting = Fitting(
            data,
            items,
            Path(scratch),
            settings=overrides,
            compute=Compute("cpu", threads, seed),
            callbacks=None,
        )
        started = time.perf_counter()
        for candidate in chosen_list:
            t = time.perf_counter()
            on_valid = families.get(candidate.family).score_on_valid(candidate, fitting)
            rows[candidate.name] = {"valid": on_valid, "valid_wall": time.perf_counter() - t}
        selection_seconds = time.perf_counter() - started
        paid = fitting.made()  # spent in the valid stage: `select` reuses them when it refits
        for candidate in chosen_list:
            family = families.get(candidate.family)
            t = time.perf_counter()
            refit = functools.partial(
                family.fit, candidate, fitting, "train", rows[candidate.name]["valid"]
            )
            final, charged = fitting.charged(refit, paid=paid)
            rows[candidate.name]["refit_wall"] = time.perf_counter() - t
            # What `select` spends refitting this candidate when it is chosen: every fit it
            # uses, also those an earlier candidate's refit made here, but not those of the
            # valid stage (the ranker's learned model), already in `selection_seconds`.
            rows[candidate.name]["refit_seconds"] = charged
            rows[candidate.name]["test"] = evaluate_split(
                final, items, data, split="test", **fitting.evaluation
            )
    chosen = max(chosen_list, key=lambda c: rows[c.name]["valid"]["mrr@20"]).name
    return {"seed": seed, "rows": rows, "chosen": chosen, "selection_seconds": selection_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data", type=Path, nargs="?", help="prepared data with train_tr/valid/train/test"
    )
    parser.add_argument("--preset", default="rsc15")
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--candidates", default="spop,sknn,vsknn,gru4rec,hybrid,ranker")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a GRU4Rec override for every seed (repeatable); not the seed",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--from-json",
        type=Path,
        action="append",
        default=[],
        metavar="RUNS.json",
        help="print the table of runs saved with --json (repeatable: seeds run in parallel "
        "processes) instead of running",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        runs = [run for path in args.from_json for run in json.loads(path.read_text())["runs"]]
        print_table(sorted(runs, key=lambda run: run["seed"]))
        return 0

    if args.data is None:
        parser.error("DATA is needed unless --from-json is given")
    from gru4rec.commands.options import parse_sets
    from gru4rec.fileio import write_json

    overrides = parse_sets(args.sets)

    runs = []
    for seed in parse_seeds(args.seeds):
        run = run_seed(args.data, args.preset, seed, args.candidates, args.threads, overrides)
        runs.append(run)
        summary = ", ".join(
            f"{name} {row['test']['recall@20']:.4f}/{row['test']['mrr@20']:.4f}"
            for name, row in run["rows"].items()
        )
        print(f"seed {seed}: select chooses {run['chosen']}; test {summary}", flush=True)
        if args.json:
            write_json(args.json, {"runs": runs})
    print_table(runs)
    return 0


def print_table(runs: list[dict[str, Any]]) -> None:
    """The families' mean (sd) over the runs, the choices, and the selection's seconds."""
    names = list(runs[0]["rows"])
    print("\n| family | valid R@20 / MRR@20 | test R@20 / MRR@20, mean (sd) | repeat | new |")
    print("|---|---|---|---|---|")
    for name in names:
        cells = []
        for split, groups in (("valid", ("",)), ("test", GROUPS)):
            for group in groups:
                values = [
                    [run["rows"][name][split][f"{group}{m}"] for run in runs] for m in HEADLINE
                ]
                cells.append(
                    " / ".join(_mean_sd(v, sd=split == "test" and not group) for v in values)
                )
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("chosen per seed:", ", ".join(run["chosen"] for run in runs))
    for run in runs:
        rows = run["rows"]
        ranker = sum(row["valid_wall"] for name, row in rows.items() if name.startswith("ranker"))
        total = run["selection_seconds"]
        print(
            f"seed {run['seed']}: selection on valid {total:.0f} s, of which the ranker's own "
            f"{ranker:.0f} s (without it: {total - ranker:.0f} s; ratio "
            f"{total / max(total - ranker, 1e-9):.2f}x)"
        )
        others = [name for name in rows if not name.startswith("ranker")]
        if len(others) < len(rows) and others and "refit_seconds" in rows[run["chosen"]]:
            # `select` = the valid stage + refitting the chosen candidate on train.
            without = max(others, key=lambda name: rows[name]["valid"]["mrr@20"])
            with_ranker = total + rows[run["chosen"]]["refit_seconds"]
            plain = total - ranker + rows[without]["refit_seconds"]
            print(
                f"seed {run['seed']}: select with the ranker {with_ranker:.0f} s (chooses "
                f"{run['chosen']}), without it {plain:.0f} s (chooses {without}): "
                f"{with_ranker / max(plain, 1e-9):.2f}x"
            )


def _mean_sd(values: list[float], *, sd: bool) -> str:
    mean = statistics.fmean(values)
    if sd and len(values) > 1:
        return f"{mean:.4f} ({statistics.stdev(values):.4f})"
    return f"{mean:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
