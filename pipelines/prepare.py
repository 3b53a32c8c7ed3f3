"""`gru4rec prepare`: raw click log in, the prepared-data directory out.

The directory follows docs/data-contract.md. It is written into a temporary sibling
and renamed into place at the end, so a failure never leaves a partial directory,
and `manifest.json` records the options and the counts after every step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import polars as pl
import polars.selectors as cs

from gru4rec.errors import InputDataError
from gru4rec.fileio import swap_into_place
from gru4rec.pipelines import buckets as in_buckets
from gru4rec.pipelines import sessions as steps
from gru4rec.pipelines.options import PrepareOptions, StepLog, check_splits
from gru4rec.pipelines.sources import (
    SourceSpec,
    expand_inputs,
    read_events,
    scan_events,
    unreadable,
)

SPLIT_FILES = ("train", "test", "train_tr", "valid")
OUTPUT_COLUMNS = ("session_id", "item_id", "item_idx", "time")
# Snappy (pyarrow's default) writes about twice as fast as zstd, into ~40% larger files.
COMPRESSION: Final = "snappy"
# Integer ids are Int32 while prepared where they fit; docs/data-contract.md says Int64.
WRITTEN_IDS = cs.by_name("session_id", "item_id", require_all=False) & cs.integer()


def _raw_row_count(paths: Sequence[Path], spec: SourceSpec) -> int:
    unfiltered = SourceSpec(**{**asdict(spec), "event_filter": ()})
    try:
        return sum(
            scan_events([path], unfiltered).select(pl.len()).collect().item() for path in paths
        )
    except OSError as error:
        raise unreadable(paths, error) from error


def clean(
    paths: Sequence[Path],
    spec: SourceSpec,
    options: PrepareOptions,
    log: StepLog,
    pair: bool = False,
) -> tuple[pl.DataFrame, pl.Series, bool]:
    """Read, filter event types, build sessions, drop repeats, filter support, order.

    Returns the events in `order_events` order with dense item codes as `item_id`, the
    item ids by code, and whether the events carry a kept (published) split. Repeats
    and the filter only flip bits of a keep-mask; the kept events are taken once at the
    end, so memory holds one copy of the events.
    """
    kept_split = pair or spec.split_col is not None
    events = read_events(paths, spec, compact=True, pair=pair)
    step = "read"
    if spec.event_filter:
        log.record_unfiltered(_raw_row_count(paths, spec))
        step = f"event filter: {', '.join(spec.event_filter)}"
    if "session_id" not in events.columns:
        events = steps.build_sessions(events, options.idle_gap)
        step += f" (sessions: user + {options.idle_gap:g} s idle gap)"
    # Only the time orders a session's events from here on: drop what is not written.
    events = steps.group_sessions(events).drop("user_id", "order", strict=False)
    events, item_ids = steps.encode_items(events)
    kept = steps.KeptEvents(events, len(item_ids))
    log.record(step, kept.counts())
    if options.remove_repeats if options.remove_repeats is not None else not kept_split:
        kept.drop_consecutive_repeats(events)
        log.record("remove consecutive repeats", kept.counts())
    if options.apply_filter if options.apply_filter is not None else not kept_split:
        rounds = kept.filter_support(options.min_session_length, options.min_item_support)
        log.record(
            f"filter: session length >= {options.min_session_length}, item support >= "
            f"{options.min_item_support} ({rounds} rounds)",
            kept.counts(),
        )
    index = kept.start_index(events)
    del kept  # and its view of the item codes: taking the events then frees them
    return steps.take(events, index), item_ids, kept_split


def split(
    events: pl.DataFrame,
    kept_split: bool,
    spec: SourceSpec,
    options: PrepareOptions,
    log: StepLog,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Train/test (and train_tr/valid) from events in `order_events` order.

    Returns the splits, each in `order_events` order, and the item map of train (of
    whatever `item_id` holds: `clean` gives dense codes). Split by time, train and test
    are the head and tail of the events, and train_tr and valid those of train (slices,
    not copies); only the small test and valid are ordered again, as dropping unknown
    items moved some sessions' starts.
    """
    has_time = spec.time_col is not None
    test_days = options.test_days if options.test_days is not None else spec.test_days
    if kept_split:
        train, test = (
            steps.order_events(events.filter(pl.col("split") == name).drop("split"))
            for name in ("train", "test")
        )
    elif has_time:
        start = options.test_start
        train, test, where = steps.split_by_time(
            events, test_days, start=None if start is None else float(start), ordered=True
        )
        log.record_time_split("test", where)
    else:
        raise InputDataError(
            "the log has no time column, so it cannot be split by time: pass --split-col "
            "with a published split, or a time column."
        )
    label = "kept split"
    if not kept_split:
        label = (
            "split: sessions from --test-start"
            if options.test_start is not None
            else f"split: last {test_days:g} days of session starts"
        )
    items = steps.item_map(train)  # of train in its final order, as written
    log.record(label, _count(train, items.height), scope="train")
    log.record(label, steps.count(test), scope="test")
    splits = {"train": train, "test": _drop_unknown(test, items["item_id"], options, log, "test")}

    valid_days = options.valid_days if options.valid_days is not None else test_days
    train_tr: pl.DataFrame | None = None
    valid: pl.DataFrame | None = None
    if options.valid_fraction is not None:
        train_tr, valid = steps.split_by_fraction(train, options.valid_fraction)
        valid_label = f"validation: last {options.valid_fraction:g} of sessions"
    elif has_time and valid_days > 0:
        train_tr, valid, where = steps.split_by_time(train, valid_days, ordered=True)
        log.record_time_split("valid", where)
        valid_label = f"validation: last {valid_days:g} days of train's session starts"
    if train_tr is not None and valid is not None:
        train_tr_items = train_tr["item_id"].unique(maintain_order=True)  # (the fastest)
        log.record(valid_label, _count(train_tr, len(train_tr_items)), scope="train_tr")
        log.record(valid_label, steps.count(valid), scope="valid")
        splits["train_tr"] = train_tr
        splits["valid"] = _drop_unknown(valid, train_tr_items, options, log, "valid")
    split_from = {"test": events, "valid": train}
    check_splits(
        log,
        options,
        list(splits),
        kept_split,
        lambda name: steps.StartDays.of(steps.session_starts(split_from[name])[1]),
    )
    return splits, items


