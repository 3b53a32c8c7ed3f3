"""`gru4rec nightly CONFIG`: prepare, train, evaluate against the champion, index, recommend,
and only then move the registry alias and publish the outputs.

The job is the table `STAGES`: each stage is a function of the `Night` it runs in, which
carries what the stages hand on (the run directory, the summary, the model to serve), and
one wrapper (`_tracked`) gives every stage its nested MLflow run, its timing and its error.

With `[model] candidates`, the train stage is model selection (`gru4rec.jobs.selection`): every
candidate family is fitted on train_tr and scored on valid, the best is refitted on train;
the champion alias can then hold any family, and every later stage serves whichever it holds.

Every stage writes into a fresh run directory (`<work_dir>/runs/<stamp>/`); the published
outputs are `<work_dir>/current`, a symlink swapped atomically at the very end. So a failed
stage leaves the alias and the previous outputs as they were: the parent and that stage's
run are marked FAILED and the error propagates (the CLI exits non-zero). Running twice on
the same inputs is safe: the second model is not strictly better, so the alias stays and
the outputs are rewritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from gru4rec.errors import Gru4RecError, StageError
from gru4rec.jobs.batch_recommend import recommend_file
from gru4rec.jobs.indexing import build_index
from gru4rec.jobs.nightly_config import NightlyConfig
from gru4rec.jobs.nightly_faults import (
    TRACKING_DOWN,
    chained_error,
    connect,
    first_line,
    is_tracking_failure,
    recover,
)
from gru4rec.jobs.run_lock import RunLock
from gru4rec.jobs.selection import parse_candidates, select_model
from gru4rec.jobs.tracked_training import train_tracked
from gru4rec.jobs.train_evaluate import WarmStartSource, evaluate_split, load_warm_start
from gru4rec.network.config import GRU4RecConfig, apply_overrides, get_preset
from gru4rec.network.warm_start import check_structure
from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.prepare import prepare
from gru4rec.pipelines.sources import resolve_spec
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.retrieval import IndexOptions
from gru4rec.serving.saved_models import load_scorer

logger = logging.getLogger(__name__)


@dataclass
class Night:
    """One run of the job: its settings, and what each stage hands on to the next."""

    config: NightlyConfig
    run_dir: Path  # <work_dir>/runs/<stamp>/: everything this run writes
    parent_id: str  # the parent MLflow run
    report: Callable[[str], None]
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json
    model_uri: str = ""  # the new model, logged (registered only when published)
    new: dict[str, Any] = field(default_factory=dict)  # its test metrics
    promote: bool = False  # whether it replaces the champion
    champion_dir: Path | None = None  # the champion that can serve, if any
    serving_dir: Path | None = None  # the model the index and recommendations are of
    index_kind: str = "none"

    @property
    def evaluation(self) -> dict[str, Any]:
        return {"cutoffs": self.config.cutoffs, "ties": self.config.ties}


def prepare_stage(night: Night) -> None:
    """Clean and split the log into `<run_dir>/data`."""
    import mlflow

    config = night.config
    spec = resolve_spec(config.log_format, **config.source)
    mlflow.log_params({"inputs": ",".join(map(str, config.inputs)), "format": config.log_format})
    manifest = prepare(
        config.inputs,
        night.run_dir / "data",
        spec,
        PrepareOptions(**config.prepare),
        format_name=config.log_format,
    )
    mlflow.log_dict(manifest, "manifest.json")
    spans = [where["clicks"] for where in manifest.get("time_splits", {}).values()]
    if spans:  # the clicks this night's data holds, first to last (UTC)
        night.summary["data_window"] = [min(s[0] for s in spans), max(s[1] for s in spans)]
    mlflow.log_metrics(
        {
            f"{split}_{key}": value
            for split, counts in manifest["splits"].items()
            for key, value in counts.items()
        }
    )


def train_stage(night: Night) -> None:
    """Train (or select) the new model into `<run_dir>/model` and log it, unregistered."""
    from gru4rec.serving import tracking

    config = night.config
    selected = _train(config, night.run_dir, night.parent_id, night.report)
    night.summary["family"] = selected.get("family", "gru4rec")
    night.summary["chosen"] = selected.get("chosen", f"gru4rec:{config.preset}")
    night.summary["warm_start"] = selected.get("warm_start")
    # Logged, not registered yet: the registry changes only in the publish stage.
    night.model_uri = tracking.log_model(night.run_dir / "model").model_uri


def evaluate_stage(night: Night) -> None:
    """Score the new model and the champion on this run's test split; decide."""
    import mlflow

    from gru4rec.serving import tracking

    config = night.config
    scorer, items = load_scorer(night.run_dir / "model", device=config.device)
    night.new = evaluate_split(scorer, items, night.run_dir / "data", **night.evaluation)
    tracking.log_test_metrics(night.new, prefix="new_")
    champion_dir, champion_version, old = _evaluate_champion(
        config, night.run_dir, night.evaluation, night.summary, night.report
    )
    night.champion_dir = champion_dir
    night.promote = old is None or night.new[config.metric] > old[config.metric]
    night.summary.update(
        {
            "metric": config.metric,
            "new": night.new[config.metric],
            "champion": None if old is None else old[config.metric],
            "champion_version": champion_version,
            "promote": night.promote,
        }
    )
    mlflow.log_dict(night.summary, "decision.json")


