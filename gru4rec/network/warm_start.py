"""Warm start: a new model that begins where a trained one left off, on a new item map.

Retraining every night from scratch throws away what the model learned; starting from
yesterday's weights lets a short training on recent data catch up. The catalogue moves
in between, so the new model is built for the new item map and filled from the old one:

    GRU layers (and the repeat gate)   copied whole
    item tables (output rows, biases,  copied row by row, matched by original item_id;
      input embedding or one-hot rows)  items new to the log keep the rows a new model
                                        would start with (initialised from config.seed)
    items that left the log            dropped, or kept at the end of the map with
                                        support 0 (`keep_missing`): still recommendable,
                                        never a training target, drawn as a negative only
                                        with sample_alpha 0
    optimiser state                    carried over the same way where the old model has
                                        it (`optimizer.pt`, saved by `train`): Adagrad's
                                        sums keep the steps of well-trained weights small,
                                        while new items start at zero (full steps); a model
                                        without it starts the optimiser fresh

The architecture must not change (layers, embedding, embedding_size, gru_form,
repeat_window): the settings start from the old model's and the caller's overrides must
leave these alone.

Example:
    >>> items = warm_items(old_items, load_items(data_dir), keep_missing=False)
    >>> model, report = warm_start_model(old_model, old_items, items, config)
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from gru4rec.errors import ConfigError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.families import build_network
from gru4rec.network.model import GRU4Rec

STRUCTURE_KEYS = ("layers", "embedding", "embedding_size", "gru_form", "repeat_window")
ITEM_TABLES = ("item_weight", "item_bias", "input_embedding", "input_weight")


@dataclass(frozen=True)
class WarmStartReport:
    """How the old model's items map onto the new ones."""

    n_items: int  # the new model's
    n_carried: int  # items of both maps: their rows come from the old model
    n_new: int  # items new to the log: fresh rows
    n_dropped: int  # old items the new log lacks, not kept
    n_kept_missing: int  # old items the new log lacks, kept (support 0)

    def describe(self) -> str:
        return (
            f"{self.n_items} items: {self.n_carried} carried over, {self.n_new} new, "
            f"{self.n_kept_missing} kept from the old model without events, "
            f"{self.n_dropped} dropped"
        )


def check_structure(old: GRU4RecConfig, new: GRU4RecConfig, source: str) -> None:
    """ConfigError naming the first architecture setting that differs."""
    for key in STRUCTURE_KEYS:
        before, after = getattr(old, key), getattr(new, key)
        if before != after:
            raise ConfigError(
                f"warm start from {source}: {key} is {before!r} there and {after!r} here; a "
                f"warm start keeps the architecture (drop --set {key}, or train from scratch)."
            )


def warm_items(old_items: pl.DataFrame, items: pl.DataFrame, keep_missing: bool) -> pl.DataFrame:
    """The new model's item map: the new data's map as it is, then (`keep_missing`) the old
    model's items that the new data lacks, in their old order, with support 0."""
    if not keep_missing:
        return items
    key = pl.col("item_id").cast(pl.String)
    known = items.select(key)["item_id"]
    missing = old_items.sort("item_idx").filter(~key.is_in(known.implode()))
    extra = missing.select(
        pl.col("item_id").cast(items.schema["item_id"]),
        (pl.int_range(pl.len(), dtype=pl.Int64) + items.height).alias("item_idx"),
        pl.lit(0, dtype=pl.Int64).alias("support"),
    )
    return pl.concat([items.select(extra.columns), extra])


def warm_start_model(
    old: GRU4Rec, old_items: pl.DataFrame, items: pl.DataFrame, config: GRU4RecConfig
) -> tuple[GRU4Rec, WarmStartReport]:
    """A model for `items` initialised as a new one from `config`, then filled from `old`:
    every non-item weight whole, the item tables' rows by item_id (see the module)."""
    model = build_network(items.height, config)
    old_state = old.state_dict()
    new_rows, old_rows = _matching_rows(old_items, items)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            _carry(name, old_state[name], value, new_rows, old_rows)
    n_old = old_items.height
    n_kept = int((items["support"].to_numpy()[new_rows.numpy()] == 0).sum())
    report = WarmStartReport(
        n_items=items.height,
        n_carried=len(new_rows),
        n_new=items.height - len(new_rows),
        n_dropped=n_old - len(new_rows),
        n_kept_missing=n_kept,
    )
    return model, report


def warm_optimizer_state(
    state: dict[str, tuple[torch.Tensor, torch.Tensor]],
    model: GRU4Rec,
    old_items: pl.DataFrame,
    items: pl.DataFrame,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The old model's optimiser state for `model` (built by `warm_start_model`): item
    rows by item_id, zeros for new items, everything else whole."""
    new_rows, old_rows = _matching_rows(old_items, items)
    carried = {}
    for name, parameter in model.named_parameters():
        if name not in state:
            continue
        acc, velocity = (torch.zeros_like(parameter, device="cpu") for _ in range(2))
        _carry(name, state[name][0], acc, new_rows, old_rows)
        _carry(name, state[name][1], velocity, new_rows, old_rows)
        carried[name] = (acc, velocity)
    return carried


@torch.no_grad()
def _carry(
    name: str,
    source: torch.Tensor,
    target: torch.Tensor,
    new_rows: torch.Tensor,
    old_rows: torch.Tensor,
) -> None:
    """target = source, the item tables row by row (new_rows <- old_rows)."""
    source = source.to(target.dtype)
    if name in ITEM_TABLES:
        target[new_rows] = source[old_rows]
    elif source.shape == target.shape:
        target.copy_(source)
    else:  # the structure check makes this a bug, not a user error
        raise AssertionError(f"{name}: {tuple(source.shape)} vs {tuple(target.shape)}")


def _matching_rows(old_items: pl.DataFrame, items: pl.DataFrame) -> tuple[torch.Tensor, ...]:
    """(new item_idx, old item_idx) of the items both maps hold, joined on item_id."""
    key = pl.col("item_id").cast(pl.String)
    joined = items.select(key, pl.col("item_idx")).join(
        old_items.select(key, pl.col("item_idx").alias("old_idx")), on="item_id"
    )
    new = torch.tensor(joined["item_idx"].to_numpy(), dtype=torch.int64)
    return new, torch.tensor(joined["old_idx"].to_numpy(), dtype=torch.int64)