def _count(frame: pl.DataFrame, n_items: int) -> dict[str, int]:
    """`steps.count` of a large grouped frame whose distinct items are already known."""
    return {"events": frame.height, "sessions": len(steps.session_offsets(frame)), "items": n_items}


def _drop_unknown(
    frame: pl.DataFrame, known_items: pl.Series, options: PrepareOptions, log: StepLog, scope: str
) -> pl.DataFrame:
    """`steps.drop_unknown_items`, logged; the sessions are ordered again (starts moved)."""
    kept, short = steps.drop_unknown_items(frame, known_items, options.min_session_length)
    log.record(
        "drop items unknown to train",
        steps.count(kept),
        scope=scope,
        dropped_events_in_short_sessions=short.height,
    )
    return steps.order_events(kept)


def prepare(
    paths: Sequence[Path],
    out_dir: Path,
    spec: SourceSpec,
    options: PrepareOptions | None = None,
    *,
    format_name: str = "generic",
    overwrite: bool = False,
    report: Callable[[str], None] | None = None,
    buckets: int | None = None,
) -> dict[str, Any]:
    """Run the pipeline and write `out_dir` atomically; returns the manifest.

    `options`: the steps (None: `PrepareOptions()`, the defaults). `report(step)` is called after each step (for a progress display). `buckets`: 1
    holds the log in memory; more prepare it that many buckets of sessions at a time,
    for a log larger than memory (`pipelines.buckets`); None picks by the log's size.
    """
    options = options or PrepareOptions()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputDataError(f"{out_dir} already exists; pass --overwrite to replace it.")
    if not out_dir.parent.exists():
        raise InputDataError(f"{out_dir.parent}: the parent directory does not exist.")
    if not out_dir.parent.is_dir():
        raise InputDataError(
            f"{out_dir}: {out_dir.parent} is a file, not a directory; pass --out a path in a "
            "directory."
        )
    started = time.perf_counter()
    log = StepLog(report)
    files, pair = expand_inputs(paths)
    n_buckets = buckets if buckets is not None else in_buckets.auto_buckets(files)
    if n_buckets < 1:
        raise InputDataError("--buckets must be >= 1 (1: in memory).")
    workspace = out_dir.with_name(f".{out_dir.name}.buckets-{uuid.uuid4().hex[:8]}")
    try:
        if n_buckets == 1:
            events, item_ids, kept_split = clean(files, spec, options, log, pair)
            splits, items = split(events, kept_split, spec, options, log)
            tables = _as_written(splits, items, item_ids)
        else:
            space = in_buckets.Workspace(workspace, n_buckets)
            raw_rows = functools.partial(_raw_row_count, files, spec)
            try:
                item_ids, kept_split, cleaned, start_days = in_buckets.clean(
                    files, spec, options, log, pair, space, raw_rows
                )
                merged, items = in_buckets.split(
                    space, len(item_ids), kept_split, cleaned, start_days, spec, options, log
                )
            except OSError as error:  # a full disk, most likely
                raise InputDataError(
                    f"{out_dir.parent}: cannot write the intermediate files of --buckets there "
                    f"({error.strerror or error}); nothing was written. They take about as much "
                    "as the prepared data, which needs as much again: free some space or pass "
                    "another --out."
                ) from error
            tables = _as_written(merged, items, item_ids)
        manifest = _manifest(files, spec, options, kept_split, log, items, format_name, started)
        manifest["buckets"] = n_buckets
        with in_buckets.merging() if n_buckets > 1 else contextlib.nullcontext():
            _write_atomically(out_dir, tables, manifest, overwrite)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return manifest


