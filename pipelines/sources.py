"""Readers of raw click-log formats, all reduced to one normalised event table.

Every format is a `SourceSpec`: which columns hold the session, user, item, time,
event type, in-session order and published split. `scan_events` turns files and a
spec into a lazy frame with the normalised columns

    session_id?  user_id?  item_id  time (Float64 seconds, or the order)  order?  split?

where `?` marks columns that exist only when the source has them. Nothing is read
until the caller collects; problems found then are explained by `explain_bad_rows`,
which names the file, the column, the row and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import polars as pl

from gru4rec.errors import InputDataError

TimeUnit = Literal["s", "ms", "iso"]

FORMAT_NAMES = (
    "gru4rec-tsv", "prepared", "yoochoose", "diginetica", "retailrocket", "trivago", "generic"
)  # fmt: skip

# trivago RecSys 2019: the actions whose `reference` is an item id.
TRIVAGO_ITEM_ACTIONS = (
    "clickout item",
    "interaction item image",
    "interaction item info",
    "interaction item rating",
    "interaction item deals",
    "search for item",
)


@dataclass(frozen=True)
class SourceSpec:
    """Where the event fields live in a raw log."""

    session_col: str | None = None  # no session id: sessions are built from user + idle gap
    item_col: str = "ItemId"
    time_col: str | None = None  # no time: the order column stands in for it
    time_unit: TimeUnit = "s"  # s / ms since the epoch, or ISO-8601 text (dates too)
    user_col: str | None = None
    event_col: str | None = None  # event type; with event_filter keeps only those types
    event_filter: tuple[str, ...] = ()
    order_col: str | None = None  # position inside a session: orders ties, or replaces time
    split_col: str | None = None  # a published train/test split to keep exactly
    separator: str | None = None  # None: "\t" for .tsv/.txt, "," otherwise
    column_names: tuple[str, ...] = ()  # for files without a header line
    test_days: float = 1.0  # the format's customary test period (the reference's)


FORMATS: dict[str, SourceSpec] = {
    "gru4rec-tsv": SourceSpec(
        session_col="SessionId", item_col="ItemId", time_col="Time", separator="\t"
    ),
    # The split files `gru4rec prepare` writes (docs/data-contract.md), e.g. as recommend input.
    "prepared": SourceSpec(session_col="session_id", item_col="item_id", time_col="time"),
    # yoochoose-clicks.dat: session, ISO time, item, category; no header.
    "yoochoose": SourceSpec(
        session_col="session_id",
        item_col="item_id",
        time_col="timestamp",
        time_unit="iso",
        separator=",",
        column_names=("session_id", "timestamp", "item_id", "category"),
    ),
    # train-item-views.csv: the day is `eventdate`, the order inside it `timeframe` (ms).
    "diginetica": SourceSpec(
        session_col="session_id",
        item_col="item_id",
        time_col="eventdate",
        time_unit="iso",
        order_col="timeframe",
        separator=";",
        test_days=7.0,
    ),
    # events.csv: views only; no session id, so sessions come from visitor + idle gap.
    "retailrocket": SourceSpec(
        user_col="visitorid",
        item_col="itemid",
        time_col="timestamp",
        time_unit="ms",
        event_col="event",
        event_filter=("view",),
        separator=",",
        test_days=7.0,
    ),
    "trivago": SourceSpec(
        session_col="session_id",
        user_col="user_id",
        item_col="reference",
        time_col="timestamp",
        event_col="action_type",
        event_filter=TRIVAGO_ITEM_ACTIONS,
        order_col="step",
    ),
    "generic": SourceSpec(),
}


def resolve_spec(format_name: str, **overrides: object) -> SourceSpec:
    """The named format's spec with the non-None `overrides` applied."""
    if format_name not in FORMATS:
        raise InputDataError(
            f"unknown format {format_name!r}: choose one of {', '.join(FORMAT_NAMES)}."
        )
    changes = {key: value for key, value in overrides.items() if value is not None}
    if "event_filter" in changes:
        changes["event_filter"] = tuple(changes["event_filter"])  # type: ignore[arg-type]
    return replace(FORMATS[format_name], **changes)  # type: ignore[arg-type]


