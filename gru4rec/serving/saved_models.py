"""Model directories of every family, saved and loaded without unpickling anything.

Each family writes and reads its own directory (`gru4rec.serving.families`); this module
finds the family a directory holds and hands it over.

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

import json
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import CheckpointError
from gru4rec.network.data import SessionData
from gru4rec.scoring.contract import SessionScorer
from gru4rec.serving import families
from gru4rec.serving.checkpoint import CONFIG_FILE, ITEMS_FILE, read_items


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
    if family not in families.REGISTRY:
        raise CheckpointError(
            f"{path} names the family {family!r}, which this version does not know "
            f"({', '.join(families.names())})."
        )
    return str(family)


def read_extra(model_dir: str | Path) -> dict[str, Any]:
    """The notes a model directory keeps in config.json's "extra" (training data, timings)."""
    meta = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    return dict(meta.get("extra") or {})


def save_scorer(
    model_dir: str | Path,
    scorer: SessionScorer,
    items: pl.DataFrame,
    *,
    train_data: SessionData | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write any family's model directory atomically; returns its path.

    train_data: the sessions a family that refits counts when loaded (a baseline, a hybrid's
    kNN component, the ranker) was fitted on.
    """
    if scorer.family not in families.REGISTRY:
        raise CheckpointError(f"cannot save a model of family {scorer.family!r}")
    family = families.REGISTRY[scorer.family]
    return family.save(Path(model_dir), scorer, items, train_data=train_data, extra=extra or {})


def load_scorer(model_dir: str | Path, device: str = "auto") -> tuple[SessionScorer, pl.DataFrame]:
    """Read a model directory of any family: (scorer, item map). Networks are in eval mode
    on `device`; baselines run on the CPU."""
    model_dir = Path(model_dir)
    name = model_family(model_dir)
    meta = json.loads((model_dir / CONFIG_FILE).read_text())
    items = read_items(model_dir / ITEMS_FILE)
    try:
        scorer = families.REGISTRY[name].load(model_dir, meta, items, device)
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"{model_dir / CONFIG_FILE} lacks {error} for a {name} model; save it again."
        ) from error
    return scorer, items


__all__ = ["load_scorer", "model_family", "read_extra", "save_scorer"]