def index_stage(night: Night) -> None:
    """The index of the model to serve: the new one if promoted, else the champion (a copy
    beside this run); none for a family whose score is not an inner product."""
    import mlflow

    from gru4rec.serving import tracking

    config, run_dir = night.config, night.run_dir
    serving_dir = run_dir / "model"
    if not night.promote and night.champion_dir is not None:
        serving_dir = run_dir / "champion_model"
        shutil.copytree(night.champion_dir, serving_dir)
    night.serving_dir = serving_dir
    serving = Recommender.from_path(serving_dir, device="cpu", index="none")
    night.index_kind = config.index if serving.scorer.indexed else "none"
    if night.index_kind == "none":
        night.report(f"index: a {serving.scorer.family} model scores every item; no index")
        return
    index, folder = build_index(serving_dir, IndexOptions(kind=config.index), data=run_dir / "data")
    night.report(f"index: {config.index}, recall@20 against exact {index.meta['recall_at_20']:.4f}")
    mlflow.log_metrics(tracking.numeric_metrics({f"index_{k}": v for k, v in index.meta.items()}))
    mlflow.log_artifacts(str(folder), "index")


def recommend_stage(night: Night) -> None:
    """Recommendations for the test sessions, by the served model (one process or Ray)."""
    import mlflow

    config, run_dir, serving_dir = night.config, night.run_dir, night.serving_dir
    assert serving_dir is not None  # set by the index stage
    sessions, prepared = run_dir / "data" / "test.parquet", resolve_spec("prepared")
    if config.engine == "ray":
        from gru4rec.jobs.ray_recommend import recommend_on_ray

        output = run_dir / "recommendations"
        counts = recommend_on_ray(
            str(serving_dir),
            sessions,
            prepared,
            output,
            k=config.k,
            exclude_seen=config.exclude_seen,
            device=config.device,
            index=night.index_kind,
        )
    else:
        recommender = Recommender.from_path(
            serving_dir, device=config.device, index=night.index_kind
        )
        output = run_dir / "recommendations.parquet"
        counts = recommend_file(
            recommender, sessions, prepared, output, k=config.k, exclude_seen=config.exclude_seen
        )
    mlflow.log_metrics({f"recommend_{k}": float(v) for k, v in counts.items()})
    night.summary["recommendations"] = str(output)


def publish_stage(night: Night) -> None:
    """The commit point: register the new version, write the summary, swap `current`, then
    move the alias. A kill in between leaves `current` new and the alias old; the next run
    compares against the champion again and decides afresh."""
    import mlflow

    config = night.config
    version = mlflow.register_model(night.model_uri, config.registered_model).version
    night.summary["new_version"] = str(version)
    (night.run_dir / "summary.json").write_text(json.dumps(night.summary, indent=2) + "\n")
    _publish(config.work_dir, night.run_dir)
    if night.promote:
        _move_alias(config, night.summary["new_version"])
    _prune(config.work_dir, config.keep_runs)


Stage = Callable[[Night], None]
STAGES: tuple[tuple[str, Stage], ...] = (
    ("prepare", prepare_stage),
    ("train", train_stage),
    ("evaluate", evaluate_stage),
    ("index", index_stage),
    ("recommend", recommend_stage),
    ("publish", publish_stage),
)


def run_nightly(
    config: NightlyConfig, report: Callable[[str], None] = logger.info
) -> dict[str, Any]:
    """Run every stage; returns the summary also logged to the parent run.

    Takes the work directory's lock first (a second run at once is refused), cleans up
    after a killed run, and checks that the tracking server answers before any work.
    """
    with RunLock(config.work_dir / "nightly.lock") as lock:
        uri = connect(config)
        recover(config, lock.previous, report)
        return _run_stages(config, lock, uri, report)