def _separator(path: Path, spec: SourceSpec) -> str:
    if spec.separator is not None:
        return spec.separator
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".txt", ".dat") else ","


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _scan_file(path: Path, spec: SourceSpec) -> pl.LazyFrame:
    """A raw lazy scan of one file, with the file checked to exist and be non-empty."""
    if not path.exists():
        raise InputDataError(f"{path}: no such file. Check the path (it is read as given).")
    if path.is_dir():
        raise InputDataError(f"{path}: is a directory; pass the click-log file itself.")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: the file is empty; a click log needs at least one event.")
    if _is_parquet(path):
        return pl.scan_parquet(path)
    if spec.column_names:
        return pl.scan_csv(
            path,
            separator=_separator(path, spec),
            has_header=False,
            new_columns=list(spec.column_names),
            infer_schema=False,  # everything as text; typed below with row-level checks
        )
    return pl.scan_csv(path, separator=_separator(path, spec), infer_schema=False)


def _columns(path: Path, frame: pl.LazyFrame) -> list[str]:
    try:
        return frame.collect_schema().names()
    except pl.exceptions.PolarsError as error:
        raise InputDataError(f"{path}: cannot be read as a table ({error}).") from error


def _check_columns(path: Path, spec: SourceSpec, present: list[str]) -> None:
    wanted = {
        "--session-col": spec.session_col,
        "--item-col": spec.item_col,
        "--time-col": spec.time_col,
        "--user-col": spec.user_col,
        "--event-col": spec.event_col,
        "--order-col": spec.order_col,
        "--split-col": spec.split_col,
    }
    for option, column in wanted.items():
        if column is None or column in present:
            continue
        hint = ""
        if len(present) == 1 and any(sep in present[0] for sep in ";,\t|"):
            hint = (
                f" The file has a single column {present[0]!r}: the separator is probably "
                "wrong; pass it with --separator."
            )
        else:
            close = difflib.get_close_matches(column, present, n=1)
            if close:
                hint = f" Did you mean {close[0]!r}? Pass {option} {close[0]}."
        raise InputDataError(
            f"{path}: column {column!r} (the {option} column) is missing; "
            f"the file has {present}.{hint}"
        )
    if spec.session_col is None and spec.user_col is None:
        raise InputDataError(
            f"{path}: the log needs a session column (--session-col) or a user column "
            "(--user-col) from which sessions are built with the idle gap."
        )
    if spec.time_col is None and spec.order_col is None:
        raise InputDataError(
            f"{path}: the log needs a time column (--time-col) or, for logs that only "
            "record the order of events, an order column (--order-col)."
        )
    if spec.event_filter and spec.event_col is None:
        raise InputDataError("--event-filter needs the event-type column (--event-col).")


def _as_seconds(column: str, unit: TimeUnit, dtype: pl.DataType) -> pl.Expr:
    """An expression parsing `column` into Float64 seconds; unparseable values become null."""
    value = pl.col(column)
    if dtype == pl.Date:
        return value.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Float64) / 1000.0
    if isinstance(dtype, pl.Datetime):
        return value.dt.epoch("ms").cast(pl.Float64) / 1000.0
    if unit == "iso":
        text = value.cast(pl.String).str.strip_chars()
        parsed = pl.coalesce(
            text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_unit="ms"),
            text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="ms"),
            text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="ms"),
            text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("ms")),
        )
        return parsed.dt.epoch("ms").cast(pl.Float64) / 1000.0
    seconds = value.cast(pl.Float64, strict=False)
    return seconds / 1000.0 if unit == "ms" else seconds


