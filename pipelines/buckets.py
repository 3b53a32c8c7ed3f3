"""`prepare` for a log larger than memory: its sessions in buckets, one bucket in memory.

The log is streamed once into N bucket files by a hash of the session key (the session
id, or the user where sessions are built from user + idle gap), so that each session
lies in one bucket. Every step of `prepare` then runs a bucket at a time, and what the
buckets share stays small: the item codes and counts (a number per item), the time
splits' boundaries (numbers), the users' session counts where sessions are built (a
number per user) and, for `--valid-fraction`, the session starts of train. Each split is
written a bucket at a time in `order_events` order and the parts are merged by Polars'
streaming `merge_sorted` on (session start, session id) into one ordered file.

The result is the same as `prepare` in memory, row for row and count for count: the
steps below mirror `prepare.clean` and `prepare.split` and reuse their pieces.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from gru4rec.errors import InputDataError
from gru4rec.pipelines import sessions as steps
from gru4rec.pipelines.options import PrepareOptions, StepLog, check_splits
from gru4rec.pipelines.sources import SourceSpec, is_parquet, write_events

SEED = 0x6E5  # of the hash that puts a session in its bucket
BYTES_PER_EVENT = 32  # peak memory of `prepare` in memory, per event (measured: 24-25)
TEXT_BYTES_PER_EVENT = 40  # the smallest a click-log line usually is (ids, a time)
# Fast to write and read back: the intermediate files live only while `prepare` runs.
INTERMEDIATE: Final = "lz4"
KEY = ("start", "session_id")  # the order of sessions in every split
SPLITS = ("train", "test", "train_tr", "valid")
# Rows per morsel while the splits are merged: each merge of the tree buffers morsels, so
# the memory of writing grows with buckets x this (16 buckets of 30M events: 1.9 GB at
# Polars' default, 0.8 GB at 10,000; 0.45 GB at 1,000, but half as fast again).
MERGE_ROWS = 10_000


def auto_buckets(files: Sequence[Path], memory: int | None = None) -> int:
    """Buckets so that one fits in a quarter of the available memory: 1 (in memory) while
    the whole log needs under half of it."""
    memory = memory if memory is not None else available_memory()
    need = count_events(files) * BYTES_PER_EVENT
    return 1 if need <= memory // 2 else math.ceil(need / (memory // 4))


def count_events(files: Sequence[Path]) -> int:
    """The events of a log, counted in Parquet files (their metadata) and estimated in text
    ones (compressed text: four times its size); a file that cannot be read counts 0 (its
    reading says what is wrong)."""
    events = 0
    for path in files:
        try:
            if is_parquet(path):
                events += pl.scan_parquet(path).select(pl.len()).collect().item()
            else:
                packed = 4 if path.suffix.lower() in (".gz", ".zst") else 1
                events += packed * path.stat().st_size // TEXT_BYTES_PER_EVENT
        except (OSError, pl.exceptions.PolarsError):
            continue
    return events


def available_memory() -> int:
    """Bytes of memory available now: the machine's (psutil's `available`), or what is left
    under this process's cgroup limit (a container's) where that is less."""
    import psutil

    return min([psutil.virtual_memory().available, *_cgroup_room()])


# psutil does not read cgroup limits: the files below are read by hand.
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_FILES = {  # version: (mount, limit file, usage file)
    2: (Path("/sys/fs/cgroup"), "memory.max", "memory.current"),
    1: (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"),
}


def _cgroup_room() -> list[int]:
    """Room left under the memory limits of this process's cgroups (v1 or v2), looked up
    by their path and at the mount's root (a container sees its own cgroup there)."""
    rooms: list[int] = []
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return rooms
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        version = 2 if hierarchy == "0" else 1 if "memory" in controllers.split(",") else 0
        if not version:
            continue
        mount, limit_file, usage_file = CGROUP_FILES[version]
        for folder in {mount / path.lstrip("/"), mount}:
            try:
                limit = (folder / limit_file).read_text().strip()
                usage = int((folder / usage_file).read_text())
            except (OSError, ValueError):
                continue
            if limit != "max" and int(limit) < 2**60:  # v1 writes "no limit" as ~2**63
                rooms.append(max(int(limit) - usage, 0))
    return rooms


