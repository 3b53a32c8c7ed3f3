"""GRU4Rec and the repeat-aware GRU4Rec as families: trained epoch by epoch (from scratch
or from an earlier model's weights), saved as the checkpoint of `gru4rec.serving.checkpoint`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import CheckpointError
from gru4rec.network.config import GRU4RecConfig, apply_overrides, get_preset
from gru4rec.network.data import SessionData
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.neural import GRU4RecScorer, RepeatGRU4RecScorer, as_scorer
from gru4rec.serving.checkpoint import load_checkpoint, save_checkpoint
from gru4rec.serving.families.base import Candidate, Family, Fitting

DEFAULT_REPEAT_WINDOW = 10  # items of the session the repeat-aware GRU4Rec looks back on


class NetworkFamily(Family):
    """GRU4Rec with a preset; `repeat`: the repeat-aware one (`gru4rec.network.repeat`),
    whose window is `repeat_window` (DEFAULT_REPEAT_WINDOW unless set)."""

    takes_preset = True
    warm_start = True

    def __init__(self, name: str, *, repeat: bool) -> None:
        self.name, self.repeat = name, repeat
        self.scorer_type = RepeatGRU4RecScorer if repeat else GRU4RecScorer

    def preset_config(self, preset: str, settings: Mapping[str, str]) -> GRU4RecConfig:
        """The preset with the settings: `repeat_window` applies to the repeat-aware family
        alone (the same settings go to every candidate of a selection)."""
        values = dict(settings)
        if not self.repeat:
            values.pop("repeat_window", None)
        return self.configure(apply_overrides(get_preset(preset), values))

    def configure(self, config: GRU4RecConfig) -> GRU4RecConfig:
        if self.repeat and config.repeat_window == 0:
            return apply_overrides(config, {"repeat_window": str(DEFAULT_REPEAT_WINDOW)})
        return config

    def network(self, fitting: Fitting, preset: str, split: str) -> GRU4RecScorer:
        """This family's network with `preset` and the fitting's settings, trained on `split`."""
        config = self.preset_config(preset, fitting.settings)
        return fitting.trained(config, split, (self.name, preset, split))

    def fit(
        self, candidate: Candidate, fitting: Fitting, split: str, chosen: Mapping[str, Any]
    ) -> SessionScorer:
        return self.network(fitting, candidate.preset_name, split)

    def save(
        self,
        model_dir: Path,
        scorer: SessionScorer,
        items: pl.DataFrame,
        *,
        train_data: SessionData | None,
        extra: Mapping[str, Any],
    ) -> Path:
        assert isinstance(scorer, GRU4RecScorer)
        return save_checkpoint(model_dir, scorer.model, network_config(scorer), items, dict(extra))

    def load(
        self, model_dir: Path, meta: Mapping[str, Any], items: pl.DataFrame, device: str
    ) -> SessionScorer:
        model, config, _items = load_checkpoint(model_dir, device=device, items=items)
        return as_scorer(model, config)

    def network_dir(self, model_dir: Path) -> Path | None:
        return model_dir


def network_config(scorer: GRU4RecScorer) -> GRU4RecConfig:
    """The settings a GRU4Rec scorer was trained with (needed to save it)."""
    if scorer.config is None:
        raise CheckpointError("a GRU4Rec scorer needs its config to be saved")
    return scorer.config


GRU4REC = NetworkFamily("gru4rec", repeat=False)
REPEAT = NetworkFamily("repeat", repeat=True)

__all__ = ["DEFAULT_REPEAT_WINDOW", "GRU4REC", "REPEAT", "NetworkFamily", "network_config"]
