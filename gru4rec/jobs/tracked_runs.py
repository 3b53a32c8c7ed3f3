"""The tracked runs behind `gru4rec train`, `select`, `tune` and `baselines`: each opens its MLflow run,
does the work and logs the result, so that the commands only parse options and print.

Progress display and printing stay with the caller: `callbacks` (per training, for progress
bars) and `report` (one line per event) come in as arguments.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import ConfigError
from gru4rec.fileio import write_json
from gru4rec.jobs.selection import SelectionResult, fit_family, select_model
from gru4rec.jobs.tracked_training import train_tracked
from gru4rec.jobs.train_evaluate import (
    WarmStart,
    evaluate_baseline,
    evaluate_model_dir,
    evaluate_split,
    load_warm_start,
)
from gru4rec.jobs.tuning import (
    Study,
    TrackingTarget,
    Trial,
    authors_space,
    default_storage,
    optuna_search,
    parse_dimension,
)
from gru4rec.network.config import apply_overrides, get_preset
from gru4rec.network.train import Callback
from gru4rec.options import Compute, Evaluation, Tracking
from gru4rec.serving import families
from gru4rec.serving.families import Candidate
from gru4rec.serving.saved_models import read_extra


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
    model: str = "gru4rec",
    preset: str = "rsc15",
    settings: Mapping[str, str] | None = None,
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    tracking: Tracking = Tracking(),
    warm_start: WarmStart | None = None,
    window_days: float | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainRun:
    """Train the family `model` into `out`, score it on `evaluation.test_split` and, with
    `tracking.track`, log everything to one MLflow run (and the model, registered under
    `tracking.register`).

    warm_start: a GRU4Rec model to start from; its settings, not the preset's, are the base
    that `settings` change. window_days: as `train_evaluate.train_model`'s."""
    from gru4rec.serving import tracking as mlflow_tracking

    family = _trainable(model, warm_start, window_days)
    start = (
        None if warm_start is None else load_warm_start(warm_start.model, warm_start.keep_missing)
    )
    base = get_preset(preset) if start is None else start.config
    config = family.configure(apply_overrides(base, compute.seeded(settings or {})))
    run: Any = contextlib.nullcontext()
    if tracking.track:
        run = mlflow_tracking.start_run(
            tracking.tracking_uri, tracking.experiment, tracking.run_name
        )
    with run:
        tags = {"command": "train", "family": model}
        if family.takes_preset:
            tags["preset"] = preset
        if start is not None:
            tags["warm_start"] = start.source
        seconds = None
        scorer: Any
        if family.warm_start:
            scorer, items, result = train_tracked(
                data_dir,
                config,
                out,
                track=tracking.track,
                tags=tags,
                split=evaluation.train_split,
                device=compute.device,
                num_threads=compute.threads,
                callbacks=callbacks,
                valid_split=evaluation.valid_split,
                warm_start=start,
                window_days=window_days,
                **evaluation.scoring,
            )
            seconds = result.seconds
        else:
            if tracking.track:
                mlflow_tracking.log_inputs(data_dir, tags)
            scorer, items = fit_family(
                model,
                data_dir,
                out,
                preset=preset,
                settings=settings,
                evaluation=evaluation,
                compute=compute,
                callbacks=lambda label: callbacks,
            )
        metrics = None
        if evaluation.test_split != "none":
            metrics = evaluate_split(
                scorer, items, data_dir, split=evaluation.test_split, **evaluation.scoring
            )
        model_uri, resolved = _log_trained(out, metrics, evaluation, tracking)
    return TrainRun(scorer, items, metrics, seconds, model_uri, resolved)


def _trainable(
    model: str, warm_start: WarmStart | None, window_days: float | None
) -> families.Family:
    """The family `model`, checked against the options that only epoch-wise training takes."""
    family = families.get(model)
    for option, value in (("--warm-start", warm_start), ("--window-days", window_days)):
        if value is not None and not family.warm_start:
            trainable = [n for n, f in families.REGISTRY.items() if f.warm_start]
            raise ConfigError(
                f"{option} trains a model epoch by epoch ({', '.join(trainable)}), not {model}."
            )
    return family