@dataclass
class Totals:
    """Events, sessions and items (a support count per item code) over the buckets."""

    n_items: int
    events: int = 0
    sessions: int = 0
    support: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.support = np.zeros(self.n_items, dtype=np.int64)

    def add(self, events: pl.DataFrame) -> None:
        """Count a grouped frame with item codes."""
        self.events += events.height
        self.sessions += len(steps.session_offsets(events))
        codes = events["item_id"].to_numpy()
        self.support += steps.bincount(codes, self.n_items)

    def add_kept(self, kept: steps.KeptEvents) -> None:
        counts = kept.counts()
        self.events += counts["events"]
        self.sessions += counts["sessions"]
        self.support += kept.item_support

    def counts(self) -> dict[str, int]:
        return {
            "events": self.events,
            "sessions": self.sessions,
            "items": int(np.count_nonzero(self.support)),
        }


@dataclass
class Span:
    """The smallest and largest of some values over the buckets (of a `TimeSplit`)."""

    low: float = math.inf
    high: float = -math.inf

    def add(self, low: float, high: float) -> None:
        self.low, self.high = min(self.low, low), max(self.high, high)

    def pair(self) -> tuple[float, float]:
        return (self.low, self.high) if self.low <= self.high else (0.0, 0.0)


class Workspace:
    """The intermediate files, a folder per stage with a file per bucket."""

    def __init__(self, root: Path, n_buckets: int) -> None:
        self.root, self.n = root, n_buckets

    def file(self, stage: str, bucket: int, suffix: str = ".parquet") -> Path:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{bucket:05d}{suffix}"

    def read(self, stage: str, bucket: int) -> pl.DataFrame:
        return pl.read_parquet(self.file(stage, bucket))

    def write(self, frame: pl.DataFrame, stage: str, bucket: int) -> None:
        if stage in SPLITS:  # each event with its session's start: the key of the merge
            offsets, starts = steps.session_starts(frame)
            sizes = np.diff(offsets, append=frame.height)
            frame = frame.with_columns(pl.Series("start", np.repeat(starts, sizes)))
        frame.write_parquet(self.file(stage, bucket), compression=INTERMEDIATE)

    def raw(self, bucket: int) -> pl.DataFrame | None:
        """The events of a bucket as read (None: no session hashed into it)."""
        parts = sorted((self.root / "raw" / f"bucket={bucket}").glob("*.parquet"))
        return pl.read_parquet(parts) if parts else None

    def save_kept(self, kept: steps.KeptEvents, bucket: int) -> None:
        np.savez(self.file("kept", bucket, ".npz"), **vars(kept))

    def load_kept(self, bucket: int) -> steps.KeptEvents:
        kept = steps.KeptEvents.__new__(steps.KeptEvents)
        with np.load(self.file("kept", bucket, ".npz"), allow_pickle=False) as arrays:
            for name in arrays.files:
                setattr(kept, name, arrays[name])
        return kept


def partition(
    files: Sequence[Path],
    spec: SourceSpec,
    root: Path,
    n_buckets: int,
    *,
    pair: bool = False,
    compact: bool = True,
) -> list[Path]:
    """Stream the log into `n_buckets` folders of Parquet files under `root` by a hash of
    the session key, checked as `read_events` checks (and with its id types: `compact`);
    returns the folders that received events, in bucket order."""
    key = "session_id" if spec.session_col else "user_id"

    def write(scan: pl.LazyFrame) -> pl.LazyFrame:
        shutil.rmtree(root, ignore_errors=True)  # a second read replaces the first
        bucket = (pl.col(key).hash(SEED) % n_buckets).alias("bucket")
        target = pl.PartitionBy(root, key=bucket, include_key=False)
        scan.sink_parquet(target, compression=INTERMEDIATE, mkdir=True, engine="streaming")
        return pl.scan_parquet(root / "**" / "*.parquet", hive_partitioning=False)

    write_events(files, spec, write, pair=pair, compact=compact)
    return sorted(root.glob("bucket=*"), key=lambda folder: int(folder.name.partition("=")[2]))


