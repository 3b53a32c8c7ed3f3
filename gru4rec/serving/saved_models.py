"""Model directories of every family, saved and loaded without unpickling anything.

    gru4rec    the checkpoint of `gru4rec.serving.checkpoint` (weights.pt, config.json,
               items.parquet)
    repeat     the same checkpoint of the repeat-aware GRU4Rec (config repeat_window > 0)
    baselines  config.json {"family": NAME, "params": {...}}, items.parquet, and
               sessions.npz: the training sessions (item indices and session offsets, read
               with allow_pickle=False); the baseline is refitted from them when loaded
               (seconds: fitting is counting)
    hybrid     config.json {"family": "hybrid", "weights": {...}, "knn": {...} or null},
               items.parquet, gru4rec/ (a GRU4Rec checkpoint), and sessions.npz when it
               has a kNN component
    ranker     config.json {"family": "ranker", "weights": {...}, "baselines": {NAME:
               params}, "sizes": {...}, "features": [...]}, items.parquet, gru4rec/,
               sessions.npz (the baselines and popularity are refitted from them), and
               ranker.txt (the LightGBM model in its text format)

`config.json` names the family; a directory without the key is a GRU4Rec checkpoint.
Every directory is written to a temporary sibling and renamed into place.

Example:
    >>> save_scorer("models/spop", scorer, items, train_data=train)
    >>> scorer, items = load_scorer("models/spop")
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from gru4rec.errors import CheckpointError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import BASELINES, Baseline, fit_baseline
from gru4rec.scoring.candidates import CandidateSizes
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.hybrid import HybridScorer, MixtureWeights
from gru4rec.scoring.neural import GRU4RecScorer, as_scorer
from gru4rec.scoring.ranker import FEATURES, RankerParts, RankerScorer, load_booster
from gru4rec.serving.checkpoint import (
    CONFIG_FILE,
    ITEMS_FILE,
    load_checkpoint,
    read_items,
    resolve_device,
    save_checkpoint,
    staged_model_dir,
)

FORMAT_VERSION = 1
SESSIONS_FILE = "sessions.npz"
GRU_DIR = "gru4rec"
RANKER_FILE = "ranker.txt"
FAMILIES = ("gru4rec", "repeat", "hybrid", "ranker", *BASELINES)


def model_family(model_dir: str | Path) -> str:
    """The family a model directory holds (`gru4rec` for a plain checkpoint)."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: {model_dir} is not a model directory; make one with "
            "`gru4rec train` or `gru4rec select`."
        )
    try:
        meta = json.loads(path.read_text())
        family = meta.get("family", "gru4rec")
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{path} is corrupt ({error}); save the model again.") from error
    if family not in FAMILIES:
        raise CheckpointError(
            f"{path} names the family {family!r}, which this version does not know "
            f"({', '.join(FAMILIES)})."
        )
    return str(family)


