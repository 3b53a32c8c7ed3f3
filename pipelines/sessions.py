"""The cleaning steps of the reference preprocessing, each a small function on events.

Events are a Polars frame with `session_id`, `item_id`, `time` (and `user_id`,
`order`, `split` where the source has them). `pipelines.prepare` chains the steps and
counts what every step drops.

Most steps work on *grouped* events (`group_sessions`): each session's events are one
block of rows, in time order. A session is then an offset and a length, so ordering,
splitting and filtering sessions move blocks or flip bits in a mask instead of sorting
and joining every event: that is what keeps `prepare` fast and its memory small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

DAY = 86_400.0
SLICE = 1 << 22  # rows per slice where a step works in slices to bound its memory

# An event whose item repeats the previous event's item in the same session.
_REPEAT = (
    (pl.col("item_id") == pl.col("item_id").shift(1))
    & (pl.col("session_id") == pl.col("session_id").shift(1))
).fill_null(False)
_SESSION_START = (pl.col("session_id") != pl.col("session_id").shift(1)).fill_null(True)


def build_sessions(events: pl.DataFrame, idle_gap: float) -> pl.DataFrame:
    """Cut each user's events into sessions wherever the user is idle longer than `idle_gap` s.

    Session ids are 0.. in order of (user, time); ties keep the log's order.
    """
    ordered = events.sort("user_id", "time", maintain_order=True)
    new_session = (
        (pl.col("user_id") != pl.col("user_id").shift(1))
        | ((pl.col("time") - pl.col("time").shift(1)) > idle_gap)
    ).fill_null(True)
    return ordered.with_columns((new_session.cum_sum() - 1).cast(pl.Int64).alias("session_id"))


def _event_keys(events: pl.DataFrame) -> list[str]:
    return ["time", "order"] if "order" in events.columns else ["time"]


def group_sessions(events: pl.DataFrame) -> pl.DataFrame:
    """Each session's events in one block, by time (then order, then log order).

    A stable sort by (session, time, order), skipped when the events already are so:
    logs usually are, and the check costs a small fraction of the sort.
    """
    keys = _event_keys(events)
    if _is_grouped(events, keys):
        return events
    return events.sort(["session_id", *keys], maintain_order=True)


def _is_grouped(events: pl.DataFrame, keys: list[str]) -> bool:
    not_before = pl.lit(True)  # (keys) >= the previous row's, lexicographically
    for key in reversed(keys):
        previous = pl.col(key).shift(1)
        not_before = (pl.col(key) > previous) | ((pl.col(key) == previous) & not_before)
    blocks, in_order = _streamed(
        events,
        _SESSION_START.sum().alias("blocks"),
        (_SESSION_START | not_before).fill_null(True).all().alias("in_order"),
    ).row(0)
    if not in_order:
        return False
    return events["session_id"].is_sorted() or blocks == events["session_id"].n_unique()


def _streamed(events: pl.DataFrame, *exprs: pl.Expr) -> pl.DataFrame:
    """`events.select(*exprs)` in the streaming engine, which evaluates shifts and masks
    chunk by chunk: eagerly, every intermediate is a whole column (time and memory)."""
    return events.lazy().select(*exprs).collect(engine="streaming")


def session_offsets(events: pl.DataFrame) -> np.ndarray:
    """(S,) uint32: the first row of each session of grouped events."""
    return _streamed(events, _SESSION_START.arg_true()).to_series().to_numpy()


def _start_index(
    events: pl.DataFrame, offsets: np.ndarray, sizes: np.ndarray, keep: np.ndarray | None = None
) -> pl.Series | None:
    """Row index (UInt32) of grouped `events` listing sessions by start, then id.

    The sessions start at `offsets` (S,) with `sizes` (S,) events; with `keep` (N,), only
    the events kept are listed (each session keeping at least one). Whole sessions
    move: events keep their order inside. None when the index lists every row in order.
    """
    first = offsets if keep is None else _first_kept(keep, offsets, sizes)
    order = _by_start(events["time"].gather(first), events["session_id"].gather(first))
    del first
    if np.all(order[1:] > order[:-1]) and (keep is None or keep.all()):
        return None
    offsets, sizes = offsets[order], sizes[order]
    del order
    index = _block_rows(offsets, sizes)  # (N,) the sessions' events
    return pl.Series(index if keep is None else _compact(index, keep))


def _first_kept(keep: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(S,) each session's first kept event (the sessions at `offsets` with `sizes`)."""
    first = offsets.copy()
    late = np.flatnonzero(~keep[offsets])  # sessions whose first event was dropped: few
    if late.size:
        rows = _block_rows(offsets[late], sizes[late])  # their events
        kept_at = np.flatnonzero(keep[rows])
        starts = np.cumsum(sizes[late]) - sizes[late]  # each session's first in `rows`
        first[late] = rows[kept_at[np.searchsorted(kept_at, starts)]]
    return first


