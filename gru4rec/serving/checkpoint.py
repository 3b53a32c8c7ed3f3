"""Model directories: state, not pickles.

    weights.pt     the state_dict (tensors only; loaded with weights_only=True)
    config.json    {"format_version", "family": "gru4rec", "n_items", "config":
                   GRU4RecConfig.to_dict(), "extra"}
    items.parquet  the item map: item_id, item_idx (0..n_items-1), support

Written into a temporary sibling directory and renamed into place, so a reader never
sees a half-written model.

Example:
    >>> save_checkpoint("models/rsc15", model, config, items)
    >>> model, config, items = load_checkpoint("models/rsc15", device="auto")
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import torch

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.fileio import swap_into_place
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.families import build_network, network_family
from gru4rec.network.model import GRU4Rec

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
ITEMS_FILE = "items.parquet"
OPTIMIZER_FILE = "optimizer.pt"  # optional: Adagrad's sums and the velocities, per parameter
_RETRAIN_HINT = "re-save it with `gru4rec train ... --out DIR`"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda when available, else cpu; "cpu"/"cuda[:n]" as given (checked)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda was asked for, but no CUDA GPU is available; use auto or cpu."
        )
    return resolved


def save_checkpoint(
    model_dir: str | Path,
    model: GRU4Rec,
    config: GRU4RecConfig,
    items_df: pl.DataFrame,
    extra: dict[str, Any] | None = None,
    optimizer_state: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Path:
    """Write the model directory atomically (replacing an existing one). Returns its path.

    items_df: the item map the model was trained with (item_id, item_idx, support).
    extra: JSON-serialisable notes kept in config.json (e.g. the training data directory).
    optimizer_state: the optimiser's final state (`FitResult.optimizer_state`), kept in
        optimizer.pt for a warm start to carry on from.
    """
    model_dir = Path(model_dir)
    _check_items(items_df, model.n_items, model_dir / ITEMS_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        # gru4rec.serving.saved_models reads every family's directory
        "family": network_family(config),
        "n_items": model.n_items,
        "config": config.to_dict(),
        "extra": extra or {},
    }
    with staged_model_dir(model_dir, meta, items_df) as staging:
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        if optimizer_state is not None:
            flat = {
                f"{name}.{part}": tensor.detach().cpu()
                for name, pair in optimizer_state.items()
                for part, tensor in zip(("acc", "velocity"), pair, strict=True)
            }
            torch.save(flat, staging / OPTIMIZER_FILE)
    return model_dir


def read_optimizer_state(
    model_dir: str | Path,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The optimiser state saved beside a model (None when it has none: an older model,
    or one not trained by `train`), read without unpickling anything."""
    path = Path(model_dir) / OPTIMIZER_FILE
    if not path.is_file():
        return None
    flat = _read_weights(path)
    names = {key.rsplit(".", 1)[0] for key in flat}
    try:
        return {name: (flat[f"{name}.acc"], flat[f"{name}.velocity"]) for name in names}
    except KeyError as error:
        raise CheckpointError(f"{path} lacks {error}; {_RETRAIN_HINT}.") from None


@contextmanager
def staged_model_dir(model_dir: Path, meta: dict[str, Any], items: pl.DataFrame) -> Iterator[Path]:
    """A temporary sibling of `model_dir` to write a model into (the caller writes its own
    files; `config.json` and `items.parquet` are added here), renamed into place on success
    and removed on failure: a reader never sees a half-written model."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        yield staging
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        items.select("item_id", "item_idx", "support").sort("item_idx").write_parquet(
            staging / ITEMS_FILE
        )
        swap_into_place(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_checkpoint(
    model_dir: str | Path,
    device: str | torch.device = "auto",
    items: pl.DataFrame | None = None,
) -> tuple[GRU4Rec, GRU4RecConfig, pl.DataFrame]:
    """Read a model directory: (model in eval mode on `device`, config, item map).

    items: its item map, where the caller has already read it (`read_items`).
    Raises CheckpointError naming the file when one is missing, corrupt, or inconsistent
    with the others (weight shapes vs config vs item map).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(
            f"{model_dir} is not a model directory; train one with `gru4rec train`."
        )
    meta_path = model_dir / CONFIG_FILE
    config, n_items = _read_meta(meta_path)
    items_path = model_dir / ITEMS_FILE
    items = read_items(items_path) if items is None else items
    _check_items(items, n_items, items_path)

    target = resolve_device(device)
    weights_path = model_dir / WEIGHTS_FILE
    state = _read_weights(weights_path)
    model = build_network(n_items, config)
    expected = model.state_dict()
    problems = [
        f"{name}: expected {tuple(expected[name].shape)}, found "
        f"{tuple(state[name].shape) if name in state else 'nothing'}"
        for name in expected
        if name not in state or state[name].shape != expected[name].shape
    ]
    problems += [f"{name}: not part of this model" for name in state if name not in expected]
    if problems:
        raise CheckpointError(
            f"{weights_path} does not match {meta_path} and {items_path}: "
            f"{'; '.join(problems[:5])}. The files come from different models; {_RETRAIN_HINT}."
        )
    model.load_state_dict(state)
    return model.to(target).eval(), config, items


def _read_meta(path: Path) -> tuple[GRU4RecConfig, int]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {_RETRAIN_HINT}.")
    try:
        meta = json.loads(path.read_text())
        version = meta["format_version"]
        n_items = int(meta["n_items"])
        # Models saved before gru_form existed all used the paper's form.
        config = GRU4RecConfig.from_dict({"gru_form": "reset_before", **meta["config"]})
    except (ValueError, KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(
            f"{path} is corrupt or not a GRU4Rec config ({error}); {_RETRAIN_HINT}."
        ) from error
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {version}, this version reads {FORMAT_VERSION}; "
            f"{_RETRAIN_HINT}."
        )
    return config, n_items


def read_items(path: Path) -> pl.DataFrame:
    """A model directory's item map (sorted by item_idx), or CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {_RETRAIN_HINT}.")
    try:
        return pl.read_parquet(path, columns=["item_id", "item_idx", "support"]).sort("item_idx")
    except Exception as error:  # polars raises several types for damaged files or columns
        raise CheckpointError(
            f"{path} is corrupt or lacks item_id/item_idx/support ({error}); {_RETRAIN_HINT}."
        ) from error


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {_RETRAIN_HINT}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise CheckpointError(
            f"{path} is corrupt or not a weights file ({error}); {_RETRAIN_HINT}."
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict of tensors; {_RETRAIN_HINT}.")
    return state


def _check_items(items: pl.DataFrame, n_items: int, path: Path) -> None:
    missing = {"item_id", "item_idx", "support"} - set(items.columns)
    if missing:
        raise CheckpointError(f"{path}: the item map lacks column(s) {', '.join(sorted(missing))}.")
    idx = items["item_idx"].sort().to_list()
    if len(items) != n_items or idx != list(range(n_items)):
        raise CheckpointError(
            f"{path}: the item map has {len(items)} items (item_idx must be 0..{n_items - 1}) but "
            f"the model has {n_items}; it belongs to another model; {_RETRAIN_HINT}."
        )


__all__ = ["load_checkpoint", "resolve_device", "save_checkpoint"]
