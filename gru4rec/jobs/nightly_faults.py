"""What the nightly job does about faults: a tracking server that does not answer (at the
start: a clear error and nothing run; in the middle: the stage's error, with advice), and
the cleanup after a run that was killed (its unpublished directories, its MLflow runs
left RUNNING)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from gru4rec.errors import ConfigError, StageError
from gru4rec.jobs.nightly_config import NightlyConfig

TRACKING_DOWN = (
    " (the MLflow tracking server at {uri} did not answer; rerun when it is back: the next "
    "run marks this run's MLflow runs KILLED if they are left RUNNING)."
)


def chained_error(error: BaseException | None, kind: type[StageError]) -> StageError | None:
    """The first `kind` error in `error`'s chain of causes and contexts."""
    while error is not None:
        if isinstance(error, kind):
            return error
        error = error.__cause__ or error.__context__
    return None


def is_tracking_failure(error: BaseException) -> bool:
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


def connect(config: NightlyConfig) -> str:
    """Point MLflow at the tracking store and the experiment; a clear error if unreachable."""
    import mlflow

    from gru4rec.serving import tracking

    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(config.experiment)
    except Exception as error:
        if not is_tracking_failure(error):
            raise
        raise ConfigError(
            f"nightly: cannot reach the MLflow tracking server at {uri} ({first_line(error)}). "
            "Start it, or point tracking_uri / MLFLOW_TRACKING_URI at a running one. Nothing "
            "was run."
        ) from error
    return uri


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


def recover(config: NightlyConfig, previous: dict[str, Any], report: Callable[[str], None]) -> None:
    """Clean up after runs that were killed: their unpublished run directories and
    temporary links, and their MLflow runs still RUNNING (marked KILLED)."""
    work_dir = config.work_dir
    current = (work_dir / "current").resolve() if (work_dir / "current").exists() else None
    if previous:
        report(
            f"recover: a run did not finish (pid {previous.get('pid', '?')}, started "
            f"{previous.get('started', '?')}); cleaning up after it"
        )
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
                report(
                    f"recover: marked MLflow run {run.info.run_id} "
                    f"({run.data.tags.get('mlflow.runName', '')}) KILLED"
                )


__all__ = [
    "TRACKING_DOWN",
    "chained_error",
    "connect",
    "first_line",
    "is_tracking_failure",
    "recover",
]
