"""MLflow tracking, attached from the outside: the library trains without it.

- `resolve_tracking_uri`: `--tracking-uri`, else `MLFLOW_TRACKING_URI`, else an SQLite
  file `mlflow.db` in the working directory (an embedded store, no server needed).
- `MlflowCallback`: logs the configuration, per-epoch loss, throughput and validation
  metrics of `gru4rec.network.train.fit`.
- `log_model`: logs a checkpoint directory and an MLflow pyfunc model (defined as code in
  `gru4rec/serving/mlflow_model.py`, so loading it unpickles nothing), optionally registered.

MLflow metric names cannot hold '@', so `recall@20` is logged as `recall_at_20`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gru4rec.errors import CheckpointError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.train import Callback, EpochStats, FitResult

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "gru4rec"
# MLflow's advice on choices made on purpose, which it would print on every training run:
# the signature is given explicitly (so no input example, and no type hints on `predict`,
# which MLflow would turn into a second signature), and item ids are never missing (so
# integer columns are right).
_MLFLOW_ADVICE = re.compile(
    "An input example was not provided|Add type hints to the `predict` method"
    "|Hint: Inferred schema contains integer column"
)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: the argument, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def metric_key(name: str, prefix: str = "") -> str:
    """An MLflow-safe metric name: 'recall@20' -> 'recall_at_20', with an optional prefix."""
    return prefix + name.replace("@", "_at_")


def numeric_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries of an evaluation result, under MLflow-safe names."""
    return {
        metric_key(name, prefix): float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def config_params(config: GRU4RecConfig) -> dict[str, str]:
    """The configuration as MLflow parameters (lists as comma-separated text)."""
    return {
        key: ",".join(map(str, value)) if isinstance(value, list) else str(value)
        for key, value in config.to_dict().items()
    }


def log_validation(epoch: int, metrics: Mapping[str, Any]) -> None:
    """Log per-epoch validation metrics as `valid_<metric>` (e.g. `valid_mrr_at_20`)."""
    import mlflow

    mlflow.log_metrics(numeric_metrics(metrics, prefix="valid_"), step=epoch)


class MlflowCallback(Callback):
    """Logs a `fit` into the active MLflow run: parameters, per-epoch loss and speed."""

    def on_train_start(self, config: GRU4RecConfig) -> None:
        import mlflow

        mlflow.log_params(config_params(config))

    def on_epoch_end(self, epoch: int, stats: EpochStats) -> None:
        import mlflow

        metrics = {
            "train_loss": stats.loss,
            "train_events_per_s": stats.events_per_s,
            "epoch_seconds": stats.seconds,
        }
        mlflow.log_metrics(metrics, step=epoch)

    def on_train_end(self, result: FitResult) -> None:
        import mlflow

        seconds = sum(epoch.seconds for epoch in result.epochs)
        events = sum(epoch.n_events for epoch in result.epochs)
        # Overall throughput over the epochs alone: set-up and evaluation excluded.
        mlflow.log_metrics(
            {
                "events_per_s": events / seconds if seconds > 0 else 0.0,
                "train_seconds": seconds,
                "final_train_loss": result.final_loss,
            }
        )
        if result.diverging_epoch is not None:  # searchable: tags.diverging_epoch != ''
            mlflow.set_tag("diverging_epoch", str(result.diverging_epoch))


def log_inputs(data_dir: Path, tags: Mapping[str, str]) -> None:
    """Tag the run with its data directory and log the data's manifest."""
    import json

    import mlflow

    mlflow.set_tags({**tags, "data_dir": str(Path(data_dir).resolve())})
    manifest = Path(data_dir) / "manifest.json"
    if manifest.exists():
        mlflow.log_dict(json.loads(manifest.read_text()), "data/manifest.json")


def log_test_metrics(metrics: Mapping[str, Any], prefix: str = "test_") -> None:
    """Log final metrics (MLflow-safe names) and the full result as JSON."""
    import mlflow

    mlflow.log_metrics(numeric_metrics(metrics, prefix=prefix))
    mlflow.log_dict(dict(metrics), f"metrics/{prefix.rstrip('_') or 'metrics'}.json")


def start_run(
    tracking_uri: str | None, experiment: str, run_name: str | None = None, nested: bool = False
) -> Any:
    """Point MLflow at the store and start a run (use as a context manager)."""
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=run_name, nested=nested)


