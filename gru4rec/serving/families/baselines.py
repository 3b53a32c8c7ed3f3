"""The baselines (pop, spop, iknn, sknn, vsknn) as families: fitted by counting, saved as
their parameters and the training sessions, refitted from them when loaded (seconds)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import BASELINES, Baseline, fit_baseline
from gru4rec.scoring.contract import SessionScorer
from gru4rec.serving.checkpoint import resolve_device
from gru4rec.serving.families.base import (
    Candidate,
    Family,
    Fitting,
    baseline_params,
    read_sessions,
    write_sessions,
)


class BaselineFamily(Family):
    """One baseline of `gru4rec.scoring.baselines`, with its defaults."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scorer_type = BASELINES[name]

    def fit(
        self, candidate: Candidate, fitting: Fitting, split: str, chosen: Mapping[str, Any]
    ) -> SessionScorer:
        return fitting.baseline(self.name, split)

    def describe(self, scorer: SessionScorer) -> dict[str, Any]:
        assert isinstance(scorer, Baseline)
        return {"params": baseline_params(scorer)}

    def write(
        self,
        scorer: SessionScorer,
        staging: Path,
        items: pl.DataFrame,
        train_data: SessionData | None,
    ) -> None:
        write_sessions(staging, train_data, self.name)

    def load(
        self, model_dir: Path, meta: Mapping[str, Any], items: pl.DataFrame, device: str
    ) -> SessionScorer:
        resolve_device(device)  # a bad device is an error for every family
        data = read_sessions(model_dir, self.name)
        return fit_baseline(self.name, data, items.height, **meta["params"])


__all__ = ["BaselineFamily"]