def _run_stages(
    config: NightlyConfig, lock: RunLock, tracking_uri: str, report: Callable[[str], None]
) -> dict[str, Any]:
    import mlflow

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    run_dir = config.work_dir / "runs" / stamp
    run_dir.mkdir(parents=True)
    lock.note(run_dir=str(run_dir))
    try:
        with mlflow.start_run(run_name=f"nightly {stamp}") as parent:
            lock.note(parent_run_id=parent.info.run_id)
            mlflow.set_tags({"job": "nightly", "registered_model": config.registered_model})
            mlflow.log_dict(_jsonable(dataclasses.asdict(config)), "nightly_config.json")
            night = Night(config, run_dir, parent.info.run_id, report, {"run_dir": str(run_dir)})
            for name, stage in STAGES:
                with _tracked(name, report, tracking_uri):
                    stage(night)
            _log_night(night)
    except BaseException as error:
        _fail(error, config, run_dir, lock, tracking_uri)
    return night.summary


def _log_night(night: Night) -> None:
    """The night on its parent run, what `gru4rec compare` shows one row of: the decision,
    the new model's and the champion's metric, the family chosen and the data's window."""
    import mlflow

    summary, metric = night.summary, night.config.metric
    key = metric.replace("@", "_at_")
    mlflow.log_dict(summary, "summary.json")
    scores = {"promoted": float(night.promote), f"new_{key}": night.new[metric]}
    if summary.get("champion") is not None:
        scores[f"champion_{key}"] = summary["champion"]
    mlflow.log_metrics(scores)
    window = summary.get("data_window")
    mlflow.set_tags(
        {
            "nightly_metric": metric,
            "family": summary.get("family", "?"),
            "chosen": summary.get("chosen", "?"),
            "decision": "promoted" if night.promote else "kept",
            "new_version": summary.get("new_version", ""),
            **({"data_window": f"{window[0]} .. {window[1]}"} if window else {}),
        }
    )


@contextmanager
def _tracked(name: str, report: Callable[[str], None], tracking_uri: str) -> Iterator[None]:
    """A nested MLflow run for one stage, timed (`stage_seconds`); an exception marks it
    (and the parent) FAILED and comes out as a StageError naming the stage (and, from
    training, the epoch)."""
    import mlflow

    try:
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.set_tag("stage", name)
            report(f"{name}: started")
            started = time.perf_counter()
            yield
            mlflow.log_metric("stage_seconds", time.perf_counter() - started)
    except Exception as error:
        if is_tracking_failure(error):
            raise StageError(name, error, TRACKING_DOWN.format(uri=tracking_uri)) from error
        if isinstance(error, Gru4RecError | OSError | ValueError | RuntimeError):
            raise StageError(name, error) from error
        raise  # anything else is a bug: its traceback stays
    report(f"{name}: done")


def _fail(
    error: BaseException, config: NightlyConfig, run_dir: Path, lock: RunLock, tracking_uri: str
) -> NoReturn:
    """Clean up after a failed run and raise the error to report."""
    if (config.work_dir / "current").resolve() != run_dir.resolve():
        shutil.rmtree(run_dir, ignore_errors=True)  # never published
    if is_tracking_failure(error):  # its MLflow runs may be left RUNNING
        lock.keep_record()
    # Ending the MLflow runs as FAILED fails too when the server is gone: that error
    # then hides the stage's own, which is the one to report.
    stage_error = chained_error(error, StageError)
    if stage_error is not None and stage_error is not error:
        raise stage_error from None
    if is_tracking_failure(error) and not isinstance(error, StageError):
        raise StageError("nightly", error, TRACKING_DOWN.format(uri=tracking_uri)) from error
    raise error


def _evaluate_champion(
    config: NightlyConfig,
    run_dir: Path,
    evaluation: dict[str, Any],
    summary: dict[str, Any],
    report: Callable[[str], None],
) -> tuple[Path | None, str | None, dict[str, Any] | None]:
    """The champion's directory, version and metrics on this run's test split.

    A champion that cannot be loaded or scores NaN (damaged weights) cannot serve: that is
    reported (summary `champion_error`, an MLflow tag) and the new model is promoted in
    its place, rather than stopping the job and leaving a broken model in service.
    """
    import mlflow

    from gru4rec.serving import tracking

    champion_version = _champion_version(config)
    if champion_version is None:
        return None, None, None
    try:
        champion_dir = _fetch(config, champion_version)
        champion = Recommender.from_path(champion_dir, device=config.device)
        old = evaluate_split(champion.scorer, _items(champion_dir), run_dir / "data", **evaluation)
    except (Gru4RecError, OSError, ValueError, RuntimeError) as error:
        message = f"version {champion_version} cannot serve: {first_line(error)}"
        report(f"evaluate: the champion {message}; promoting the new model")
        summary["champion_error"] = message
        mlflow.set_tag("champion_error", message[:5000])
        return None, champion_version, None
    tracking.log_test_metrics(old, prefix="champion_")
    return champion_dir, champion_version, old


