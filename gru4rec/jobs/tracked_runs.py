"""The tracked runs behind `gru4rec train`, `select` and `tune`: each opens its MLflow run,
does the work and logs the result, so that the commands only parse options and print.

Progress display and printing stay with the caller: `callbacks` (per training, for progress
bars) and `report` (one line per event) come in as arguments.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import ConfigError
from gru4rec.fileio import write_json
from gru4rec.jobs.selection import SelectionResult, fit_family, select_model
from gru4rec.jobs.tracked_training import train_tracked
from gru4rec.jobs.train_evaluate import evaluate_split, load_warm_start
from gru4rec.jobs.tuning import Dimension, TrackingTarget, Trial, default_storage, optuna_search
from gru4rec.network.config import GRU4RecConfig, apply_overrides, get_preset
from gru4rec.network.train import Callback
from gru4rec.serving import families
from gru4rec.serving.families import Candidate


@dataclass
class TrainRun:
    """What `train_run` made: the model, its item map, test metrics and where it is logged."""

    scorer: Any
    items: pl.DataFrame
    metrics: dict[str, Any] | None  # on the test split; None with test_split "none"
    train_seconds: float | None  # GRU4Rec families only
    model_uri: str | None  # the logged model (None untracked)
    tracking_uri: str | None


def train_run(
    data_dir: Path,
    out: Path,
    *,
    family: str,
    preset: str,
    overrides: dict[str, str],
    split: str = "train",
    test_split: str = "test",
    valid_split: str | None = None,
    evaluation: dict[str, Any],
    device: str = "auto",
    threads: int | None = None,
    callbacks: Sequence[Callback] = (),
    track: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "gru4rec",
    run_name: str | None = None,
    register: str | None = None,
    warm_start: str | None = None,
    keep_missing: bool = False,
    window_days: float | None = None,
) -> TrainRun:
    """Train one model family into `out`, evaluate it on `test_split` and, with `track`,
    log everything to one MLflow run (and the model, registered under `register`).

    warm_start: a GRU4Rec model (directory or MLflow URI) to start from; its settings,
    not the preset's, are the base that `overrides` change. keep_missing, window_days: as
    `train_evaluate.train_model`'s."""
    from gru4rec.serving import tracking

    start = None
    spec = families.get(family)
    for option, value in (("--warm-start", warm_start), ("--window-days", window_days)):
        if value is not None and not spec.warm_start:
            trainable = [n for n, f in families.REGISTRY.items() if f.warm_start]
            raise ConfigError(
                f"{option} trains a model epoch by epoch ({', '.join(trainable)}), not {family}."
            )
    if keep_missing and warm_start is None:
        raise ConfigError("--keep-missing-items goes with --warm-start (it names the old items).")
    if warm_start is not None:
        start = load_warm_start(warm_start, keep_missing)
    base = get_preset(preset) if start is None else start.config
    config = apply_overrides(base, overrides)
    run: Any = contextlib.nullcontext()
    if track:
        run = tracking.start_run(tracking_uri, experiment, run_name)
    with run:
        tags = {"command": "train", "family": family}
        if spec.takes_preset:
            tags["preset"] = preset
        if start is not None:
            tags["warm_start"] = start.source
        seconds = None
        scorer: Any
        if spec.warm_start:
            config = spec.configure(config)
            scorer, items, result = train_tracked(
                data_dir,
                config,
                out,
                track=track,
                tags=tags,
                split=split,
                device=device,
                num_threads=threads,
                callbacks=callbacks,
                valid_split=valid_split,
                warm_start=start,
                window_days=window_days,
                **evaluation,
            )
            seconds = result.seconds
        else:
            if track:
                tracking.log_inputs(data_dir, tags)
            scorer, items = fit_family(
                family,
                data_dir,
                out,
                preset=preset,
                overrides=overrides,
                split=split,
                ties=evaluation["ties"],
                device=device,
                num_threads=threads,
                callbacks=lambda label: callbacks,
            )
        metrics = None
        if test_split != "none":
            metrics = evaluate_split(scorer, items, data_dir, split=test_split, **evaluation)
        model_uri = resolved = None
        if track:
            import mlflow

            resolved = mlflow.get_tracking_uri()
            run_info = {
                "run_id": mlflow.active_run().info.run_id,  # type: ignore[union-attr]
                "tracking_uri": resolved,
                "experiment": experiment,
            }
            write_json(out / "mlflow_run.json", run_info)  # lets `gru4rec index` log here
            if metrics is not None:
                tracking.log_test_metrics(metrics, prefix=f"{test_split}_")
            model_uri = tracking.log_model(out, registered_name=register).model_uri
    return TrainRun(scorer, items, metrics, seconds, model_uri, resolved)