def clean(
    files: Sequence[Path],
    spec: SourceSpec,
    options: PrepareOptions,
    log: StepLog,
    pair: bool,
    space: Workspace,
    raw_rows: Callable[[], int],
) -> tuple[pl.Series, bool, Callable[[int], pl.DataFrame], steps.StartDays]:
    """`prepare.clean` a bucket at a time; returns the item ids by code, whether the log
    carries a kept split, the cleaned events of a bucket (in `order_events` order, made
    when asked for) and the session starts per day."""
    kept_split = pair or spec.split_col is not None
    partition(files, spec, space.root / "raw", space.n, pair=pair)
    raw = pl.scan_parquet(space.root / "raw" / "**" / "*.parquet", hive_partitioning=False)
    item_ids = raw.select(pl.col("item_id").unique()).collect(engine="streaming").to_series()
    item_ids = item_ids.sort()
    step = "read"
    if spec.event_filter:
        log.record_unfiltered(raw_rows())
        step = f"event filter: {', '.join(spec.event_filter)}"
    building = "session_id" not in raw.collect_schema().names()
    if building:
        step += f" (sessions: user + {options.idle_gap:g} s idle gap)"
    users: list[pl.DataFrame] = []
    read, repeats = Totals(len(item_ids)), Totals(len(item_ids))
    remove_repeats = (
        options.remove_repeats if options.remove_repeats is not None else not kept_split
    )
    for bucket in range(space.n):
        events = space.raw(bucket)
        if events is None:
            events = pl.DataFrame(schema=raw.collect_schema())
        if building:
            events = steps.build_sessions(events, options.idle_gap)
            users.append(_user_sessions(events))
        events = steps.group_sessions(events).drop("user_id", "order", strict=False)
        events, _ = steps.encode_items(events, item_ids)
        kept = steps.KeptEvents(events, len(item_ids))
        read.add_kept(kept)
        if remove_repeats:
            kept.drop_consecutive_repeats(events)
            repeats.add_kept(kept)
        space.write(events, "grouped", bucket)
        space.save_kept(kept, bucket)
    log.record(step, read.counts())
    if remove_repeats:
        log.record("remove consecutive repeats", repeats.counts())
    if options.apply_filter if options.apply_filter is not None else not kept_split:
        totals, rounds = _filter_support(space, len(item_ids), options)
        log.record(
            f"filter: session length >= {options.min_session_length}, item support >= "
            f"{options.min_item_support} ({rounds} rounds)",
            totals.counts(),
        )
    every = _users_everywhere(users) if building else None

    def cleaned(bucket: int) -> pl.DataFrame:
        """A bucket's kept events in `order_events` order, with the whole log's session ids."""
        events, kept = space.read("grouped", bucket), space.load_kept(bucket)
        events = steps.take(events, kept.start_index(events))
        return events.with_columns(_global_ids(every, bucket)) if every is not None else events

    shutil.rmtree(space.root / "raw")
    return item_ids, kept_split, cleaned, _start_days(space)


def _start_days(space: Workspace) -> steps.StartDays:
    """The session starts per day of the sessions kept in every bucket (a session starts at
    its earliest kept event)."""
    parts = []
    for bucket in range(space.n):
        kept = space.load_kept(bucket)
        if not kept.keep.any():
            continue
        times = pl.read_parquet(space.file("grouped", bucket), columns=["time"])["time"]
        kept_times = np.where(kept.keep, times.to_numpy(), np.inf)
        starts = np.minimum.reduceat(kept_times, kept.offsets)
        parts.append(steps.StartDays.of(starts[kept.session_lengths > 0]))
    return steps.StartDays.combined(parts)


def _user_sessions(events: pl.DataFrame) -> pl.DataFrame:
    """Each user of a bucket with sessions built: the first (local) session id and the
    number of sessions."""
    return events.group_by("user_id").agg(
        pl.col("session_id").min().alias("first"), pl.col("session_id").n_unique().alias("sessions")
    )