def _manifest(
    files: Sequence[Path],
    spec: SourceSpec,
    options: PrepareOptions,
    kept_split: bool,
    log: StepLog,
    items: pl.DataFrame,
    format_name: str,
    started: float,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": format_name,
        "inputs": [str(Path(p).resolve()) for p in files],
        "source": asdict(spec),
        "options": asdict(options),
        "kept_split": kept_split,
        "steps": log.rows,
        "time_splits": log.time_splits,
        "splits": {name: log.last_counts(name) for name in log.scopes()},
        "n_items": items.height,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return json.loads(json.dumps(manifest))  # return exactly what is written


def summary_notes(manifest: dict[str, Any]) -> list[str]:
    """What a manifest says beyond its step counts, a line each: how many buckets prepared
    it, and where every time split cut (with the sessions after the log's bulk)."""
    lines = []
    if manifest["buckets"] > 1:
        lines.append(
            f"prepared in {manifest['buckets']} buckets of sessions, one in memory at a time "
            "(--buckets 1 holds the whole log in memory: faster where it fits)"
        )
    for name, where in manifest.get("time_splits", {}).items():
        lines.append(
            f"{name}: sessions from {where['boundary']} UTC ({where['measured_from']}); "
            f"clicks {where['clicks'][0]} .. {where['clicks'][1]}, session starts "
            f"{where['session_starts'][0]} .. {where['session_starts'][1]}"
        )
        if where.get("stragglers"):
            lines.append(
                f"{name}: {where['stragglers']:,} sessions start on {where['straggler_days']} "
                "thin days after the log's bulk (under a tenth of a typical day's starts each): "
                f"kept in {name}, and the {name} period counted back from the bulk's end"
            )
    return lines


def _as_written(
    splits: dict[str, pl.DataFrame] | dict[str, pl.LazyFrame],
    items: pl.DataFrame,
    item_ids: pl.Series,
) -> dict[str, pl.LazyFrame]:
    """The files' tables as docs/data-contract.md has them, from the item codes.

    Ids and `item_idx` are looked up by code (no join), a chunk at a time as each file
    is written, and so are the integer ids cast to Int64.
    """
    code = pl.col("item_id")
    idx_by_code = pl.Series([None] * len(item_ids), dtype=pl.Int32)
    idx_by_code = idx_by_code.scatter(items["item_id"], items["item_idx"])
    item_id = pl.lit(item_ids).gather(code).alias("item_id")
    item_idx = pl.lit(idx_by_code).gather(code).alias("item_idx")
    tables = {
        name: frame.lazy().select("session_id", item_id, item_idx, "time")
        for name, frame in splits.items()
    }
    tables["items"] = items.lazy().with_columns(item_id)
    return {name: table.with_columns(WRITTEN_IDS.cast(pl.Int64)) for name, table in tables.items()}


def _write_atomically(
    out_dir: Path, tables: dict[str, pl.LazyFrame], manifest: dict[str, Any], overwrite: bool
) -> None:
    tag = uuid.uuid4().hex[:8]
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{tag}")
    try:
        staging.mkdir()
        for name, table in tables.items():
            table.sink_parquet(staging / f"{name}.parquet", compression=COMPRESSION)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        swap_into_place(staging, out_dir)  # existence without --overwrite was refused earlier
    except OSError as error:  # a read-only directory, a full disk ...
        shutil.rmtree(staging, ignore_errors=True)
        raise InputDataError(
            f"{out_dir}: cannot write the prepared data there ({error.strerror or error}); "
            "nothing was written. Check that the directory is writable and has space, or "
            "pass another --out."
        ) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