def save_scorer(
    model_dir: str | Path,
    scorer: SessionScorer,
    items: pl.DataFrame,
    *,
    train_data: SessionData | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write any family's model directory atomically; returns its path.

    train_data: the sessions a baseline (or a hybrid's kNN component) was fitted on.
    """
    model_dir = Path(model_dir)
    if isinstance(scorer, GRU4RecScorer):
        return save_checkpoint(model_dir, scorer.model, _gru_config(scorer), items, extra=extra)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "family": scorer.family,
        "n_items": scorer.n_items,
        "extra": extra or {},
    }
    knn: Baseline | None = None
    gru: GRU4RecScorer | None = None
    if isinstance(scorer, RankerScorer):
        parts = scorer.parts
        meta["weights"] = parts.weights.to_dict()
        meta["sizes"] = dataclasses.asdict(parts.sizes)
        meta["baselines"] = {b.name: _params(b) for b in (parts.vsknn, parts.sknn, parts.iknn)}
        meta["features"] = list(FEATURES)
        knn, gru = parts.vsknn, parts.gru
    elif isinstance(scorer, Baseline):
        meta["params"] = _params(scorer)
        knn = scorer
    elif isinstance(scorer, HybridScorer):
        meta["weights"] = scorer.weights.to_dict()
        meta["knn"] = (
            None if scorer.knn is None else {"name": scorer.knn.name, "params": _params(scorer.knn)}
        )
        knn, gru = scorer.knn, scorer.gru
    else:
        raise CheckpointError(f"cannot save a model of family {scorer.family!r}")
    if knn is not None and train_data is None:
        raise CheckpointError(f"saving {scorer.family} needs the sessions it was fitted on")
    with staged_model_dir(model_dir, meta, items) as staging:
        if gru is not None:
            save_checkpoint(staging / GRU_DIR, gru.model, _gru_config(gru), items)
        if isinstance(scorer, RankerScorer):
            (staging / RANKER_FILE).write_text(scorer.booster.model_to_string())
        if knn is not None and train_data is not None:
            np.savez(
                staging / SESSIONS_FILE,
                item_idx=train_data.item_idx,
                session_offsets=train_data.session_offsets,
            )
    return model_dir


def load_scorer(model_dir: str | Path, device: str = "auto") -> tuple[SessionScorer, pl.DataFrame]:
    """Read a model directory of any family: (scorer, item map). Networks are in eval mode
    on `device`; baselines run on the CPU."""
    model_dir = Path(model_dir)
    family = model_family(model_dir)
    if family in ("gru4rec", "repeat"):
        model, config, items = load_checkpoint(model_dir, device=device)
        return as_scorer(model, config), items
    meta = json.loads((model_dir / CONFIG_FILE).read_text())
    items = read_items(model_dir / ITEMS_FILE)
    try:
        if family == "hybrid":
            model, config, _items = load_checkpoint(model_dir / GRU_DIR, device=device)
            knn_meta = meta.get("knn")
            knn = None
            if knn_meta:
                knn = _fit(model_dir, knn_meta["name"], knn_meta["params"], len(items))
            weights = MixtureWeights(**meta["weights"])
            return HybridScorer(GRU4RecScorer(model, config), weights, knn), items
        if family == "ranker":
            return _load_ranker(model_dir, meta, device, len(items)), items
        resolve_device(device)  # a bad device is an error for every family
        return _fit(model_dir, family, meta["params"], len(items)), items
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"{model_dir / CONFIG_FILE} lacks {error} for a {family} model; save it again."
        ) from error


def _load_ranker(model_dir: Path, meta: dict[str, Any], device: str, n_items: int) -> RankerScorer:
    if tuple(meta["features"]) != FEATURES:
        raise CheckpointError(
            f"{model_dir} holds a ranker trained on other features than this version computes; "
            "train it again (`gru4rec select` or `gru4rec train --model ranker`)."
        )
    model, config, _items = load_checkpoint(model_dir / GRU_DIR, device=device)
    data = _sessions(model_dir, "ranker")
    baselines = {
        name: fit_baseline(name, data, n_items, **params)
        for name, params in meta["baselines"].items()
    }
    parts = RankerParts.fit(
        GRU4RecScorer(model, config),
        baselines,
        data,
        MixtureWeights(**meta["weights"]),
        CandidateSizes(**meta["sizes"]),
    )
    return RankerScorer(parts, load_booster(model_dir / RANKER_FILE))


def _sessions(model_dir: Path, name: str) -> SessionData:
    path = model_dir / SESSIONS_FILE
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return SessionData(arrays["item_idx"], arrays["session_offsets"])
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} is missing or corrupt ({error}); save the {name} model again."
        ) from error


def _fit(model_dir: Path, name: str, params: dict[str, Any], n_items: int) -> Baseline:
    return fit_baseline(name, _sessions(model_dir, name), n_items, **params)


def _params(baseline: Baseline) -> dict[str, Any]:
    return {f.name: getattr(baseline, f.name) for f in dataclasses.fields(baseline)}  # type: ignore[arg-type]


def _gru_config(scorer: GRU4RecScorer) -> GRU4RecConfig:
    config = scorer.config
    if config is None:
        raise CheckpointError("a GRU4Rec scorer needs its config to be saved")
    return config


__all__ = ["FAMILIES", "load_scorer", "model_family", "save_scorer"]