def _users_everywhere(users: list[pl.DataFrame]) -> pl.DataFrame:
    """The users of all buckets by id, each with the whole log's id of its first session
    (`offset`: 0.. in order of user, then time, as `build_sessions` on all of it numbers)."""
    every = pl.concat(
        [frame.with_columns(pl.lit(bucket).alias("bucket")) for bucket, frame in enumerate(users)]
    ).sort("user_id")
    return every.with_columns((pl.col("sessions").cum_sum() - pl.col("sessions")).alias("offset"))


def _global_ids(every: pl.DataFrame, bucket: int) -> pl.Expr:
    """A bucket's session ids as the whole log's: its local ids are 0.. in (user, time)
    order, so each user's sessions move by the same amount."""
    mine = every.filter(pl.col("bucket") == bucket).sort("first")
    shift = np.repeat((mine["offset"] - mine["first"]).to_numpy(), mine["sessions"].to_numpy())
    return pl.col("session_id") + pl.lit(pl.Series(shift, dtype=pl.Int64)).gather("session_id")


def _filter_support(space: Workspace, n_items: int, options: PrepareOptions) -> tuple[Totals, int]:
    """`KeptEvents.filter_support` over the buckets: each round drops, in every bucket, the
    items rare in all of them and the sessions short there."""
    support = sum(
        (space.load_kept(b).item_support for b in range(space.n)), np.zeros(n_items, dtype=np.int64)
    )
    rounds = 0
    while True:
        rare = steps.rare_items(support, options.min_item_support)
        totals, dropped = Totals(n_items), False
        for bucket in range(space.n):
            kept = space.load_kept(bucket)
            if kept.drop_round(rare, options.min_session_length):
                dropped = True
                space.save_kept(kept, bucket)
            totals.add_kept(kept)
        if not dropped:
            return totals, rounds
        rounds += 1
        support = totals.support


@dataclass
class SplitStats:
    """What a split of the buckets adds up to: counts, session starts and clicks."""

    totals: Totals
    starts: Span = field(default_factory=Span)
    clicks: Span = field(default_factory=Span)
    days: list[steps.StartDays] = field(default_factory=list)  # session starts per day, by bucket

    def add(self, events: pl.DataFrame) -> None:
        self.totals.add(events)
        if events.height:
            _, starts = steps.session_starts(events)
            times = events["time"]
            self.starts.add(float(starts.min()), float(starts.max()))
            self.clicks.add(float(times.min()), float(times.max()))  # type: ignore[arg-type]
            self.days.append(steps.StartDays.of(starts))

    def start_days(self) -> steps.StartDays:
        return steps.StartDays.combined(self.days)


def _time_split(
    space: Workspace,
    source: Callable[[int], pl.DataFrame],
    parts: tuple[str, str],
    boundary: float,
    measured_from: str,
    n_items: int,
    stragglers: Sequence[int] = (0, 0),
) -> tuple[steps.TimeSplit, SplitStats, SplitStats]:
    """`steps.split_by_time` of every bucket of `source` at one `boundary` (`stragglers`:
    the sessions and days after the log's bulk, as `StartDays.bulk_end` counted them)."""
    early, late = SplitStats(Totals(n_items)), SplitStats(Totals(n_items))
    for bucket in range(space.n):
        head, tail, _ = steps.split_by_time(source(bucket), 0.0, start=boundary, ordered=True)
        for name, frame, stats in ((parts[0], head, early), (parts[1], tail, late)):
            stats.add(frame)
            space.write(frame, name, bucket)
    clicks, starts = Span(), Span()
    for stats in (early, late):  # (an empty span adds nothing)
        clicks.add(stats.clicks.low, stats.clicks.high)
        starts.add(stats.starts.low, stats.starts.high)
    where = steps.TimeSplit(boundary, measured_from, clicks.pair(), starts.pair(), *stragglers)
    return where, early, late


