"""`train_model` as a tracked MLflow run: what `gru4rec train`, `tune` and the nightly job run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.jobs.train_evaluate import train_model
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.model import GRU4Rec
from gru4rec.network.train import Callback, FitResult
from gru4rec.serving import tracking


def train_tracked(
    data_dir: Path,
    config: GRU4RecConfig,
    out_dir: Path,
    *,
    track: bool,
    tags: Mapping[str, str] | None = None,
    callbacks: Sequence[Callback] = (),
    on_validation: Callable[[int, dict[str, Any]], None] | None = None,
    **options: Any,
) -> tuple[GRU4Rec, pl.DataFrame, FitResult]:
    """`train_model` as a tracked run: what `gru4rec train`, `tune` and the nightly job run.

    With `track`, inside the active MLflow run: `tags` and the data's manifest (when tags
    are given), the config as parameters, per-epoch loss and speed, and per-epoch
    `valid_*` metrics (with `valid_split` among `options`). `on_validation` is called
    either way. Other options: as `train_model`.
    """
    callbacks = list(callbacks)
    report = on_validation
    if track:
        if tags is not None:
            tracking.log_inputs(data_dir, tags)
        callbacks.append(tracking.MlflowCallback())

        def report(epoch: int, metrics: dict[str, Any]) -> None:
            tracking.log_validation(epoch, metrics)
            if on_validation is not None:
                on_validation(epoch, metrics)

    return train_model(
        data_dir, config, out_dir, callbacks=callbacks, on_validation=report, **options
    )


__all__ = ["train_tracked"]
