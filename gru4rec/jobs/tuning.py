"""Hyperparameter search with Optuna on a validation split (never on test).

A space is a list of `Dimension`s, written on the command line as `key=low:high` (uniform;
integers when both ends are), `key=low:high:log` (log-uniform) or `key=a|b|c` (a choice).
The default is the authors' own space for the preset's loss (`authors_space`): cross-entropy
and BPR-max are searched apart, and `bpreg` and the final ELU only for BPR-max. Each trial
trains on `train_tr` and is scored on `valid` after every epoch; TPE proposes the next
configuration, and the median pruner stops a trial whose validation metric falls below the
median of earlier trials at the same epoch. `jobs` worker processes share one study through
an Optuna storage (an SQLite file by default; a PostgreSQL URL lets workers on several
machines share it), and each trial can be logged as a nested MLflow run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gru4rec.errors import ConfigError
from gru4rec.network.config import GRU4RecConfig, apply_overrides

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a numeric range or a list of choices."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False  # sample uniformly in log space (learning rates)
    integer: bool = False
    choices: tuple[str, ...] = ()

    def suggest(self, trial: Any) -> str:
        """The value an Optuna trial proposes, as a `--set` string."""
        if self.choices:
            return str(trial.suggest_categorical(self.name, list(self.choices)))
        if self.integer:
            return str(trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log))
        value = trial.suggest_float(self.name, self.low, self.high, log=self.log)
        return f"{value:.4g}"


# The authors' search space (200 trials each, optimising MRR@20 on validation); bpreg and
# the final ELU belong to BPR-max only.
SHARED_SPACE: tuple[Dimension, ...] = (
    Dimension("layers", 64, 512, integer=True),
    Dimension("batch_size", 32, 256, integer=True),
    Dimension("learning_rate", 0.01, 0.25, log=True),
    Dimension("dropout_p_embed", 0.0, 0.5),
    Dimension("dropout_p_hidden", 0.0, 0.7),
    Dimension("momentum", 0.0, 0.9),
    Dimension("sample_alpha", 0.0, 1.0),
)
BPR_MAX_ONLY: tuple[Dimension, ...] = (
    Dimension("bpreg", 0.0, 2.0),
    Dimension("elu_param", choices=("0", "0.5", "1")),
)
AUTHORS_SPACE = SHARED_SPACE + BPR_MAX_ONLY


def authors_space(base: GRU4RecConfig) -> tuple[Dimension, ...]:
    """The authors' space for the base configuration's loss."""
    return SHARED_SPACE + (BPR_MAX_ONLY if base.loss == "bpr-max" else ())


def parse_dimension(text: str) -> Dimension:
    """`key=low:high[:log]` or `key=a|b|c`."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise ConfigError(f"--space takes key=low:high, key=low:high:log or key=a|b; got {text!r}.")
    if "|" in spec:
        return Dimension(name, choices=tuple(spec.split("|")))
    parts = spec.split(":")
    try:
        low, high = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise ConfigError(f"--space {text!r}: the range must be two numbers, low:high.") from None
    log = parts[2:] == ["log"]
    if len(parts) > 3 or (len(parts) == 3 and not log) or low > high or (log and low <= 0):
        raise ConfigError(f"--space {text!r}: expected low <= high (and > 0 with :log).")
    integer = parts[0].lstrip("-").isdigit() and parts[1].lstrip("-").isdigit()
    return Dimension(name, low, high, log=log, integer=integer)


@dataclass(frozen=True)
class Trial:
    number: int
    overrides: dict[str, str]
    metrics: dict[str, Any]  # the last epoch's validation metrics
    state: str  # COMPLETE or PRUNED
    epochs: int  # epochs trained


@dataclass(frozen=True)
class Study:
    """An Optuna study to run or continue (`gru4rec tune`'s options).

    trials: finished (completed or pruned) trials it should hold; jobs: worker processes;
    storage: its Optuna storage URL (None: beside an SQLite MLflow store, else ./optuna.db);
    name: its name (None: tune-PRESET-DATA); prune: stop trials below the median early.
    """

    trials: int = 20
    jobs: int = 1
    storage: str | None = None
    name: str | None = None
    prune: bool = True


@dataclass(frozen=True)
class TrackingTarget:
    """Where workers log each trial: a nested run under `parent_run_id`."""

    tracking_uri: str
    experiment: str
    parent_run_id: str


def default_storage(tracking_uri: str | None) -> str:
    """An SQLite file beside an SQLite MLflow store, else `optuna.db` in the working directory."""
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).with_name('optuna.db')}"
    return "sqlite:///optuna.db"