def _compact(index: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The rows in `index` where `keep`, in place, a slice at a time (they only move
    forward, over rows already read)."""
    end = 0
    for start in range(0, len(index), SLICE):
        part = index[start : start + SLICE]
        part = part[keep[part]]
        index[end : end + len(part)] = part
        end += len(part)
    return index[:end]


def _by_start(starts: pl.Series, session_ids: pl.Series) -> np.ndarray:
    """(S,) the order of sessions by start, then id."""
    if session_ids.dtype.is_integer():  # numpy: several times faster on nearly sorted starts
        return np.lexsort((session_ids.to_numpy(), starts.to_numpy()))
    keys = pl.DataFrame({"start": starts, "session_id": session_ids})
    return keys.select(pl.arg_sort_by("start", "session_id")).to_series().to_numpy()


def _block_rows(offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(sum(lengths),) uint32: the rows offsets[0] .. offsets[0] + lengths[0] - 1, then
    those of the next block, and so on (every length > 0).

    The cumulative sum of steps: +1 inside a block, a jump from a block's last row to the
    next block's first. In uint32, as this index is as long as the events: a jump back
    wraps around, exactly, as every row is below 2**32 (Polars' row index is uint32).
    """
    if not len(lengths):
        return np.empty(0, dtype=np.uint32)
    offsets, lengths = offsets.astype(np.uint32, copy=False), lengths.astype(np.uint32, copy=False)
    ends = np.cumsum(lengths, dtype=np.uint32)  # (S,) where each block ends in the result
    steps = np.ones(ends[-1], dtype=np.uint32)
    jumps = np.subtract(offsets[1:], offsets[:-1], dtype=np.uint32)
    jumps -= lengths[:-1] - 1
    steps[0], steps[ends[:-1]] = offsets[0], jumps
    return np.cumsum(steps, dtype=np.uint32, out=steps)  # (numpy would sum in 64 bits)


def order_events(events: pl.DataFrame) -> pl.DataFrame:
    """Sessions by start time (then id), events by time (then order, then log order)."""
    events = group_sessions(events)
    offsets = session_offsets(events)
    index = _start_index(events, offsets, _sizes(offsets, events.height))
    return events if index is None else events[index]


def _sizes(offsets: np.ndarray, n: int) -> np.ndarray:
    """(S,) uint32: the number of events of each session, from its first row (`offsets`)."""
    return np.diff(offsets, append=np.uint32(n))


def _move_columns(
    events: pl.DataFrame, transform: Callable[[pl.Series], pl.Series]
) -> pl.DataFrame:
    """`transform` of each column as a new frame, moving each column out of `events`
    (left empty) first: only one column at a time exists twice, the pipeline's peak."""
    return pl.DataFrame([transform(events.drop_in_place(name)) for name in events.columns])


def _gather(column: pl.Series, index: pl.Series) -> pl.Series:
    """`column.gather(index)` in slices: a gather holds a copy of its index meanwhile."""
    starts = range(0, max(len(index), 1), SLICE)  # (one empty slice for an empty index)
    return pl.concat([column.gather(index.slice(start, SLICE)) for start in starts], rechunk=False)


def take(events: pl.DataFrame, index: pl.Series | None) -> pl.DataFrame:
    """`events[index]` (all of them where None), consuming `events`: its columns are moved
    out one by one, so that memory holds one copy of the events plus one column."""
    return events if index is None else _move_columns(events, lambda c: _gather(c, index))


def encode_items(
    events: pl.DataFrame, ids: pl.Series | None = None
) -> tuple[pl.DataFrame, pl.Series]:
    """`item_id` replaced by dense codes (UInt16 or UInt32), and the ids by code
    (`ids[code]` decodes): those given (every item of `events` among them), else the
    items of `events` in order of appearance.

    Counting per item is then a `bincount`, and the written ids a lookup, not a join.
    """
    items = events["item_id"]
    if ids is None:
        ids = items.unique(maintain_order=True)
    # 2 bytes an event where the number of items allows
    dtype: type[np.unsignedinteger] = np.uint16 if len(ids) <= 2**16 else np.uint32
    to_codes = _code_lookup(ids, dtype)
    codes = np.empty(len(items), dtype=dtype)  # (N,)
    for start in range(0, len(items), SLICE):  # in slices: a lookup makes intermediates
        part = items.slice(start, SLICE)
        codes[start : start + len(part)] = to_codes(part)
    return events.with_columns(pl.Series("item_id", codes)), ids


def _code_lookup(
    ids: pl.Series, dtype: type[np.unsignedinteger]
) -> Callable[[pl.Series], np.ndarray]:
    """id -> position in `ids`: by an array indexed by id where the ids are integers in
    a range not much wider than their number (most logs number their items densely),
    several times faster than the hash lookup of any other ids."""
    codes: np.ndarray = np.arange(len(ids), dtype=dtype)
    if ids.dtype.is_integer() and len(ids):
        low, high = int(ids.min()), int(ids.max())  # type: ignore[arg-type]
        if high - low < max(16 * len(ids), 1 << 20):
            table: np.ndarray = np.zeros(high - low + 1, dtype=dtype)
            table[ids.to_numpy() - low] = codes
            return lambda part: table[part.to_numpy() - low]
    lookup = pl.Series(codes)
    return lambda part: part.replace_strict(ids, lookup).to_numpy()


def bincount(values: np.ndarray, size: int) -> np.ndarray:
    """np.bincount in slices: it copies its input to int64 first."""
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(values), SLICE):
        counts += np.bincount(values[start : start + SLICE], minlength=size)
    return counts