def log_model(model_dir: Path, registered_name: str | None = None) -> Any:
    """Log the checkpoint files and the pyfunc model into the active run.

    Returns MLflow's ModelInfo (`model_uri`, and `registered_model_version` when registered).
    """
    import mlflow
    import pandas as pd
    import polars as pl
    from mlflow.types.schema import AnyType, ColSpec, Schema

    model_dir = Path(model_dir)
    mlflow.log_artifacts(str(model_dir), artifact_path="checkpoint")
    # The signature declares the params, without which MLflow ignores them; the example
    # uses the model's own ids, so the declared item type (integer or text) is right.
    example_ids = pl.read_parquet(model_dir / "items.parquet")["item_id"].head(2).to_list()
    example = pd.DataFrame({"items": [example_ids]})
    output = pd.DataFrame(
        {"session": [0], "rank": [1], "item_id": example_ids[:1], "score": [0.0], "note": [""]}
    ).astype({"rank": "int32", "score": "float32"})
    code = Path(__file__).with_name("mlflow_model.py")
    with _without_mlflow_advice():
        signature = mlflow.models.infer_signature(
            example, output, params={"k": 20, "exclude_seen": False}
        )
        # `items` (and an optional `session_id`) of any type: MLflow's schema enforcement
        # cannot take lists of ids in the `instances` and `inputs` forms, so the model
        # checks its input itself (gru4rec.serving.mlflow_model.parse_sessions).
        signature.inputs = Schema(
            [ColSpec(AnyType(), "items"), ColSpec(AnyType(), "session_id", required=False)]
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"model_dir": str(model_dir)},
            signature=signature,
            registered_model_name=registered_name,
            pip_requirements=serving_requirements(),
            code_paths=[str(Path(__file__).parents[1])],  # the gru4rec package
        )
    return info


TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# What `predict` imports besides torch (gru4rec itself travels as code with the model).
SERVING_LIBRARIES = ("numpy", "polars", "pyarrow", "pandas", "mlflow", "faiss-cpu")


def serving_requirements() -> list[str]:
    """The logged model's pip requirements, pinned to the versions installed here.

    torch is the CPU build from PyTorch's CPU index: a bare `torch` resolves on PyPI to the
    multi-GB CUDA build, which `mlflow models serve` (default environment manager) or
    `mlflow models build-docker` would otherwise install to serve a CPU model.
    """
    import sys
    from importlib.metadata import version

    import torch

    base = torch.__version__.split("+")[0]
    lines = []
    if sys.platform.startswith("linux"):
        lines += [f"--extra-index-url {TORCH_CPU_INDEX}", f"torch=={base}+cpu"]
    else:  # macOS and Windows wheels on PyPI are CPU builds already
        lines.append(f"torch=={base}")
    return lines + [f"{name}=={version(name)}" for name in SERVING_LIBRARIES]


@contextmanager
def _without_mlflow_advice() -> Iterator[None]:
    """Drop `_MLFLOW_ADVICE` warnings, passing every other warning on. A filter would not do:
    `mlflow.pyfunc.log_model` installs its own ("once" for every UserWarning) over ours."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if not _MLFLOW_ADVICE.search(str(message)):
            shown(message, category, *rest, **kw)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def fetch_checkpoint(model: str) -> Path:
    """A model directory as given, or the checkpoint inside an MLflow model or run artifact
    (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/RUN_ID/model`), downloaded."""
    path = Path(model)
    if path.exists():
        return path
    if ":/" not in model:
        raise CheckpointError(
            f"model {model}: no such directory, and not an MLflow URI (models:/..., runs:/...)."
        )
    import tempfile

    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri())
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=tempfile.mkdtemp())
    except Exception as error:  # MLflow raises several types for unknown names and runs
        raise CheckpointError(f"model {model}: cannot be fetched from MLflow ({error}).") from None
    # The shallowest model directory: a hybrid holds a GRU4Rec checkpoint inside its own.
    found = sorted(
        (
            p.parent
            for p in Path(local).rglob("config.json")
            if (p.parent / "items.parquet").exists()
        ),
        key=lambda folder: (len(folder.parts), str(folder)),
    )
    if not found:
        raise CheckpointError(f"model {model}: the MLflow artifacts hold no model directory.")
    return found[0]
