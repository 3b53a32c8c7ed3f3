"""What a model family is: one object that says how it is fitted, saved, loaded and scored.

A family fits itself through a `Fitting` (the data and protocol of one selection, and the
fits its candidates share, made once: `gru4rec.jobs.selection` provides it), writes its
model directory through `save` and reads it back through `load`, without pickles. Every
other part of the product (the CLI's choices, `select`, `train --model`, the nightly job,
`recommend`, the pyfunc model) reads the registry in `gru4rec.serving.families`.

Model directories: `config.json` ({"format_version", "family", "n_items", "extra", and
what `describe` adds}), `items.parquet`, and what `write` adds, all written to a temporary
sibling and renamed into place.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import polars as pl

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import SessionData
from gru4rec.options import TieMode
from gru4rec.scoring.baselines import Baseline
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.neural import GRU4RecScorer
from gru4rec.serving.checkpoint import staged_model_dir

FORMAT_VERSION = 1
SESSIONS_FILE = "sessions.npz"  # the sessions a family refits its counts from when loaded
GRU_DIR = "gru4rec"  # the GRU4Rec checkpoint inside a family that builds on one

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    """One entry of a candidate list: a family and, for families that train GRU4Rec, a preset."""

    family: str
    preset: str | None = None

    @property
    def name(self) -> str:
        return self.family if self.preset is None else f"{self.family}:{self.preset}"

    @property
    def preset_name(self) -> str:
        """The GRU4Rec preset (an error for a family that takes none)."""
        if self.preset is None:
            raise ConfigError(f"candidate {self.name} has no GRU4Rec preset")
        return self.preset


class Fitting(Protocol):
    """What a family fits with: the splits of one prepared log, the protocol's settings, and
    fits shared between candidates (each made once, its cost charged to every user)."""

    @property
    def metric(self) -> str:
        """What selection maximises on valid, e.g. mrr@20."""
        ...

    @property
    def ties(self) -> TieMode: ...

    @property
    def cutoffs(self) -> tuple[int, ...]: ...

    @property
    def seed(self) -> int: ...

    @property
    def threads(self) -> int | None: ...

    @property
    def settings(self) -> Mapping[str, str]:
        """`--set` values for every GRU4Rec preset."""
        ...

    @property
    def n_items(self) -> int: ...

    def split(self, name: str) -> SessionData:
        """The sessions of `name` (train_tr, valid, train; never test)."""
        ...

    def baseline(self, name: str, split: str) -> Baseline:
        """The baseline `name` with its defaults, fitted on `split`."""
        ...

    def trained(self, config: GRU4RecConfig, split: str, key: tuple[str, ...]) -> GRU4RecScorer:
        """GRU4Rec (of the network `config` describes) trained on `split`; `key` names the fit."""
        ...

    def shared(self, key: tuple[str, ...], make: Callable[[], T]) -> T:
        """`make()`, made once for every candidate that asks for `key`."""
        ...

    def score_on_valid(self, scorer: SessionScorer) -> dict[str, Any]:
        """The metrics of `scorer` on the validation split."""
        ...


class Family(ABC):
    """A model family: its name, what it can do, and how it is fitted, saved and loaded.

    Subclasses set the class attributes and implement `fit` and `load`; a family whose
    fitting chooses something on the validation split overrides `score_on_valid` too.
    """

    name: str
    scorer_type: type[SessionScorer]
    takes_preset: ClassVar[bool] = False  # trains GRU4Rec with a preset (`family:PRESET`)
    chosen_on_valid: ClassVar[bool] = False  # its fitting learns or chooses on valid
    warm_start: ClassVar[bool] = False  # trained epoch by epoch from an earlier model's weights

    @property
    def inner_product(self) -> bool:
        """Scores are inner products: a FAISS index returns its exact top k."""
        return self.scorer_type.inner_product

    @property
    def candidates(self) -> bool:
        """It orders candidates that a FAISS index retrieves (`recommend --index`)."""
        return self.scorer_type.index_candidates

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        """Fitted on train_tr, its metrics on valid (and anything chosen there, which
        `fit` gets back as `chosen`)."""
        return fitting.score_on_valid(self.fit(candidate, fitting, "train_tr", {}))

    @abstractmethod
    def fit(
        self, candidate: Candidate, fitting: Fitting, split: str, chosen: Mapping[str, Any]
    ) -> SessionScorer:
        """Fitted on `split` with what `score_on_valid` chose (`chosen`)."""

    def save(
        self,
        model_dir: Path,
        scorer: SessionScorer,
        items: pl.DataFrame,
        *,
        train_data: SessionData | None,
        extra: Mapping[str, Any],
    ) -> Path:
        """Write the model directory atomically; `train_data`: the sessions it was fitted on."""
        meta = {
            "format_version": FORMAT_VERSION,
            "family": self.name,
            "n_items": scorer.n_items,
            "extra": dict(extra),
            **self.describe(scorer),
        }
        with staged_model_dir(model_dir, meta, items) as staging:
            self.write(scorer, staging, items, train_data)
        return model_dir

    def describe(self, scorer: SessionScorer) -> dict[str, Any]:
        """What config.json says of the model beyond the common fields."""
        return {}

    def write(
        self,
        scorer: SessionScorer,
        staging: Path,
        items: pl.DataFrame,
        train_data: SessionData | None,
    ) -> None:
        """Write the model's own files into `staging` (none by default: config.json and
        items.parquet are written for every family)."""
        return None

    @abstractmethod
    def load(
        self, model_dir: Path, meta: Mapping[str, Any], items: pl.DataFrame, device: str
    ) -> SessionScorer:
        """The scorer saved in `model_dir` (`meta`: its config.json) on `device`."""

    def network_dir(self, model_dir: Path) -> Path | None:
        """The GRU4Rec checkpoint inside `model_dir` (a warm start's source), if it has one."""
        return None

    def configure(self, config: GRU4RecConfig) -> GRU4RecConfig:
        """The settings this family trains GRU4Rec with, from `config` (families that train
        epoch by epoch)."""
        return config


def write_sessions(staging: Path, data: SessionData | None, family: str) -> None:
    """The sessions a family was fitted on, as plain arrays (read with allow_pickle=False)."""
    if data is None:
        raise CheckpointError(f"saving {family} needs the sessions it was fitted on")
    np.savez(staging / SESSIONS_FILE, item_idx=data.item_idx, session_offsets=data.session_offsets)


def read_sessions(model_dir: Path, family: str) -> SessionData:
    """The sessions `write_sessions` saved, or an error naming the file."""
    path = model_dir / SESSIONS_FILE
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return SessionData(arrays["item_idx"], arrays["session_offsets"])
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} is missing or corrupt ({error}); save the {family} model again."
        ) from error


def baseline_params(baseline: Baseline) -> dict[str, Any]:
    """A baseline's hyperparameters, as saved."""
    return {f.name: getattr(baseline, f.name) for f in dataclasses.fields(baseline)}  # type: ignore[arg-type]


__all__ = [
    "GRU_DIR",
    "SESSIONS_FILE",
    "Candidate",
    "Family",
    "Fitting",
    "baseline_params",
    "read_sessions",
    "write_sessions",
]