def remove_consecutive_repeats(events: pl.DataFrame) -> pl.DataFrame:
    """Drop an event whose item repeats the previous event's item in the same session.

    Expects grouped events.
    """
    return events.filter(~_REPEAT)


class KeptEvents:
    """Which of N grouped events are kept, with the kept events per session and per item.

    Dropping events updates those counts from the dropped rows alone, so the iterative
    support filter needs no copy of the events and no group-by per round.
    """

    def __init__(self, events: pl.DataFrame, n_items: int) -> None:
        """`events` are grouped, their `item_id` dense codes below `n_items` (`encode_items`)."""
        n = events.height
        self.keep = np.ones(n, dtype=bool)  # (N,)
        self.offsets = session_offsets(events)  # (S,) first row of each session
        self.session_sizes = _sizes(self.offsets, n)  # (S,)
        self.session_lengths = self.session_sizes.astype(np.int32)  # (S,) kept per session
        self.item_codes = events["item_id"].to_numpy()  # (N,)
        self.item_support = bincount(self.item_codes, n_items)  # (I,) kept events per item

    def drop(self, rows: np.ndarray) -> None:
        """Drop the events at `rows` (kept ones, each once)."""
        self.keep[rows] = False
        n_items, n_sessions = len(self.item_support), len(self.session_lengths)
        self.item_support -= np.bincount(self.item_codes[rows], minlength=n_items)
        sessions = np.searchsorted(self.offsets, rows.astype(self.offsets.dtype), side="right") - 1
        self.session_lengths -= np.bincount(sessions, minlength=n_sessions).astype(np.int32)

    def drop_consecutive_repeats(self, events: pl.DataFrame) -> None:
        """`remove_consecutive_repeats` as drops; before any other drop (it reads `events`)."""
        self.drop(_streamed(events, _REPEAT.arg_true()).to_series().to_numpy())

    def filter_support(self, min_session_length: int, min_item_support: int) -> int:
        """Drop short sessions and rare items, again and again until nothing changes.

        Dropping a rare item can shorten a session below the minimum, and dropping a
        session can make an item rare, hence the loop. Both conditions are checked on
        the same state in each round. Returns the number of rounds that dropped events.
        """
        rounds = 0
        while self.drop_round(rare_items(self.item_support, min_item_support), min_session_length):
            rounds += 1
        return rounds

    def drop_round(self, rare: np.ndarray, min_session_length: int) -> bool:
        """One round of `filter_support`: drop the events of the `rare` (I,) items and of
        the sessions shorter than `min_session_length`; whether any event was dropped."""
        # A pass over every event's item only while some item is rare.
        drop = rare[self.item_codes] if rare.any() else np.zeros(len(self.keep), dtype=bool)
        lengths = self.session_lengths
        short = np.flatnonzero((lengths > 0) & (lengths < min_session_length))
        drop[_block_rows(self.offsets[short], self.session_sizes[short])] = True
        rows = np.flatnonzero(drop & self.keep)
        if rows.size:
            self.drop(rows)
        return bool(rows.size)

    def start_index(self, events: pl.DataFrame) -> pl.Series | None:
        """Row index listing the kept events in `order_events` order (`take` them); None
        when that is every row, in order."""
        kept = self.session_lengths > 0
        return _start_index(events, self.offsets[kept], self.session_sizes[kept], self.keep)

    def counts(self) -> dict[str, int]:
        """Events, sessions and distinct items kept."""
        return {
            "events": int(np.count_nonzero(self.keep)),
            "sessions": int(np.count_nonzero(self.session_lengths)),
            "items": int(np.count_nonzero(self.item_support)),
        }


