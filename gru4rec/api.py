"""The Python API: from a click log to recommendations, the same functions the CLI runs.

    import gru4rec

    gru4rec.prepare("clicks.csv", "data", format="generic", session_col="session",
                    item_col="item", time_col="ts")
    gru4rec.select("data", "model")          # or: gru4rec.train("data", "model")
    model = gru4rec.load("model")             # or an MLflow URI: "models:/shop@champion"
    recs = model.recommend([["a", "b"], ["c"]], k=20)  # session, rank, item_id, score

Each function is also a command: `gru4rec prepare`, `select`, `train`, `recommend`, with
the same names for the same options; the shared ones travel as objects of `gru4rec.options`
(`Compute`: device, threads, seed; `Tracking`: MLflow; `Evaluation`: splits, cutoffs, ties,
metric). Nothing is tracked in MLflow unless asked (`Tracking(track=True)`); the commands
track by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gru4rec.errors import ConfigError
from gru4rec.network.config import override_text
from gru4rec.options import Compute, Evaluation, Tracking

if TYPE_CHECKING:
    from gru4rec.jobs.selection import SelectionResult
    from gru4rec.jobs.tracked_runs import TrainRun
    from gru4rec.network.train import Callback
    from gru4rec.serving.recommend import Recommender

# Each function imports what it runs: preparing a log loads Polars, not torch or MLflow.


def prepare(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    format: str = "gru4rec-tsv",
    overwrite: bool = False,
    buckets: int | None = None,
    report: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Clean and split a click log into a prepared-data directory `out`; returns its manifest.

    inputs: one log (a file, a directory of parts or a glob) or two files of a published
        split (train, test).
    format: a named layout (`gru4rec datasets` lists the public ones) or "generic".
    options: the log's columns (session_col, item_col, time_col, time_unit, user_col,
        event_col, event_filter, order_col, split_col, separator) and the steps
        (idle_gap, min_session_length, min_item_support, test_days, test_start,
        valid_days, valid_fraction, remove_repeats, apply_filter), as `gru4rec prepare`.
    """
    from gru4rec.pipelines.options import PrepareOptions
    from gru4rec.pipelines.prepare import prepare as prepare_log
    from gru4rec.pipelines.sources import SourceSpec, resolve_spec

    columns = {field.name for field in dataclasses.fields(SourceSpec)} - {"test_days"}
    steps_known = {field.name for field in dataclasses.fields(PrepareOptions)}
    unknown = set(options) - columns - steps_known
    if unknown:
        raise ConfigError(
            f"prepare: unknown option(s) {', '.join(sorted(unknown))}; the columns are "
            f"{', '.join(sorted(columns))} and the steps {', '.join(sorted(steps_known))}."
        )
    spec = resolve_spec(format, **{k: v for k, v in options.items() if k in columns})
    steps = PrepareOptions(**{k: v for k, v in options.items() if k in steps_known})
    paths = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    return prepare_log(
        paths,
        Path(out),
        spec,
        steps,
        format_name=format,
        overwrite=overwrite,
        buckets=buckets,
        report=report,
    )


def train(
    data: str | Path,
    out: str | Path,
    *,
    model: str = "gru4rec",
    preset: str = "rsc15",
    settings: Mapping[str, Any] | None = None,
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    tracking: Tracking = Tracking(),
    warm_start: str | Path | None = None,
    keep_missing_items: bool = False,
    window_days: float | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainRun:
    """Train a model family (GRU4Rec by default) on prepared data, save it to `out` and
    score it on the test split.

    model: a family of `gru4rec.serving.families` (gru4rec, repeat, hybrid, ranker or a
        baseline). settings: GRU4Rec settings over the preset's, e.g. {"n_epochs": 5}.
    evaluation: the splits (train, test, per-epoch valid), cutoffs and ties.
    compute: device, threads, seed. tracking: MLflow (nothing is logged unless `track`).
    warm_start: a GRU4Rec model (directory or MLflow URI) to continue from;
        keep_missing_items: keep its items the data no longer has.
    window_days: train on the sessions of the training split's last N days only.
    Returns the model (`scorer`), its item map and test metrics (`metrics`).
    """
    from gru4rec.jobs.tracked_runs import train_run
    from gru4rec.jobs.train_evaluate import WarmStart

    if keep_missing_items and warm_start is None:
        raise ConfigError("--keep-missing-items goes with --warm-start (it names the old items).")
    return train_run(
        Path(data),
        Path(out),
        model=model,
        preset=preset,
        settings=_settings(settings),
        evaluation=evaluation,
        compute=compute,
        tracking=tracking,
        warm_start=None if warm_start is None else WarmStart(str(warm_start), keep_missing_items),
        window_days=window_days,
        callbacks=callbacks,
    )


def select(
    data: str | Path,
    out: str | Path,
    *,
    candidates: str | Sequence[str] | None = None,
    preset: str = "rsc15",
    settings: Mapping[str, Any] | None = None,
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    tracking: Tracking = Tracking(experiment="gru4rec-select"),
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> SelectionResult:
    """Fit every candidate family on train_tr, choose the best on valid by
    `evaluation.metric`, refit it on train, save it to `out` and score it once on test.

    candidates: "spop,vsknn,gru4rec,hybrid:diginetica" or a list of names
        (`family[:PRESET]`); None: `gru4rec select`'s default, spop,sknn,vsknn,gru4rec,hybrid,
        ranker. preset: of the candidates that train GRU4Rec and name none.
    callbacks: training callbacks for each GRU4Rec training, given its description;
        report: called with one line per candidate scored.
    Returns every candidate's validation metrics, the choice and its test metrics.
    """
    from gru4rec.jobs.selection import DEFAULT_CANDIDATES, parse_candidates
    from gru4rec.jobs.tracked_runs import select_run

    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    names = candidates if isinstance(candidates, str) else ",".join(candidates)
    return select_run(
        Path(data),
        Path(out),
        parse_candidates(names, preset),
        settings=_settings(settings),
        evaluation=evaluation,
        compute=compute,
        tracking=tracking,
        callbacks=callbacks,
        report=report,
    )


def _settings(settings: Mapping[str, Any] | None) -> dict[str, str]:
    """GRU4Rec settings as `--set` spells them (numbers, booleans and lists as text)."""
    return {key: override_text(value) for key, value in (settings or {}).items()}


def load(model: str | Path, *, device: str = "auto", index: str = "auto") -> Recommender:
    """A trained model of any family, ready to recommend: a model directory or an MLflow
    URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/ID/model`).

    index: auto (FAISS where the model's score is an inner product), none (every item
        scored exactly), or the kind built by `gru4rec index` (flat, hnsw, ivf).
    """
    from gru4rec.serving.recommend import Recommender
    from gru4rec.serving.tracking import fetch_checkpoint

    return Recommender.from_path(fetch_checkpoint(str(model)), device=device, index=index)


def __getattr__(name: str) -> Any:
    # The result types, for `gru4rec.Recommender` and type hints, loaded on first use.
    if name == "Recommender":
        from gru4rec.serving.recommend import Recommender

        return Recommender
    if name == "SelectionResult":
        from gru4rec.jobs.selection import SelectionResult

        return SelectionResult
    if name == "TrainRun":
        from gru4rec.jobs.tracked_runs import TrainRun

        return TrainRun
    raise AttributeError(f"module 'gru4rec.api' has no attribute {name!r}")


__all__ = [
    "Compute",
    "Evaluation",
    "Recommender",
    "SelectionResult",
    "Tracking",
    "TrainRun",
    "load",
    "prepare",
    "select",
    "train",
]
