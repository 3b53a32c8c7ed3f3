"""`gru4rec nightly CONFIG`: prepare, train, evaluate against the champion, index, recommend,
and only then move the registry alias and publish the outputs.

With `[model] candidates`, the train stage is model selection (`gru4rec.jobs.selection`): every
candidate family is fitted on train_tr and scored on valid, the best is refitted on train;
the champion alias can then hold any family, and every later stage serves whichever it holds.

One parent MLflow run with a nested run per stage. Every stage writes into a fresh run
directory (`<work_dir>/runs/<stamp>/`); the published outputs are `<work_dir>/current`, a
symlink swapped atomically at the very end. So a failed stage leaves the alias and the
previous outputs as they were: the parent and that stage's run are marked FAILED and the
error propagates (the CLI exits non-zero). Running twice on the same inputs is safe: the
second model is not strictly better, so the alias stays and the outputs are rewritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import tomllib
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gru4rec.config import GRU4RecConfig, apply_overrides, get_preset
from gru4rec.errors import ConfigError, Gru4RecError, StageError
from gru4rec.evaluate import TIE_MODES
from gru4rec.jobs.batch_recommend import recommend_file
from gru4rec.jobs.indexing import build_index
from gru4rec.jobs.run_lock import RunLock
from gru4rec.jobs.selection import parse_candidates, select_model
from gru4rec.jobs.workflow import WarmStart, evaluate_split, load_warm_start, train_tracked
from gru4rec.pipelines.prepare import PrepareOptions, prepare
from gru4rec.pipelines.sources import SourceSpec, resolve_spec
from gru4rec.recommend import Recommender
from gru4rec.retrieval import IndexOptions
from gru4rec.saved_models import load_scorer
from gru4rec.warm_start import check_structure

logger = logging.getLogger(__name__)

PREPARE_KEYS = {f.name for f in dataclasses.fields(PrepareOptions)}
# test_days is in both: the SourceSpec one is only the format default, so prepare takes it.
SOURCE_KEYS = {f.name for f in dataclasses.fields(SourceSpec)} - PREPARE_KEYS
WARM_KEYS = (
    "warm_start",
    "warm_epochs",
    "warm_window_days",
    "keep_missing_items",
    "warm_scratch_every",
)


@dataclass(frozen=True)
class NightlyConfig:
    """The nightly job, as read from a TOML or YAML file (see docs/nightly.example.toml)."""

    inputs: tuple[Path, ...]  # the click log (or a train + test pair)
    work_dir: Path  # runs/<stamp>/ per run, `current` -> the published run
    experiment: str = "gru4rec-nightly"
    registered_model: str = "gru4rec"
    alias: str = "champion"
    metric: str = "mrr@20"  # higher is better; the alias moves only on a strict improvement
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    log_format: str = "gru4rec-tsv"
    source: Mapping[str, Any] = field(default_factory=dict)  # SourceSpec overrides
    prepare: Mapping[str, Any] = field(default_factory=dict)  # PrepareOptions
    preset: str = "rsc15"
    overrides: Mapping[str, str] = field(default_factory=dict)  # as `--set key=value`
    # Model selection (as `gru4rec select`): candidate families fitted on train_tr and scored
    # on valid, the best refitted on train; empty = train GRU4Rec with `preset` only.
    candidates: tuple[str, ...] = ()
    # Warm start (`gru4rec.warm_start`): train from the champion's weights for warm_epochs,
    # on the last warm_window_days of train (None: all of it); from scratch when there is
    # no champion yet or its architecture is not the configured one.
    warm_start: bool = False
    warm_epochs: int = 3
    warm_window_days: float | None = None
    keep_missing_items: bool = False
    # One night in warm_scratch_every trains from scratch (a warm start trails a scratch
    # run a little, README "Warm start"); 0: never.
    warm_scratch_every: int = 7
    device: str = "auto"
    cutoffs: tuple[int, ...] = (1, 5, 10, 20)
    ties: str = "conservative"
    index: str = "flat"
    k: int = 20
    exclude_seen: bool = False
    engine: str = "local"  # recommend stage: local, or ray (a local Ray instance or RAY_ADDRESS)
    keep_runs: int = 3  # run directories kept (the published one always is)

    @classmethod
    def load(cls, path: Path) -> NightlyConfig:
        """Read a .toml or .yaml/.yml file; relative paths are relative to its folder."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such nightly configuration file.")
        try:
            if path.suffix == ".toml":
                raw = tomllib.loads(path.read_text())
            elif path.suffix in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(path.read_text()) or {}
            else:
                raise ConfigError(f"{path}: the configuration must be .toml, .yaml or .yml.")
        except (tomllib.TOMLDecodeError, ValueError) as error:
            raise ConfigError(f"{path}: cannot be parsed ({error}).") from None
        return cls.from_dict(raw, base=path.parent, origin=str(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base: Path, origin: str = "config") -> NightlyConfig:
        raw = dict(raw)
        data = dict(raw.pop("data", {}))
        model = dict(raw.pop("model", {}))
        evaluation = dict(raw.pop("evaluation", {}))
        serving = dict(raw.pop("serving", {}))
        if "inputs" not in data:
            raise ConfigError(f"{origin}: [data] needs `inputs`, the click-log file(s).")
        values: dict[str, Any] = {
            "inputs": tuple(_resolve(base, p) for p in _as_list(data.pop("inputs"))),
            "work_dir": _resolve(base, raw.pop("work_dir", "nightly")),
            "log_format": data.pop("format", "gru4rec-tsv"),
            "source": {k: data.pop(k) for k in list(data) if k in SOURCE_KEYS},
            "prepare": {k: data.pop(k) for k in list(data) if k in PREPARE_KEYS},
            "preset": model.pop("preset", "rsc15"),
            "candidates": tuple(_as_list(model.pop("candidates", []))),
            "device": model.pop("device", "auto"),
            **{k: model.pop(k) for k in WARM_KEYS if k in model},
            "overrides": {k: _as_text(v) for k, v in dict(model.pop("set", {})).items()},
        }
        if "cutoffs" in evaluation:
            values["cutoffs"] = tuple(int(c) for c in _as_list(evaluation.pop("cutoffs")))
        values.update({k: evaluation.pop(k) for k in ("ties", "metric") if k in evaluation})
        values.update({k: serving.pop(k) for k in ("index", "k", "exclude_seen", "engine",
                                                   "keep_runs") if k in serving})  # fmt: skip
        known = {f.name for f in dataclasses.fields(cls)}
        for section, rest in (("", raw), ("data", data), ("model", model),
                              ("evaluation", evaluation), ("serving", serving)):  # fmt: skip
            for key in rest:
                if section or key not in known:
                    where = f"[{section}] " if section else ""
                    raise ConfigError(
                        f"{origin}: unknown key {where}{key!r}; see docs/nightly.example.toml."
                    )
        values.update(raw)
        config = cls(**values)
        config.validate(origin)
        return config

    def validate(self, origin: str) -> None:
        """Check everything that can be checked before any work starts."""
        resolve_spec(self.log_format, **self.source)
        PrepareOptions(**self.prepare)
        apply_overrides(get_preset(self.preset), self.overrides)
        if self.candidates:
            parse_candidates(",".join(self.candidates), self.preset)
            options = PrepareOptions(**self.prepare)
            if not (options.valid_fraction or options.valid_days or options.valid_days is None):
                raise ConfigError(
                    f"{origin}: [model] candidates are chosen on a validation split, but "
                    "[data] valid_days is 0; set valid_days (or valid_fraction) above 0."
                )
        if self.warm_start and self.candidates:
            raise ConfigError(
                f"{origin}: [model] warm_start trains GRU4Rec from the champion; it does not "
                "combine with candidates (model selection trains every family afresh)."
            )
        if not isinstance(self.warm_epochs, int) or self.warm_epochs < 1:
            raise ConfigError(f"{origin}: [model] warm_epochs must be an integer >= 1.")
        if not isinstance(self.warm_scratch_every, int) or self.warm_scratch_every < 0:
            raise ConfigError(f"{origin}: [model] warm_scratch_every must be an integer >= 0.")
        if self.warm_window_days is not None and not self.warm_window_days > 0:
            raise ConfigError(f"{origin}: [model] warm_window_days must be > 0 (days).")
        IndexOptions(kind=self.index)
        if self.ties not in TIE_MODES:
            raise ConfigError(f"{origin}: ties must be one of {', '.join(TIE_MODES)}.")
        name, _, cutoff = self.metric.partition("@")
        if (
            name not in ("recall", "mrr", "ndcg")
            or not cutoff.isdigit()
            or int(cutoff) not in self.cutoffs
        ):
            raise ConfigError(
                f"{origin}: metric {self.metric!r} must be recall@k, mrr@k or ndcg@k with k in "
                f"the cutoffs {list(self.cutoffs)}."
            )
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"{origin}: [serving] engine must be local or ray.")
        if self.k < 1 or self.keep_runs < 1:
            raise ConfigError(f"{origin}: [serving] k and keep_runs must be >= 1.")