def _fraction_split(
    space: Workspace,
    source: Callable[[int], pl.DataFrame],
    parts: tuple[str, str],
    fraction: float,
    n_items: int,
) -> tuple[SplitStats, SplitStats]:
    """`steps.split_by_fraction` over the buckets: the last `fraction` of the sessions of
    all of them by (start, id) are the later part."""
    keys, offsets = [], []  # per bucket: its sessions' (start, id), and first rows
    for bucket in range(space.n):
        events = source(bucket)
        first_rows, starts = steps.session_starts(events)
        keys.append(
            pl.DataFrame({"start": starts, "session_id": events["session_id"].gather(first_rows)})
        )
        offsets.append(first_rows)
    every = pl.concat(keys).sort("start", "session_id")
    n_later = round(every.height * fraction)
    first = every.row(every.height - n_later) if n_later else None
    del every
    early, late = SplitStats(Totals(n_items)), SplitStats(Totals(n_items))
    for bucket in range(space.n):
        events = source(bucket)
        row = events.height
        if first is not None:  # the bucket's sessions before the first later one
            earlier = (pl.col("start") < first[0]) | (
                (pl.col("start") == first[0]) & (pl.col("session_id") < first[1])
            )
            before = int(keys[bucket].select(earlier.sum()).item())
            if before < len(offsets[bucket]):
                row = int(offsets[bucket][before])
        for name, frame, stats in (
            (parts[0], events.head(row), early),
            (parts[1], events.slice(row), late),
        ):
            stats.add(frame)
            space.write(frame, name, bucket)
    return early, late


def _kept_split(
    space: Workspace, source: Callable[[int], pl.DataFrame], n_items: int
) -> tuple[SplitStats, SplitStats]:
    """The published split of every bucket, each part in `order_events` order."""
    train, test = SplitStats(Totals(n_items)), SplitStats(Totals(n_items))
    for bucket in range(space.n):
        events = source(bucket)
        for name, stats in (("train", train), ("test", test)):
            part = steps.order_events(events.filter(pl.col("split") == name).drop("split"))
            stats.add(part)
            space.write(part, name, bucket)
    return train, test


def _drop_unknown(
    space: Workspace,
    name: str,
    known: pl.Series,
    options: PrepareOptions,
    log: StepLog,
    n_items: int,
) -> None:
    """`prepare._drop_unknown` a bucket at a time."""
    kept_totals, short_events = Totals(n_items), 0
    for bucket in range(space.n):
        kept, short = steps.drop_unknown_items(
            space.read(name, bucket).drop("start"), known, options.min_session_length
        )
        kept = steps.order_events(kept)
        kept_totals.add(kept)
        short_events += short.height
        space.write(kept, name, bucket)
    log.record(
        "drop items unknown to train",
        kept_totals.counts(),
        scope=name,
        dropped_events_in_short_sessions=short_events,
    )


def _item_map(space: Workspace, n_items: int) -> pl.DataFrame:
    """`steps.item_map` of train from its buckets: items by first appearance in the merged
    order (session start, session id, place in the session), with their support."""
    firsts, support = [], np.zeros(n_items, dtype=np.int64)
    for bucket in range(space.n):
        train = space.read("train", bucket)
        if not train.height:
            continue
        offsets, starts = steps.session_starts(train)
        codes = train["item_id"].to_numpy()
        support += steps.bincount(codes, n_items)
        first = train.with_row_index("row").group_by("item_id").agg(pl.col("row").min())
        rows = first["row"].to_numpy()
        session = np.searchsorted(offsets, rows, side="right") - 1
        firsts.append(
            first.select(
                "item_id",
                pl.Series("start", starts[session]),
                train["session_id"].gather(offsets[session]).alias("session_id"),
                pl.Series("place", rows - offsets[session]),
            )
        )
    if not firsts:
        return steps.item_map(space.read("train", 0))
    order = (
        pl.concat(firsts)
        .sort("start", "session_id", "place")
        .unique("item_id", keep="first", maintain_order=True)
    )
    return order.select(
        "item_id",
        pl.int_range(pl.len(), dtype=pl.Int32).alias("item_idx"),
        pl.Series("support", support[order["item_id"].to_numpy()]),
    )