def optuna_search(
    data_dir: Path,
    base: GRU4RecConfig,
    space: Sequence[Dimension],
    *,
    trials: int,
    metric: str = "mrr@20",
    jobs: int = 1,
    storage: str = "sqlite:///optuna.db",
    study_name: str = "gru4rec",
    seed: int = 0,
    prune: bool = True,
    device: str = "auto",
    tracking: TrackingTarget | None = None,
) -> list[Trial]:
    """Run (or continue) the study until it holds `trials` finished (completed or pruned)
    trials; best first. With several workers, those still running a trial when the count is
    reached finish it, so the study can end with up to `jobs - 1` more.

    Trials run in `jobs` worker processes (one torch thread each) sharing `storage`; a
    study of the same name already in the storage is continued, so workers started on
    other machines against the same storage add to it.
    """
    import optuna

    for split in ("train_tr", "valid"):
        if not (Path(data_dir) / f"{split}.parquet").exists():
            raise ConfigError(
                f"{data_dir} has no {split}.parquet: tuning needs a validation split; prepare "
                "with --valid-days or --valid-fraction."
            )
    if jobs < 1 or trials < 1:
        raise ConfigError(f"--trials and --jobs must be >= 1; got {trials} and {jobs}.")
    names = [d.name for d in space]
    if len(set(names)) != len(names):
        raise ConfigError(f"--space names a setting twice: {names}.")
    for dimension in space:  # the ends of every dimension must be valid settings
        ends = dimension.choices or (dimension.low, dimension.high)
        for end in ends:
            value = str(int(end)) if dimension.integer else str(end)
            apply_overrides(base, {dimension.name: value})
    try:
        optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize", load_if_exists=True
        )
    except Exception as error:  # bad URLs and unreachable databases come in many types
        raise ConfigError(
            f"--storage {storage!r}: cannot open the Optuna study ({error})."
        ) from None
    job = {
        "data_dir": str(data_dir),
        "base": base.to_dict(),
        "space": [vars(d) for d in space],
        "trials": trials,
        "metric": metric,
        "storage": storage,
        "study_name": study_name,
        "prune": prune,
        "device": device,
        "tracking": None if tracking is None else vars(tracking),
    }
    if jobs == 1:
        _worker({**job, "seed": seed, "threads": None})
    else:
        context = multiprocessing.get_context("spawn")  # fresh interpreters, not forks of torch
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            list(
                pool.map(
                    _worker, [{**job, "seed": seed + rank, "threads": 1} for rank in range(jobs)]
                )
            )
    study = optuna.load_study(storage=storage, study_name=study_name)
    return _finished(study, metric)


def _finished(study: Any, metric: str) -> list[Trial]:
    from optuna.trial import TrialState

    found = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        metrics = json.loads(frozen.user_attrs.get("metrics", "{}"))
        if metric not in metrics:
            continue
        found.append(
            Trial(
                frozen.number,
                dict(json.loads(frozen.user_attrs["overrides"])),
                metrics,
                frozen.state.name,
                int(frozen.user_attrs.get("epochs", 0)),
            )
        )
    # Completed trials first (a pruned trial's metric is from an earlier epoch), best first.
    return sorted(found, key=lambda t: (t.state != "COMPLETE", -t.metrics[metric]))


def _worker(job: dict[str, Any]) -> None:
    """One worker: optimise the shared study until it holds `trials` finished trials."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = GRU4RecConfig.from_dict(job["base"])
    space = [Dimension(**{**d, "choices": tuple(d["choices"])}) for d in job["space"]]
    # Prune from the third trial on, never in a trial's first epoch (too noisy to judge).
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if job["prune"]
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(
        storage=job["storage"],
        study_name=job["study_name"],
        sampler=optuna.samplers.TPESampler(seed=job["seed"]),
        pruner=pruner,
    )
    done = MaxTrialsCallback(job["trials"], states=(TrialState.COMPLETE, TrialState.PRUNED))
    if (
        len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        >= job["trials"]
    ):
        return
    study.optimize(lambda trial: _objective(trial, job, base, space), callbacks=[done])


def _objective(
    trial: Any, job: dict[str, Any], base: GRU4RecConfig, space: list[Dimension]
) -> float:
    import optuna

    from gru4rec.jobs.tracked_training import train_tracked

    overrides = {d.name: d.suggest(trial) for d in space}
    config = apply_overrides(base, overrides)
    metric = job["metric"]
    cutoff = int(metric.partition("@")[2] or 20)
    trial.set_user_attr("overrides", json.dumps(overrides))
    last: dict[str, Any] = {}

    def on_validation(epoch: int, metrics: dict[str, Any]) -> None:
        last.update(metrics)
        trial.set_user_attr(
            "metrics",
            json.dumps({k: v for k, v in metrics.items() if isinstance(v, int | float | str)}),
        )
        trial.set_user_attr("epochs", epoch + 1)
        trial.report(metrics[metric], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch + 1}: {metric} {metrics[metric]:.4f}")

    pruned: optuna.TrialPruned | None = None
    with _trial_run(job["tracking"], trial.number), tempfile.TemporaryDirectory() as scratch:
        track = job["tracking"] is not None
        if track:
            import mlflow

            mlflow.set_tags({f"searched.{key}": value for key, value in overrides.items()})
        try:
            train_tracked(
                Path(job["data_dir"]),
                config,
                Path(scratch) / "model",
                track=track,
                split="train_tr",
                device=job["device"],
                num_threads=job["threads"],
                valid_split="valid",
                on_validation=on_validation,
                cutoffs=(1, 5, 10, cutoff),
            )
        except optuna.TrialPruned as stop:
            pruned = stop  # raised after the MLflow run has ended normally, tagged as pruned
        if job["tracking"] is not None:
            import mlflow

            mlflow.set_tag("trial_state", "PRUNED" if pruned else "COMPLETE")
            mlflow.log_metrics(
                {
                    f"valid_{k.replace('@', '_at_')}": float(v)
                    for k, v in last.items()
                    if isinstance(v, float)
                }
            )
    if pruned is not None:
        logger.info("trial %d pruned: %s", trial.number, pruned)
        raise pruned
    logger.info("trial %d: %s %.4f %s", trial.number, metric, last[metric], overrides)
    return float(last[metric])


def _trial_run(target: dict[str, Any] | None, number: int) -> Any:
    from contextlib import nullcontext

    if target is None:
        return nullcontext()
    import mlflow

    mlflow.set_tracking_uri(target["tracking_uri"])
    mlflow.set_experiment(target["experiment"])
    return mlflow.start_run(
        run_name=f"trial {number + 1}", nested=True, parent_run_id=target["parent_run_id"]
    )