def _resolve(base: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _as_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


@contextmanager
def _stage(name: str, report: Callable[[str], None], tracking_uri: str) -> Iterator[None]:
    """A nested MLflow run for one stage; an exception marks it (and the parent) FAILED
    and comes out as a StageError naming the stage (and, from training, the epoch)."""
    import mlflow

    try:
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.set_tag("stage", name)
            report(f"{name}: started")
            yield
    except Exception as error:
        if _is_tracking_failure(error):
            raise StageError(name, error, _TRACKING_DOWN.format(uri=tracking_uri)) from error
        if isinstance(error, Gru4RecError | OSError | ValueError | RuntimeError):
            raise StageError(name, error) from error
        raise  # anything else is a bug: its traceback stays
    report(f"{name}: done")


_TRACKING_DOWN = (
    " (the MLflow tracking server at {uri} did not answer; rerun when it is back: the next "
    "run marks this run's MLflow runs KILLED if they are left RUNNING)."
)


def _chained(error: BaseException | None, kind: type[StageError]) -> StageError | None:
    """The first `kind` error in `error`'s chain of causes and contexts."""
    while error is not None:
        if isinstance(error, kind):
            return error
        error = error.__cause__ or error.__context__
    return None


def _is_tracking_failure(error: BaseException) -> bool:
    """Whether `error` (or its cause) is MLflow failing to reach its tracking server."""
    import mlflow
    import requests

    while error is not None:
        if isinstance(error, requests.RequestException):
            return True
        if isinstance(error, mlflow.exceptions.MlflowException) and (
            "API request" in str(error) or "Max retries" in str(error)
        ):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def _connect(config: NightlyConfig) -> str:
    """Point MLflow at the tracking store and the experiment; a clear error if unreachable."""
    import mlflow

    from gru4rec import tracking

    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(config.experiment)
    except Exception as error:
        if not _is_tracking_failure(error):
            raise
        raise ConfigError(
            f"nightly: cannot reach the MLflow tracking server at {uri} ({_first_line(error)}). "
            "Start it, or point tracking_uri / MLFLOW_TRACKING_URI at a running one. Nothing "
            "was run."
        ) from error
    return uri


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


def _recover(
    config: NightlyConfig, previous: dict[str, Any], report: Callable[[str], None]
) -> None:
    """Clean up after runs that were killed: their unpublished run directories and
    temporary links, and their MLflow runs still RUNNING (marked KILLED)."""
    work_dir = config.work_dir
    current = (work_dir / "current").resolve() if (work_dir / "current").exists() else None
    if previous:
        report(f"recover: a run did not finish (pid {previous.get('pid', '?')}, started "
               f"{previous.get('started', '?')}); cleaning up after it")  # fmt: skip
    for stale in work_dir.glob(".current.tmp-*"):
        stale.unlink(missing_ok=True)
    runs = work_dir / "runs"
    for run_dir in sorted(runs.iterdir()) if runs.exists() else []:
        if run_dir.resolve() != current and not (run_dir / "summary.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            report(f"recover: removed the unfinished run directory {run_dir}")
    parent_id = previous.get("parent_run_id")
    if parent_id:
        import mlflow

        client = mlflow.MlflowClient()
        try:
            parent = client.get_run(parent_id)
        except mlflow.exceptions.MlflowException:
            return
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
        )
        for run in [parent, *children]:
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "KILLED")
                report(f"recover: marked MLflow run {run.info.run_id} "
                       f"({run.data.tags.get('mlflow.runName', '')}) KILLED")  # fmt: skip