def split(
    space: Workspace,
    n_items: int,
    kept_split: bool,
    cleaned: Callable[[int], pl.DataFrame],
    start_days: steps.StartDays,
    spec: SourceSpec,
    options: PrepareOptions,
    log: StepLog,
) -> tuple[dict[str, pl.LazyFrame], pl.DataFrame]:
    """`prepare.split` a bucket at a time (`cleaned` and `start_days`: from `clean`); the
    splits as merged scans, and train's item map."""
    has_time = spec.time_col is not None
    test_days = options.test_days if options.test_days is not None else spec.test_days
    if kept_split:
        train, test = _kept_split(space, cleaned, n_items)
    elif has_time:
        start = None if options.test_start is None else float(options.test_start)
        boundary, measured, *stragglers = steps.split_boundary(start_days, test_days, start)
        where, train, test = _time_split(
            space, cleaned, ("train", "test"), boundary, measured, n_items, stragglers
        )
        log.record_time_split("test", where)
    else:
        raise InputDataError(
            "the log has no time column, so it cannot be split by time: pass --split-col "
            "with a published split, or a time column."
        )
    for stage in ("grouped", "kept"):
        shutil.rmtree(space.root / stage)
    label = "kept split"
    if not kept_split:
        label = (
            "split: sessions from --test-start"
            if options.test_start is not None
            else f"split: last {test_days:g} days of session starts"
        )
    items = _item_map(space, n_items)
    log.record(label, train.totals.counts(), scope="train")
    log.record(label, test.totals.counts(), scope="test")
    _drop_unknown(space, "test", items["item_id"], options, log, n_items)
    names = ["train", "test"]

    valid_days = options.valid_days if options.valid_days is not None else test_days
    if _valid_split(space, train, items, has_time, valid_days, options, log):
        names += ["train_tr", "valid"]
    check_splits(  # the days of what was split, for the message of a split too small
        log,
        options,
        names,
        kept_split,
        lambda name: start_days if name == "test" else train.start_days(),
    )
    return {name: merged(space, name) for name in names}, items


def _valid_split(
    space: Workspace,
    train: SplitStats,
    items: pl.DataFrame,
    has_time: bool,
    valid_days: float,
    options: PrepareOptions,
    log: StepLog,
) -> bool:
    """`prepare.split`'s validation split of train's buckets (by `options.valid_fraction`,
    else the last `valid_days` of train's session starts), logged; whether there is one."""
    n_items = train.totals.n_items
    parts = ("train_tr", "valid")

    def train_part(bucket: int) -> pl.DataFrame:
        return space.read("train", bucket).drop("start")

    later: tuple[SplitStats, SplitStats] | None = None
    if options.valid_fraction is not None:
        later = _fraction_split(space, train_part, parts, options.valid_fraction, n_items)
        valid_label = f"validation: last {options.valid_fraction:g} of sessions"
    elif has_time and valid_days > 0:
        boundary, measured, *stragglers = steps.split_boundary(train.start_days(), valid_days, None)
        where, *pair = _time_split(
            space, train_part, parts, boundary, measured, n_items, stragglers
        )
        later = (pair[0], pair[1])
        log.record_time_split("valid", where)
        valid_label = f"validation: last {valid_days:g} days of train's session starts"
    if later is not None:
        train_tr, valid = later
        log.record(valid_label, train_tr.totals.counts(), scope="train_tr")
        log.record(valid_label, valid.totals.counts(), scope="valid")
        known = pl.Series(np.flatnonzero(train_tr.totals.support)).cast(items["item_id"].dtype)
        _drop_unknown(space, "valid", known, options, log, n_items)
    return later is not None


def merging() -> pl.Config:
    """The Polars settings to write the merged splits with (`MERGE_ROWS`)."""
    return pl.Config(streaming_chunk_size=MERGE_ROWS)


def merged(space: Workspace, name: str) -> pl.LazyFrame:
    """The buckets of a split as one scan in `order_events` order: each part is in that
    order and holds whole sessions, so a streaming merge on (start, id) orders them all."""
    parts = [pl.scan_parquet(space.file(name, bucket)) for bucket in range(space.n)]
    while len(parts) > 1:  # pairwise, level by level: a balanced tree of merges
        pairs = zip(parts[::2], parts[1::2], strict=False)  # (an odd last part waits a level)
        odd = parts[len(parts) - len(parts) % 2 :]
        parts = [left.merge_sorted(right, list(KEY)) for left, right in pairs] + odd
    return parts[0].drop("start")
