"""Prepared Parquet (see docs/data-contract.md) -> session arrays for training and evaluation.

Polars reads and maps at the edge; what comes out is NumPy: the item index of every
event and the offset of every session, the layout session-parallel batching consumes.

Example:
    >>> items = load_items("data/yoochoose")
    >>> train, report = load_split("data/yoochoose", "train")
    >>> train.n_sessions, report.n_unknown_events
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from gru4rec.errors import InputDataError

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ("item_id", "item_idx", "support")
EVENT_COLUMNS = ("session_id", "item_id", "item_idx", "time")
_PREPARE_HINT = "run `gru4rec prepare` to (re)create the data directory"


@dataclass(frozen=True, eq=False)
class SessionData:
    """Sessions as flat arrays: session s is `item_idx[session_offsets[s]:session_offsets[s+1]]`.

    item_idx: (n_events,) int64 dense item indices, sessions contiguous, in consumption order.
    session_offsets: (n_sessions + 1,) int64, starts at 0, ends at n_events, non-decreasing.
    """

    item_idx: np.ndarray
    session_offsets: np.ndarray

    def __post_init__(self) -> None:
        offsets = self.session_offsets
        if self.item_idx.ndim != 1 or offsets.ndim != 1 or len(offsets) < 1:
            raise ValueError("item_idx and session_offsets must be 1-D, offsets non-empty")
        if offsets[0] != 0 or offsets[-1] != len(self.item_idx) or np.any(np.diff(offsets) < 0):
            raise ValueError("session_offsets must rise from 0 to n_events")

    @property
    def n_events(self) -> int:
        return len(self.item_idx)

    @property
    def n_sessions(self) -> int:
        return len(self.session_offsets) - 1

    @property
    def session_lengths(self) -> np.ndarray:
        """(n_sessions,) int64 number of events per session."""
        return np.diff(self.session_offsets)

    @classmethod
    def from_sessions(cls, sessions: Sequence[Sequence[int]]) -> SessionData:
        """Build from a list of item-index lists (handy for tests and small examples)."""
        lengths = np.array([len(s) for s in sessions], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = [item for session in sessions for item in session]
        return cls(np.asarray(flat, dtype=np.int64).reshape(-1), offsets)


@dataclass(frozen=True)
class LoadReport:
    """What `load_split` read and what it had to drop (nothing is dropped silently)."""

    split: str
    n_events_read: int  # rows in the file
    n_sessions_read: int
    n_unknown_events: int  # events whose item is not in the model's item map
    n_short_sessions_dropped: int  # sessions left with fewer than 2 events
    n_events: int  # events kept
    n_sessions: int  # sessions kept


def load_items(data_dir: str | Path) -> pl.DataFrame:
    """The item map `items.parquet`: columns item_id, item_idx (0..n_items-1, sorted), support."""
    path = Path(data_dir) / "items.parquet"
    frame = _read(path, ITEM_COLUMNS).sort("item_idx")
    idx = frame["item_idx"].to_numpy()
    if not np.array_equal(idx, np.arange(len(frame))):
        raise InputDataError(
            f"{path}: column item_idx must be the dense range 0..{len(frame) - 1}; {_PREPARE_HINT}."
        )
    return frame.with_columns(pl.col("item_idx").cast(pl.Int64), pl.col("support").cast(pl.Int64))


def load_split(
    data_dir: str | Path,
    split: str,
    item_ids: pl.Series | np.ndarray | Sequence[object] | None = None,
    window_days: float | None = None,
) -> tuple[SessionData, LoadReport]:
    """Read `<data_dir>/<split>.parquet` into SessionData.

    item_ids: the model's item map (item_id of item_idx 0, 1, ...). When given and different
        from the data directory's own map, events are mapped by original item_id; events of
        unknown items are dropped and counted. Sessions shorter than 2 are always dropped
        and counted (they hold no prediction).
    window_days: keep only the sessions that start in the split's last `window_days` days
        (before the last event); needs a log with timestamps.
    Returns (data, report).
    """
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.parquet"
    columns = ("session_id", "item_id", "item_idx")
    events = _read(path, columns if window_days is None else (*columns, "time"))
    if window_days is not None:
        events = _recent(events, window_days, data_dir, path).drop("time")
    n_events_read = len(events)
    events = events.with_columns(_session_number(events["session_id"], path))
    n_sessions_read = int(events["session"][-1]) + 1 if n_events_read else 0

    if item_ids is not None and not _same_map(data_dir, item_ids):
        events = _remap(events, pl.Series("item_id", item_ids))
    else:
        _check_index_range(events, data_dir, path)
    n_unknown = events["item_idx"].null_count()
    events = events.drop_nulls("item_idx")

    length = pl.len().over("session")
    n_short = events.filter(length < 2)["session"].n_unique()
    events = events.filter(length >= 2)
    item_idx = events["item_idx"].cast(pl.Int64).to_numpy()
    lengths = events["session"].rle().struct.field("len").to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    data = SessionData(np.ascontiguousarray(item_idx, dtype=np.int64), offsets)
    report = LoadReport(
        split=split,
        n_events_read=n_events_read,
        n_sessions_read=n_sessions_read,
        n_unknown_events=n_unknown,
        n_short_sessions_dropped=n_short,
        n_events=data.n_events,
        n_sessions=data.n_sessions,
    )
    if n_unknown or n_short:
        logger.info(
            "%s: dropped %d events of unknown items and %d sessions shorter than 2",
            path,
            n_unknown,
            n_short,
        )
    return data, report


def _recent(events: pl.DataFrame, days: float, data_dir: Path, path: Path) -> pl.DataFrame:
    """The sessions of `events` that start within `days` days before its last event."""
    if not days > 0:
        raise InputDataError(f"the training window must be > 0 days, got {days:g}.")
    manifest = data_dir / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["source"].get("time_col") is None:
        raise InputDataError(
            f"{path}: this log has no timestamps (its events are ordered by position), so a "
            "window in days cannot be cut; train on the whole split instead."
        )
    if events.is_empty():
        return events
    cutoff = float(events["time"].max()) - days * 86400.0  # type: ignore[arg-type]
    start = pl.col("time").min().over("session_id")
    return events.filter(start >= cutoff)


def _read(path: Path, columns: Sequence[str]) -> pl.DataFrame:
    if not path.is_file():
        raise InputDataError(f"{path} does not exist; {_PREPARE_HINT}.")
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as error:  # polars raises several types for a damaged file
        raise InputDataError(
            f"{path} is not a readable Parquet file ({error}); {_PREPARE_HINT}."
        ) from error
    missing = [c for c in columns if c not in schema]
    if missing:
        raise InputDataError(
            f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(schema)}); "
            f"see docs/data-contract.md, or {_PREPARE_HINT}."
        )
    return pl.scan_parquet(path).select(columns).collect()


def _session_number(session_id: pl.Series, path: Path) -> pl.Series:
    """0, 0, 1, 1, 1, 2, ... one number per run of equal session ids; runs must be unique."""
    changed = session_id.ne_missing(session_id.shift(1)).fill_null(True)
    number = changed.cast(pl.Int64).cum_sum() - 1
    if len(session_id) and int(number[-1]) + 1 != session_id.n_unique():
        raise InputDataError(
            f"{path}: the events of a session are not contiguous (a session_id appears in "
            f"more than one block of rows); {_PREPARE_HINT}."
        )
    return number.alias("session")


def _same_map(data_dir: Path, item_ids: pl.Series | np.ndarray | Sequence[object]) -> bool:
    own = load_items(data_dir)["item_id"]
    theirs = pl.Series("item_id", item_ids)
    return own.dtype == theirs.dtype and own.equals(theirs)


def _remap(events: pl.DataFrame, item_ids: pl.Series) -> pl.DataFrame:
    """Replace item_idx by the index of item_id in the model's map (null where unknown)."""
    model_map = pl.DataFrame({"item_id": item_ids}).with_row_index("model_idx")
    if model_map["item_id"].dtype != events["item_id"].dtype:
        # An Int64 map against String ids (or the reverse): compare their text forms.
        model_map = model_map.with_columns(pl.col("item_id").cast(pl.String))
        events = events.with_columns(pl.col("item_id").cast(pl.String))
    mapped = events.join(model_map, on="item_id", how="left", maintain_order="left")
    return mapped.with_columns(pl.col("model_idx").cast(pl.Int64).alias("item_idx")).drop(
        "model_idx"
    )


def _check_index_range(events: pl.DataFrame, data_dir: Path, path: Path) -> None:
    n_items = len(load_items(data_dir))
    bad = events.filter((pl.col("item_idx") < 0) | (pl.col("item_idx") >= n_items))
    if len(bad):
        raise InputDataError(
            f"{path}: {len(bad)} events have item_idx outside 0..{n_items - 1} of items.parquet; "
            f"{_PREPARE_HINT}."
        )
    if events["item_idx"].null_count():
        raise InputDataError(f"{path}: column item_idx has nulls; {_PREPARE_HINT}.")