def run_nightly(
    config: NightlyConfig, report: Callable[[str], None] = logger.info
) -> dict[str, Any]:
    """Run every stage; returns the summary also logged to the parent run.

    Takes the work directory's lock first (a second run at once is refused), cleans up
    after a killed run, and checks that the tracking server answers before any work.
    """
    with RunLock(config.work_dir / "nightly.lock") as lock:
        uri = _connect(config)
        _recover(config, lock.previous, report)
        return _run_stages(config, lock, uri, report)


def _run_stages(
    config: NightlyConfig, lock: RunLock, tracking_uri: str, report: Callable[[str], None]
) -> dict[str, Any]:
    import mlflow

    from gru4rec import tracking

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    run_dir = config.work_dir / "runs" / stamp
    run_dir.mkdir(parents=True)
    lock.note(run_dir=str(run_dir))
    evaluation = {"cutoffs": config.cutoffs, "ties": config.ties}
    summary: dict[str, Any] = {"run_dir": str(run_dir)}

    def stage(name: str) -> Any:
        return _stage(name, report, tracking_uri)

    try:
        with mlflow.start_run(run_name=f"nightly {stamp}"):
            parent_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
            lock.note(parent_run_id=parent_id)
            mlflow.set_tags({"job": "nightly", "registered_model": config.registered_model})
            mlflow.log_dict(_jsonable(dataclasses.asdict(config)), "nightly_config.json")

            with stage("prepare"):
                spec = resolve_spec(config.log_format, **config.source)
                mlflow.log_params(
                    {"inputs": ",".join(map(str, config.inputs)), "format": config.log_format}
                )
                manifest = prepare(config.inputs, run_dir / "data", spec,
                                   PrepareOptions(**config.prepare), format_name=config.log_format)  # fmt: skip
                mlflow.log_dict(manifest, "manifest.json")
                mlflow.log_metrics({f"{split}_{key}": value for split, counts in manifest["splits"].items()
                                    for key, value in counts.items()})  # fmt: skip

            with stage("train"):
                selected = _train(config, run_dir, parent_id, report)
                summary["family"] = selected.get("family", "gru4rec")
                summary["chosen"] = selected.get("chosen", f"gru4rec:{config.preset}")
                summary["warm_start"] = selected.get("warm_start")
                # Logged, not registered yet: the registry changes only in the publish stage.
                model_uri = tracking.log_model(run_dir / "model").model_uri

            with stage("evaluate"):
                scorer, items = load_scorer(run_dir / "model", device=config.device)
                new = evaluate_split(scorer, items, run_dir / "data", **evaluation)  # type: ignore[arg-type]
                tracking.log_test_metrics(new, prefix="new_")
                champion_dir, champion_version, old = _evaluate_champion(
                    config, run_dir, evaluation, summary, report
                )
                promote = old is None or new[config.metric] > old[config.metric]
                summary.update({
                    "metric": config.metric, "new": new[config.metric],
                    "champion": None if old is None else old[config.metric],
                    "champion_version": champion_version, "promote": promote,
                })  # fmt: skip
                mlflow.log_dict(summary, "decision.json")

            serving_dir = run_dir / "model" if promote or champion_dir is None else champion_dir
            with stage("index"):
                if serving_dir != run_dir / "model":  # serve the champion: a copy beside this run
                    shutil.copytree(serving_dir, run_dir / "champion_model")
                    serving_dir = run_dir / "champion_model"
                serving = Recommender.from_path(serving_dir, device="cpu", index="none")
                index_kind = config.index if serving.scorer.inner_product else "none"
                if index_kind == "none":
                    report(f"index: a {serving.scorer.family} model scores every item; no index")
                else:
                    index, folder = build_index(
                        serving_dir, IndexOptions(kind=config.index), data=run_dir / "data"
                    )
                    report(f"index: {config.index}, recall@20 against exact "
                           f"{index.meta['recall_at_20']:.4f}")  # fmt: skip
                    mlflow.log_metrics(tracking.numeric_metrics(
                        {f"index_{k}": v for k, v in index.meta.items()}))  # fmt: skip
                    mlflow.log_artifacts(str(folder), "index")

            with stage("recommend"):
                sessions, prepared = run_dir / "data" / "test.parquet", resolve_spec("prepared")
                if config.engine == "ray":
                    from gru4rec.jobs.ray_recommend import recommend_on_ray

                    output = run_dir / "recommendations"
                    recs = recommend_on_ray(str(serving_dir), sessions, prepared, output,
                                            k=config.k, exclude_seen=config.exclude_seen,
                                            device=config.device)  # fmt: skip
                else:
                    recommender = Recommender.from_path(
                        serving_dir, device=config.device, index=index_kind
                    )
                    output = run_dir / "recommendations.parquet"
                    recs = recommend_file(recommender, sessions, prepared, output, k=config.k,
                                          exclude_seen=config.exclude_seen)  # fmt: skip
                mlflow.log_metrics({f"recommend_{k}": float(v) for k, v in recs.items()})
                summary["recommendations"] = str(output)

            # The commit point: register the new version, write the summary, swap `current`,
            # then move the alias. A kill in between leaves `current` new and the alias old;
            # the next run compares against the champion again and decides afresh.
            with stage("publish"):
                version = mlflow.register_model(model_uri, config.registered_model).version
                summary["new_version"] = str(version)
                (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                _publish(config.work_dir, run_dir)
                if promote:
                    _move_alias(config, summary["new_version"])
                _prune(config.work_dir, config.keep_runs)
            mlflow.log_dict(summary, "summary.json")  # on the parent run
            mlflow.log_metrics(
                {
                    "promoted": float(promote),
                    f"new_{config.metric.replace('@', '_at_')}": new[config.metric],
                }
            )
    except BaseException as error:
        if (config.work_dir / "current").resolve() != run_dir.resolve():
            shutil.rmtree(run_dir, ignore_errors=True)  # never published
        if _is_tracking_failure(error):  # its MLflow runs may be left RUNNING
            lock.keep_record()
        # Ending the MLflow runs as FAILED fails too when the server is gone: that error
        # then hides the stage's own, which is the one to report.
        stage_error = _chained(error, StageError)
        if stage_error is not None and stage_error is not error:
            raise stage_error from None
        if _is_tracking_failure(error) and not isinstance(error, StageError):
            raise StageError("nightly", error, _TRACKING_DOWN.format(uri=tracking_uri)) from error
        raise
    return summary


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

    from gru4rec import tracking

    champion_version = _champion_version(config)
    if champion_version is None:
        return None, None, None
    try:
        champion_dir = _fetch(config, champion_version)
        champion = Recommender.from_path(champion_dir, device=config.device)
        old = evaluate_split(champion.scorer, _items(champion_dir), run_dir / "data",
                             **evaluation)  # fmt: skip
    except (Gru4RecError, OSError, ValueError, RuntimeError) as error:
        message = f"version {champion_version} cannot serve: {_first_line(error)}"
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

    from gru4rec import tracking

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
        train_tracked(data_dir, model_config, run_dir / "model", track=True, tags=tags,
                      device=config.device, warm_start=start, window_days=window)  # fmt: skip
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
        data_dir, run_dir / "model", parse_candidates(",".join(config.candidates), config.preset),
        overrides=config.overrides, metric=config.metric, ties=config.ties,  # type: ignore[arg-type]
        device=config.device, on_candidate=on_candidate,
    )  # fmt: skip
    mlflow.log_dict(_jsonable(result.to_json()), "selection.json")
    client.set_tag(parent_id, "chosen", result.chosen)
    report(f"train: chose {result.chosen} ({result.family}) on valid")
    return {"family": result.family, "chosen": result.chosen}


def _warm_start(
    config: NightlyConfig, wanted: GRU4RecConfig, report: Callable[[str], None]
) -> WarmStart | None:
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
        report(f"train: no warm start ({_first_line(error)}); training from scratch")
        return None
    every = config.warm_scratch_every
    if every and start.chain + 1 >= every:
        report(f"train: the champion is warm start {start.chain} in a row; training from "
               f"scratch (one night in {every}: warm_scratch_every)")  # fmt: skip
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
    from gru4rec.tracking import fetch_checkpoint

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