def select_run(
    data_dir: Path,
    out: Path,
    candidates: list[Candidate],
    *,
    overrides: dict[str, str],
    metric: str,
    ties: Any,
    device: str = "auto",
    threads: int | None = None,
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
    report: Callable[[str], None] = lambda line: None,
    track: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "gru4rec-select",
    register: str | None = None,
) -> tuple[SelectionResult, str | None]:
    """`select_model` as a tracked run: a parent run with every candidate's valid metric,
    the choice and its test metrics, a nested run per candidate, and the chosen model
    (registered under `register`). Returns the result and the logged model's URI."""
    from gru4rec.serving import tracking

    names = ",".join(candidate.name for candidate in candidates)
    parent: Any = contextlib.nullcontext()
    if track:
        parent = tracking.start_run(tracking_uri, experiment, f"select {data_dir.name}")

    def on_candidate(name: str, metrics: dict[str, Any]) -> None:
        report(f"select: {name} on valid: {metric} {metrics[metric]:.4f}")
        if track:
            with tracking.start_run(tracking_uri, experiment, name, nested=True):
                tracking.log_inputs(data_dir, {"candidate": name, "command": "select"})
                tracking.log_test_metrics(metrics, prefix="valid_")

    model_uri = None
    with parent:
        if track:
            tracking.log_inputs(data_dir, {"command": "select", "candidates": names})
        result = select_model(
            data_dir,
            out,
            candidates,
            overrides=overrides,
            metric=metric,
            ties=ties,
            device=device,
            num_threads=threads,
            callbacks=callbacks,
            on_candidate=on_candidate,
        )
        if track:
            import mlflow

            mlflow.set_tags({"chosen": result.chosen, "family": result.family})
            for name, values in result.candidates.items():
                mlflow.log_metric(
                    f"valid_{name.replace(':', '_')}_{metric.replace('@', '_at_')}", values[metric]
                )
            tracking.log_test_metrics(result.test)
            model_uri = tracking.log_model(out, registered_name=register).model_uri
    result.model_uri = model_uri
    return result, model_uri


@dataclass
class TuneRun:
    """What `tune_run` found: trials best first, and where the study lives."""

    trials: list[Trial]
    seconds: float
    storage: str
    study: str


def tune_run(
    data_dir: Path,
    base: GRU4RecConfig,
    dimensions: list[Dimension],
    *,
    preset: str,
    trials: int,
    metric: str,
    jobs: int,
    storage: str | None,
    study: str | None,
    seed: int,
    prune: bool,
    device: str,
    tracking_uri: str | None,
    experiment: str,
    report: Callable[[str], None] = lambda line: None,
) -> TuneRun:
    """`optuna_search` under one MLflow parent run (a nested run per trial), with the best
    trial's settings and metrics logged to the parent."""
    import mlflow

    from gru4rec.serving import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    storage = storage or default_storage(uri)
    study = study or f"tune-{preset}-{data_dir.resolve().name}"
    started = time.perf_counter()
    with tracking.start_run(tracking_uri, experiment, f"tune {preset}") as parent:
        tracking.log_inputs(
            data_dir, {"preset": preset, "command": "tune", "study": study, "storage": storage}
        )
        report(f"tune: study {study!r} in {storage}, {trials} trials, {jobs} worker(s)")
        results = optuna_search(
            data_dir,
            base,
            dimensions,
            trials=trials,
            metric=metric,
            jobs=jobs,
            storage=storage,
            study_name=study,
            seed=seed,
            prune=prune,
            device=device,
            tracking=TrackingTarget(uri, experiment, parent.info.run_id),
        )
        seconds = time.perf_counter() - started
        best = results[0]
        mlflow.log_dict({"overrides": best.overrides, "metrics": best.metrics}, "best.json")
        mlflow.log_metrics(
            {
                f"best_valid_{tracking.metric_key(metric)}": best.metrics[metric],
                "tune_seconds": seconds,
                "pruned_trials": sum(t.state == "PRUNED" for t in results),
            }
        )
    return TuneRun(results, seconds, storage, study)