def _train(
    config: NightlyConfig, run_dir: Path, parent_id: str, report: Callable[[str], None]
) -> dict[str, Any]:
    """Train GRU4Rec with the preset into `<run_dir>/model`, or, with candidates, select the
    best family on valid (every candidate's valid metrics go to the parent run too)."""
    import mlflow

    from gru4rec.serving import tracking

    data_dir = run_dir / "data"
    tags = {"preset": config.preset}
    if not config.candidates:
        model_config = apply_overrides(get_preset(config.preset), config.overrides)
        start = _warm_start(config, model_config, report) if config.warm_start else None
        window = None
        if start is not None:
            overrides = {**config.overrides, "n_epochs": str(config.warm_epochs)}
            model_config = apply_overrides(start.config, overrides)
            tags["warm_start"] = start.source
            window = config.warm_window_days
        train_tracked(
            data_dir,
            model_config,
            run_dir / "model",
            track=True,
            tags=tags,
            device=config.device,
            warm_start=start,
            window_days=window,
        )
        return {"warm_start": None if start is None else start.source}
    tracking.log_inputs(data_dir, tags)
    client = mlflow.MlflowClient()

    def on_candidate(name: str, metrics: dict[str, Any]) -> None:
        report(f"train: candidate {name} on valid: {config.metric} {metrics[config.metric]:.4f}")
        for key, value in tracking.numeric_metrics(metrics, prefix="valid_").items():
            safe = name.replace(":", "_")
            mlflow.log_metric(f"{safe}_{key}", value)  # the train stage's run
            client.log_metric(parent_id, f"candidate_{safe}_{key}", value)  # and the parent's

    result = select_model(
        data_dir,
        run_dir / "model",
        parse_candidates(",".join(config.candidates), config.preset),
        settings=config.overrides,
        evaluation=config.evaluation,
        compute=config.compute,
        on_candidate=on_candidate,
    )
    mlflow.log_dict(_jsonable(result.to_json()), "selection.json")
    client.set_tag(parent_id, "chosen", result.chosen)
    report(f"train: chose {result.chosen} ({result.family}) on valid")
    return {"family": result.family, "chosen": result.chosen}


def _warm_start(
    config: NightlyConfig, wanted: GRU4RecConfig, report: Callable[[str], None]
) -> WarmStartSource | None:
    """The champion to start from, or None (reported): none yet, not a GRU4Rec model, or
    not the architecture the configuration asks for."""
    version = _champion_version(config)
    if version is None:
        report("train: no champion yet; training from scratch")
        return None
    source = f"models:/{config.registered_model}/{version}"
    try:
        start = load_warm_start(source, config.keep_missing_items)
        check_structure(start.config, wanted, source)
    except Gru4RecError as error:
        report(f"train: no warm start ({first_line(error)}); training from scratch")
        return None
    every = config.warm_scratch_every
    if every and start.chain + 1 >= every:
        report(
            f"train: the champion is warm start {start.chain} in a row; training from "
            f"scratch (one night in {every}: warm_scratch_every)"
        )
        return None
    report(f"train: warm start from the champion, version {version}")
    return start


def _champion_version(config: NightlyConfig) -> str | None:
    """The registry version holding the alias now (None if none does)."""
    import mlflow

    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(
            config.registered_model, config.alias
        )
    except mlflow.exceptions.MlflowException:
        return None
    return str(version.version)


def _fetch(config: NightlyConfig, version: str) -> Path:
    """The checkpoint directory of a registered version (downloaded)."""
    from gru4rec.serving.tracking import fetch_checkpoint

    return fetch_checkpoint(f"models:/{config.registered_model}/{version}")


def _items(model_dir: Path) -> Any:
    import polars as pl

    return pl.read_parquet(Path(model_dir) / "items.parquet").sort("item_idx")


def _move_alias(config: NightlyConfig, version: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(config.registered_model, config.alias, version)
    logger.info("moved %s@%s to version %s", config.registered_model, config.alias, version)


def _publish(work_dir: Path, run_dir: Path) -> None:
    """Point `<work_dir>/current` at `run_dir`, atomically (a new symlink renamed over it)."""
    link = work_dir / "current"
    staging = work_dir / f".current.tmp-{uuid.uuid4().hex[:8]}"
    staging.symlink_to(run_dir.relative_to(work_dir))
    os.replace(staging, link)


def _prune(work_dir: Path, keep: int) -> None:
    """Delete the oldest run directories beyond `keep`, never the published one."""
    current = (work_dir / "current").resolve()
    runs = sorted((work_dir / "runs").iterdir())
    for old in runs[:-keep]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


__all__ = ["STAGES", "Night", "NightlyConfig", "run_nightly"]