def _log_trained(
    out: Path, metrics: dict[str, Any] | None, evaluation: Evaluation, tracking: Tracking
) -> tuple[str | None, str | None]:
    """Inside the active run (with `tracking.track`): the test metrics and the model.
    Returns (the logged model's URI, the tracking URI), or Nones untracked."""
    if not tracking.track:
        return None, None
    import mlflow

    from gru4rec.serving import tracking as mlflow_tracking

    resolved = mlflow.get_tracking_uri()
    run_info = {
        "run_id": mlflow.active_run().info.run_id,  # type: ignore[union-attr]
        "tracking_uri": resolved,
        "experiment": tracking.experiment,
    }
    write_json(out / "mlflow_run.json", run_info)  # lets `gru4rec index` log here
    if metrics is not None:
        mlflow_tracking.log_test_metrics(metrics, prefix=f"{evaluation.test_split}_")
    return mlflow_tracking.log_model(out, registered_name=tracking.register).model_uri, resolved


def select_run(
    data_dir: Path,
    out: Path,
    candidates: list[Candidate],
    *,
    settings: Mapping[str, str] | None = None,
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    tracking: Tracking = Tracking(experiment="gru4rec-select"),
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> SelectionResult:
    """`select_model` as a tracked run: a parent run with every candidate's valid metric,
    the choice and its test metrics, a nested run per candidate, and the chosen model
    (registered under `tracking.register`; its URI in the result's `model_uri`)."""
    from gru4rec.serving import tracking as mlflow_tracking

    names = ",".join(candidate.name for candidate in candidates)
    metric, uri, experiment = evaluation.metric, tracking.tracking_uri, tracking.experiment
    parent: Any = contextlib.nullcontext()
    if tracking.track:
        parent = mlflow_tracking.start_run(uri, experiment, f"select {data_dir.name}")

    def on_candidate(name: str, metrics: dict[str, Any]) -> None:
        report(f"select: {name} on valid: {metric} {metrics[metric]:.4f}")
        if tracking.track:
            with mlflow_tracking.start_run(uri, experiment, name, nested=True):
                mlflow_tracking.log_inputs(data_dir, {"candidate": name, "command": "select"})
                mlflow_tracking.log_test_metrics(metrics, prefix="valid_")

    with parent:
        if tracking.track:
            mlflow_tracking.log_inputs(data_dir, {"command": "select", "candidates": names})
        result = select_model(
            data_dir,
            out,
            candidates,
            settings=settings,
            evaluation=evaluation,
            compute=compute,
            callbacks=callbacks,
            on_candidate=on_candidate,
        )
        if tracking.track:
            import mlflow

            mlflow.set_tags({"chosen": result.chosen, "family": result.family})
            for name, values in result.candidates.items():
                mlflow.log_metric(
                    f"valid_{name.replace(':', '_')}_{metric.replace('@', '_at_')}", values[metric]
                )
            mlflow_tracking.log_test_metrics(result.test)
            logged = mlflow_tracking.log_model(out, registered_name=tracking.register)
            result.model_uri = logged.model_uri
    return result


@dataclass
class TuneRun:
    """What `tune_run` found: trials best first, and where the study lives."""

    trials: list[Trial]
    seconds: float
    storage: str
    study: str


def tune_run(
    data_dir: Path,
    *,
    preset: str = "rsc15",
    settings: Mapping[str, str] | None = None,
    space: Sequence[str] = (),
    study: Study = Study(),
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    tracking: Tracking = Tracking(experiment="gru4rec-tune"),
    report: Callable[[str], None] = lambda line: None,
) -> TuneRun:
    """`optuna_search` under one MLflow parent run (a nested run per trial), with the best
    trial's settings and metrics logged to the parent.

    settings: fixed GRU4Rec settings over the preset's; space: the searched ones
    (key=low:high, key=low:high:log or key=a|b|c; none: the authors' space for the loss);
    compute.seed: the TPE sampler's (worker i: seed + i; default 0)."""
    import mlflow

    from gru4rec.serving import tracking as mlflow_tracking

    base = apply_overrides(get_preset(preset), dict(settings or {}))
    dimensions = [parse_dimension(text) for text in space] or list(authors_space(base))
    unknown = [d.name for d in dimensions if d.name not in base.to_dict()]
    if unknown:
        apply_overrides(base, {unknown[0]: "0"})  # raises the usual unknown-key error
    uri = mlflow_tracking.resolve_tracking_uri(tracking.tracking_uri)
    storage = study.storage or default_storage(uri)
    name = study.name or f"tune-{preset}-{data_dir.resolve().name}"
    metric, started = evaluation.metric, time.perf_counter()
    with mlflow_tracking.start_run(
        tracking.tracking_uri, tracking.experiment, f"tune {preset}"
    ) as parent:
        inputs = {"preset": preset, "command": "tune", "study": name, "storage": storage}
        mlflow_tracking.log_inputs(data_dir, inputs)
        report(f"tune: study {name!r} in {storage}, {study.trials} trials, {study.jobs} worker(s)")
        results = optuna_search(
            data_dir,
            base,
            dimensions,
            trials=study.trials,
            metric=metric,
            jobs=study.jobs,
            storage=storage,
            study_name=name,
            seed=compute.seed or 0,
            prune=study.prune,
            device=compute.device,
            tracking=TrackingTarget(uri, tracking.experiment, parent.info.run_id),
        )
        seconds = time.perf_counter() - started
        best = results[0]
        mlflow.log_dict({"overrides": best.overrides, "metrics": best.metrics}, "best.json")
        mlflow.log_metrics(
            {
                f"best_valid_{mlflow_tracking.metric_key(metric)}": best.metrics[metric],
                "tune_seconds": seconds,
                "pruned_trials": sum(t.state == "PRUNED" for t in results),
            }
        )
    return TuneRun(results, seconds, storage, name)


@dataclass(frozen=True)
class BaselineRow:
    """One model of `baselines_run`'s table: its name, test metrics and training seconds."""

    name: str
    metrics: dict[str, Any]
    seconds: float | None  # None: not known (a model trained elsewhere without timings)


def baselines_run(
    data_dir: Path,
    names: Sequence[str],
    *,
    models: Sequence[Path] = (),
    evaluation: Evaluation = Evaluation(),
    tracking: Tracking = Tracking(experiment="gru4rec-baselines"),
    report: Callable[[str], None] = lambda line: None,
) -> list[BaselineRow]:
    """Each baseline in `names` fitted on train and scored on test by the same harness as
    GRU4Rec (with `tracking.track`, one MLflow run each), then each trained model directory
    of `models` scored on the same split, with its training time where it recorded one."""
    from gru4rec.scoring.baselines import BASELINES
    from gru4rec.serving import tracking as mlflow_tracking

    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}: choose from {', '.join(BASELINES)}.")
    rows = []
    for name in names:
        report(f"baselines: fitting and evaluating {name}")
        run: Any = contextlib.nullcontext()
        if tracking.track:
            run = mlflow_tracking.start_run(tracking.tracking_uri, tracking.experiment, name)
        with run:
            metrics = evaluate_baseline(name, data_dir, ties=evaluation.ties)
            if tracking.track:
                import mlflow

                mlflow_tracking.log_inputs(data_dir, {"model": name, "command": "baselines"})
                mlflow_tracking.log_test_metrics(metrics)
                mlflow.log_metric("train_seconds", metrics["fit_seconds"])
        rows.append(BaselineRow(name, metrics, metrics["fit_seconds"]))
    for model_dir in models:
        metrics = evaluate_model_dir(model_dir, data_dir, ties=evaluation.ties)
        epochs = read_extra(model_dir).get("epochs", [])
        seconds = sum(epoch["seconds"] for epoch in epochs) or None
        rows.append(BaselineRow(f"GRU4Rec ({model_dir.name})", metrics, seconds))
    return rows