NULL_TEXTS = ("", "NA", "NaN", "nan", "null", "NULL", "None")


def _as_id(column: str, dtype: pl.DataType, text_ids: bool) -> pl.Expr:
    """Ids as Int64 (compact), or as text with `text_ids`; blanks and NA are null."""
    value = pl.col(column)
    if dtype.is_integer():
        return value.cast(pl.Int64)
    text = value.cast(pl.String).str.strip_chars()
    text = pl.when(text.is_in(NULL_TEXTS)).then(None).otherwise(text)
    return text if text_ids else text.cast(pl.Int64, strict=False)


def _normalise(frame: pl.LazyFrame, spec: SourceSpec, text_ids: bool) -> pl.LazyFrame:
    schema = frame.collect_schema()
    if spec.event_filter:
        assert spec.event_col is not None
        event = pl.col(spec.event_col).cast(pl.String).str.strip_chars()
        frame = frame.filter(event.is_in(list(spec.event_filter)))
    columns: list[pl.Expr] = [pl.col("row")]
    if spec.session_col:
        columns.append(
            _as_id(spec.session_col, schema[spec.session_col], text_ids).alias("session_id")
        )
    if spec.user_col:
        columns.append(_as_id(spec.user_col, schema[spec.user_col], text_ids).alias("user_id"))
    columns.append(_as_id(spec.item_col, schema[spec.item_col], text_ids).alias("item_id"))
    if spec.order_col:
        order = pl.col(spec.order_col).cast(pl.Float64, strict=False).alias("order")
        columns.append(order)
    if spec.time_col:
        columns.append(
            _as_seconds(spec.time_col, spec.time_unit, schema[spec.time_col]).alias("time")
        )
    else:  # order-only logs: the position is the time (sessions then sort by their id)
        assert spec.order_col is not None  # checked by _check_columns
        columns.append(pl.col(spec.order_col).cast(pl.Float64, strict=False).alias("time"))
    if spec.split_col:
        split = pl.col(spec.split_col).cast(pl.String).str.strip_chars().str.to_lowercase()
        columns.append(split.alias("split"))
    return frame.select(columns)


def _align_id_types(frames: list[pl.LazyFrame]) -> list[pl.LazyFrame]:
    """Make id columns agree across files (an Int64 column meeting a String one: String)."""
    schemas = [frame.collect_schema() for frame in frames]
    result = []
    for frame in frames:
        casts = []
        for column in ("session_id", "user_id", "item_id"):
            dtypes = {schema[column] for schema in schemas if column in schema}
            if column in frame.collect_schema() and len(dtypes) > 1:
                casts.append(pl.col(column).cast(pl.String))
        result.append(frame.with_columns(casts) if casts else frame)
    return result


def scan_events(paths: Sequence[Path], spec: SourceSpec, text_ids: bool = False) -> pl.LazyFrame:
    """Scan one log, or a published train/test pair, into the normalised event table.

    Ids are read as Int64 unless `text_ids`; `validate_events` raises `TextIdsNeeded`
    when an id is not an integer, and the caller scans again with `text_ids=True`.

    Two paths are a published split: the first is train, the second test, and a
    `split` column records which is which. Row order inside each file is kept
    (`file` and `row` columns), so equal times keep the order of the log.
    """
    if not 1 <= len(paths) <= 2:
        raise InputDataError(
            f"expected one log, or two files (train then test) of a published split; got {len(paths)}."
        )
    if len(paths) == 2 and spec.split_col:
        raise InputDataError("pass either two files (train, test) or --split-col, not both.")
    frames = []
    for file_index, path in enumerate(paths):
        raw = _scan_file(Path(path), spec)
        _check_columns(Path(path), spec, _columns(Path(path), raw))
        frame = _normalise(raw.with_row_index("row"), spec, text_ids).with_columns(
            pl.lit(file_index, pl.Int8).alias("file")
        )
        if len(paths) == 2:
            frame = frame.with_columns(pl.lit(("train", "test")[file_index]).alias("split"))
        frames.append(frame)
    return pl.concat(_align_id_types(frames), how="vertical")