def rare_items(support: np.ndarray, min_item_support: int) -> np.ndarray:
    """(I,) bool: the items with some but fewer than `min_item_support` events."""
    return (support > 0) & (support < min_item_support)


def filter_support(
    events: pl.DataFrame, min_session_length: int, min_item_support: int
) -> tuple[pl.DataFrame, int]:
    """Drop short sessions and rare items until nothing changes (`KeptEvents.filter_support`).

    Expects grouped events. Returns the events and the number of rounds that changed
    something.
    """
    coded, ids = encode_items(events)
    kept = KeptEvents(coded, len(ids))
    rounds = kept.filter_support(min_session_length, min_item_support)
    return events.filter(pl.Series(kept.keep)), rounds


def _split_at_session(events: pl.DataFrame, row: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    return events.head(row), events.slice(row)


@dataclass(frozen=True)
class TimeSplit:
    """Where a time split cut, and why: for the log and the manifest."""

    boundary: float  # seconds; sessions starting at or after it are the later part
    measured_from: str  # "last session start" (minus the days) or "--test-start"
    clicks: tuple[float, float]  # first and last click of the events split
    starts: tuple[float, float]  # first and last session start
    stragglers: int = 0  # sessions starting on the thin days after the log's bulk (kept)
    straggler_days: int = 0  # how many such days


# A trailing day with fewer session starts than this share of the median day's is not part
# of the log's bulk: a handful of late sessions must not place the test period after it.
STRAGGLER_SHARE = 0.1


@dataclass(frozen=True)
class StartDays:
    """Session starts per UTC day: how many, and the last of each day (ascending days)."""

    days: np.ndarray  # (D,) int64 day numbers since 1970-01-01
    counts: np.ndarray  # (D,) int64 sessions starting that day
    last: np.ndarray  # (D,) float64 the day's last session start (seconds)

    @classmethod
    def of(cls, starts: np.ndarray) -> StartDays:
        day = np.floor(np.asarray(starts, dtype=np.float64) / DAY).astype(np.int64)
        days, inverse, counts = np.unique(day, return_inverse=True, return_counts=True)
        last = np.full(len(days), -np.inf)
        np.maximum.at(last, inverse, starts)
        return cls(days, counts.astype(np.int64), last)

    @classmethod
    def combined(cls, parts: Sequence[StartDays]) -> StartDays:
        """The days of several parts (buckets) together."""
        merged, inverse = np.unique(np.concatenate([p.days for p in parts]), return_inverse=True)
        counts = np.zeros(len(merged), np.int64)
        last = np.full(len(merged), -np.inf)
        np.add.at(counts, inverse, np.concatenate([p.counts for p in parts]))
        np.maximum.at(last, inverse, np.concatenate([p.last for p in parts]))
        return cls(merged, counts, last)

    def bulk_end(self, share: float = STRAGGLER_SHARE) -> tuple[float, int, int]:
        """(the last session start of the log's bulk, straggler sessions, straggler days):
        the bulk ends on the last day holding at least `share` of the median day's starts;
        the sessions of the thin days after it are stragglers."""
        thick = self.counts >= share * float(np.median(self.counts))
        end = int(np.flatnonzero(thick)[-1])
        return float(self.last[end]), int(self.counts[end + 1 :].sum()), len(self.days) - end - 1

    def tail(self, n: int = 10) -> str:
        """The last `n` days' session starts, one "YYYY-MM-DD count" per line."""
        return "\n".join(
            f"  {np.datetime64(int(day), 'D')}  {int(count):,}"
            for day, count in zip(self.days[-n:], self.counts[-n:], strict=True)
        )


def session_starts(events: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(S,) first rows and (S,) starts (earliest time) of the sessions of grouped events."""
    offsets = session_offsets(events)
    times = events["time"].to_numpy()
    starts = np.minimum.reduceat(times, offsets) if len(offsets) else times[:0]
    return offsets, starts


def split_by_time(
    events: pl.DataFrame,
    days: float,
    *,
    start: float | None = None,
    ordered: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, TimeSplit]:
    """Train / test by session start: test = the sessions starting at or after the boundary.

    The boundary is `start` (seconds) if given, else the last session start of the log's
    bulk minus `days` days (`StartDays.bulk_end`: a few sessions starting on thin days after
    the bulk do not move it, and are kept in the later part; a session's start is its
    earliest event, so late clicks of old sessions do not move it either). Each session lands on one side by its own start, whatever order the rows are in.
    In `order_events` order (`ordered`: the events already are, as the steps leave them)
    the test sessions are the tail and both parts are slices, not copies; otherwise both
    parts are filtered and ordered.
    """
    if not ordered:
        events = order_events(events)
    if events.height == 0:
        return events, events, TimeSplit(start or 0.0, measured_from(start), (0.0, 0.0), (0.0, 0.0))
    offsets, starts = session_starts(events)
    boundary, measured, stragglers, straggler_days = split_boundary(
        StartDays.of(starts), days, start
    )
    times = events["time"]
    where = TimeSplit(
        boundary,
        measured,
        (float(times.min()), float(times.max())),  # type: ignore[arg-type]
        (float(starts.min()), float(starts.max())),
        stragglers,
        straggler_days,
    )
    later = starts >= boundary
    if not later.any():
        return events, events.head(0), where
    first = int(np.argmax(later))
    if later[first:].all():  # the later sessions are the tail: slices
        row = int(offsets[first])
        return events.head(row), events.slice(row), where
    rows = pl.Series(np.repeat(later, np.diff(offsets, append=events.height)))
    return (order_events(events.filter(~rows)), order_events(events.filter(rows)), where)


def split_boundary(
    start_days: StartDays, days: float, start: float | None
) -> tuple[float, str, int, int]:
    """Where a time split cuts: at `start` if given, else `days` days before the last session
    start of the log's bulk; and (the boundary, how it was placed, straggler sessions,
    straggler days). One rule for the split in memory and in buckets."""
    if start is not None:
        return float(start), measured_from(start), 0, 0
    bulk_last, stragglers, straggler_days = start_days.bulk_end()
    return bulk_last - days * DAY, measured_from(None, stragglers), stragglers, straggler_days


def measured_from(start: float | None, stragglers: int = 0) -> str:
    """How a boundary was placed, as the manifest says it."""
    if start is not None:
        return "--test-start"
    return "last session start of the log's bulk" if stragglers else "last session start"


def split_by_fraction(events: pl.DataFrame, fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train / validation for logs without time: the last `fraction` of sessions, in order.

    Expects grouped events; both parts are slices.
    """
    offsets = session_offsets(events)
    n_valid = round(len(offsets) * fraction)
    row = int(offsets[len(offsets) - n_valid]) if n_valid else events.height
    return _split_at_session(events, row)


def drop_unknown_items(
    test: pl.DataFrame, known_items: pl.Series, min_session_length: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Test events whose item is not in `known_items`, then sessions left too short.

    Returns (kept events, events without unknown items but in sessions that became short)
    so both kinds of drop can be counted separately.
    """
    known = test.filter(pl.col("item_id").is_in(known_items.implode()))
    long_enough = pl.len().over("session_id") >= min_session_length
    return known.filter(long_enough), known.filter(~long_enough)


def item_map(train: pl.DataFrame) -> pl.DataFrame:
    """Dense item indices in order of first appearance in train, with their support."""
    first_seen = pl.col("item_id").unique(maintain_order=True)
    support = pl.col("item_id").unique_counts().cast(pl.Int64).alias("support")
    items = train.select(first_seen, support).with_row_index("item_idx")
    return items.select("item_id", pl.col("item_idx").cast(pl.Int32), "support")


def count(events: pl.DataFrame) -> dict[str, int]:
    """Events, sessions and distinct items of a frame."""
    return {
        "events": events.height,
        "sessions": events["session_id"].n_unique(),
        # The fastest distinct count of Polars 2.1 for a column with many repeats.
        "items": len(events["item_id"].unique(maintain_order=True)),
    }