def _bad_rows(spec: SourceSpec) -> dict[str, tuple[str, pl.Expr]]:
    """Checks on the normalised table: name -> (the raw column, the condition of a bad row)."""
    checks: dict[str, tuple[str, pl.Expr]] = {}
    if spec.session_col:
        checks["session_id"] = (spec.session_col, pl.col("session_id").is_null())
    if spec.user_col and not spec.session_col:
        checks["user_id"] = (spec.user_col, pl.col("user_id").is_null())
    checks["item_id"] = (spec.item_col, pl.col("item_id").is_null())
    if spec.time_col:
        checks["time"] = (spec.time_col, pl.col("time").is_null() | pl.col("time").is_nan())
    if spec.order_col:
        checks["order"] = (spec.order_col, pl.col("order").is_null())
    if spec.split_col:
        checks["split"] = (spec.split_col, ~pl.col("split").is_in(["train", "test"]))
    return checks


class TextIdsNeeded(Exception):
    """An id column holds text that is not an integer: scan again with `text_ids=True`."""


def validate_events(events: pl.DataFrame, paths: Sequence[Path], spec: SourceSpec) -> None:
    """Raise InputDataError at the first row with a null id, a bad time or a bad split."""
    if events.height == 0:
        what = f" after keeping event types {list(spec.event_filter)}" if spec.event_filter else ""
        raise InputDataError(
            f"{', '.join(map(str, paths))}: no events{what}. Check the file and the "
            "--event-col / --event-filter options."
        )
    for column, (raw_column, condition) in _bad_rows(spec).items():
        bad = events.filter(condition)
        if bad.height == 0:
            continue
        first = bad.row(0, named=True)
        path = Path(paths[first["file"]])
        raw = _raw_value(path, spec, raw_column, first["row"])
        if column.endswith("_id") and raw is not None and str(raw).strip() not in NULL_TEXTS:
            raise TextIdsNeeded(column)
        problem = {
            "time": f"the value {raw!r} cannot be read as a time in unit {spec.time_unit!r}",
            "split": f"the value {raw!r} is not 'train' or 'test'",
        }.get(column, f"the id is missing (the value is {raw!r})")
        line = first["row"] + (1 if spec.column_names or _is_parquet(path) else 2)
        where = f"row {first['row'] + 1}" + ("" if _is_parquet(path) else f" (line {line})")
        fix = {
            "time": "Fix the value, or choose the unit with --time-unit s|ms|iso.",
            "split": "The split column must hold 'train' or 'test'.",
        }.get(column, "Remove such rows or fill the id.")
        raise InputDataError(
            f"{path}: column {raw_column!r}, {where}: {problem}; "
            f"{bad.height} such row(s) in all. {fix}"
        )


def read_events(paths: Sequence[Path], spec: SourceSpec) -> pl.DataFrame:
    """Collect the normalised events once (streaming), checked row by row.

    Ids are read as integers when they all are, and as text otherwise.
    """
    try:
        try:
            events = scan_events(paths, spec).collect(engine="streaming")
            validate_events(events, paths, spec)
        except TextIdsNeeded:
            events = scan_events(paths, spec, text_ids=True).collect(engine="streaming")
            validate_events(events, paths, spec)
    except pl.exceptions.PolarsError as error:
        names = ", ".join(map(str, paths))
        raise InputDataError(
            f"{names}: cannot be read ({error}). Check the format options."
        ) from error
    return events.drop("row", "file")


def _raw_value(path: Path, spec: SourceSpec, column: str, row: int) -> object:
    """The value as written in the file, for the error message."""
    frame = _scan_file(path, spec)
    return frame.select(pl.col(column)).slice(row, 1).collect().item()
