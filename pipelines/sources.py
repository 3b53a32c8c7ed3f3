"""Readers of raw click-log formats, all reduced to one normalised event table.

Every format is a `SourceSpec` (`pipelines.formats`): which columns hold the session,
user, item, time, event type, in-session order and published split. `scan_events` turns
files and a spec into a lazy frame with the normalised columns

    session_id?  user_id?  item_id  time (Float64 seconds, or the order)  order?  split?

where `?` marks columns that exist only when the source has them. Nothing is read
until the caller collects; `read_events` collects once, cheaply typed (ids as Int32
where they fit, ISO times in the one layout a sample shows), widens the types when a
value does not fit, and explains a bad value with `validate_events`, which names the
file, the column, the row and the fix.
"""

from __future__ import annotations

import difflib
import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from gru4rec.errors import InputDataError
from gru4rec.pipelines.formats import FORMAT_NAMES, FORMATS, SourceSpec, TimeUnit

IdType = Literal["int32", "int64", "text"]


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


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _scan_file(
    path: Path, spec: SourceSpec, typed: dict[str, pl.DataType] | None = None
) -> pl.LazyFrame:
    """A raw lazy scan of one file, with the file checked to exist and be non-empty.

    CSV columns are text (typed later, with row-level checks) except those in `typed`,
    which the CSV reader types itself, null where a value does not parse.
    """
    if not path.exists():
        raise InputDataError(f"{path}: no such file. Check the path (it is read as given).")
    if path.is_dir():
        raise InputDataError(f"{path}: is a directory; pass the click-log file itself.")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: the file is empty; a click log needs at least one event.")
    _check_compression(path)
    if is_parquet(path):
        return pl.scan_parquet(path)
    header: dict[str, Any] = {"has_header": True}
    if spec.column_names:
        header = {"has_header": False, "new_columns": list(spec.column_names)}
    return pl.scan_csv(
        path,
        separator=_separator(path, spec),
        infer_schema=False,
        schema_overrides=typed,
        ignore_errors=bool(typed),
        **header,
    )


# Compressions the reader cannot decompress, by their first bytes (gzip, zlib and zstd it can).
_UNREADABLE_COMPRESSION = {
    b"BZh": ("bzip2", "bunzip2"),
    b"\xfd7zXZ\x00": ("xz", "unxz"),
    b"PK\x03\x04": ("zip", "unzip"),
    b"7z\xbc\xaf\x27\x1c": ("7-Zip", "7z x"),
    b"\x04\x22\x4d\x18": ("lz4", "unlz4"),
}


def _check_compression(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
    for magic, (name, tool) in _UNREADABLE_COMPRESSION.items():
        if head.startswith(magic):
            raise InputDataError(
                f"{path}: is compressed with {name}, which prepare cannot read. Decompress it "
                f"first ({tool} {path.name}), or recompress it with gzip or zstd."
            )


def unreadable(paths: Sequence[Path], error: OSError) -> InputDataError:
    """The error for a file the reader failed on (a damaged or truncated compressed file)."""
    names = ", ".join(map(str, paths))
    hint = ""
    if any(path.suffix in (".gz", ".gzip") for path in paths):
        hint = " `gzip -t FILE` checks a .gz file."
    elif any(path.suffix in (".zst", ".zstd") for path in paths):
        hint = " `zstd -t FILE` checks a .zst file."
    return InputDataError(
        f"{names}: cannot be read ({error}): the file is damaged or was cut short (a "
        f"download or copy that did not finish?). Fetch or copy it again.{hint}"
    )


def _columns(path: Path, frame: pl.LazyFrame) -> list[str]:
    try:
        return frame.collect_schema().names()
    except pl.exceptions.PolarsError as error:
        raise InputDataError(f"{path}: cannot be read as a table ({error}).") from error
    except OSError as error:
        raise unreadable([path], error) from error


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


# ISO-8601 layouts that Polars' fixed-width parser reads (several times faster than
# the general one, whose fraction directive must end the format: hence "Z" is cut
# first where it may follow, as `_iso_any` accepts it there).
ISO_LAYOUTS = (
    "%Y-%m-%dT%H:%M:%S.%3fZ",
    "%Y-%m-%dT%H:%M:%S.%6fZ",
    "%Y-%m-%dT%H:%M:%S.%9fZ",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M:%S.%3f",
    "%Y-%m-%d %H:%M:%S.%6f",
    "%Y-%m-%d %H:%M:%S.%9f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)
ISO_SAMPLE_ROWS = 1000


def _iso_any(text: pl.Expr) -> pl.Expr:
    """ISO-8601 text in any of the accepted layouts (each value is tried against all)."""
    return pl.coalesce(
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_unit="ms"),
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="ms"),
        text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="ms"),
        text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("ms")),
    )


def _iso_in_layout(text: pl.Expr, layout: str) -> pl.Expr:
    if layout.endswith("Z"):
        text, layout = text.str.strip_suffix("Z"), layout[:-1]
    # No cache: times are nearly all distinct, and the cache costs more than it saves.
    return text.str.to_datetime(layout, strict=False, time_unit="ms", cache=False)


def _sample_layout(frame: pl.LazyFrame, column: str) -> str | None:
    """The layout of `ISO_LAYOUTS` that reads the first rows exactly as `_iso_any` does."""
    sample = frame.select(pl.col(column).cast(pl.String).str.strip_chars()).head(ISO_SAMPLE_ROWS)
    expected = sample.select(_iso_any(pl.col(column))).collect().to_series()
    if expected.null_count():
        return None
    for layout in ISO_LAYOUTS:
        parsed = sample.select(_iso_in_layout(pl.col(column), layout)).collect().to_series()
        if parsed.equals(expected):
            return layout
    return None


def _as_seconds(
    column: str, unit: TimeUnit, dtype: pl.DataType, layout: str | None, strip: bool = True
) -> pl.Expr:
    """An expression parsing `column` into Float64 seconds; unparseable values become null.

    ISO text is read in `layout` when given (values in another layout become null), with
    surrounding whitespace stripped first unless not `strip`.
    """
    value = pl.col(column)
    if dtype == pl.Date:
        return value.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Float64) / 1000.0
    if isinstance(dtype, pl.Datetime):
        return value.dt.epoch("ms").cast(pl.Float64) / 1000.0
    if unit == "iso":
        text = value.cast(pl.String)
        text = text.str.strip_chars() if strip else text
        parsed = _iso_any(text) if layout is None else _iso_in_layout(text, layout)
        return parsed.dt.epoch("ms").cast(pl.Float64) / 1000.0
    seconds = value.cast(pl.Float64, strict=False)
    return seconds / 1000.0 if unit == "ms" else seconds


NULL_TEXTS = ("", "NA", "NaN", "nan", "null", "NULL", "None")


ID_DTYPES: dict[IdType, pl.DataType] = {"int32": pl.Int32(), "int64": pl.Int64()}


def _as_id(column: str, dtype: pl.DataType, ids: IdType) -> pl.Expr:
    """Ids as Int32 or Int64 (a value that does not fit becomes null), or as text;
    blanks and NA are null. Integer columns stay integers even as text ids."""
    value = pl.col(column)
    if dtype.is_integer():
        return value.cast(pl.Int32, strict=False) if ids == "int32" else value.cast(pl.Int64)
    text = value.cast(pl.String).str.strip_chars()
    if ids != "text":  # the null texts are no integers either
        return text.cast(ID_DTYPES[ids], strict=False)
    return pl.when(text.is_in(NULL_TEXTS)).then(None).otherwise(text)


@dataclass(frozen=True)
class Parsing:
    """How raw values are typed: the cheapest way first, widened when a value does not fit."""

    ids: IdType = "int64"  # int32 halves the memory of the ids; text when one is no integer
    # Integer ids typed by the CSV reader, ISO times in the one layout a sample shows, time
    # text as written (not stripped): several times faster. A value read so is null where
    # the general way might still read it, so then the log is read again without `fast`.
    fast: bool = False
    locate: bool = False  # `file` and `row` columns, to name the row of a bad value


def _normalise(frame: pl.LazyFrame, spec: SourceSpec, parsing: Parsing) -> pl.LazyFrame:
    schema = frame.collect_schema()
    if spec.event_filter:
        assert spec.event_col is not None
        event = pl.col(spec.event_col).cast(pl.String).str.strip_chars()
        frame = frame.filter(event.is_in(list(spec.event_filter)))
    columns: list[pl.Expr] = [pl.col("row")] if parsing.locate else []
    if spec.session_col:
        columns.append(
            _as_id(spec.session_col, schema[spec.session_col], parsing.ids).alias("session_id")
        )
    if spec.user_col:
        columns.append(_as_id(spec.user_col, schema[spec.user_col], parsing.ids).alias("user_id"))
    columns.append(_as_id(spec.item_col, schema[spec.item_col], parsing.ids).alias("item_id"))
    if spec.order_col:
        order = pl.col(spec.order_col).cast(pl.Float64, strict=False).alias("order")
        columns.append(order)
    if spec.time_col:
        dtype = schema[spec.time_col]
        fast = parsing.fast and spec.time_unit == "iso" and dtype == pl.String
        layout = _sample_layout(frame, spec.time_col) if fast else None
        seconds = _as_seconds(spec.time_col, spec.time_unit, dtype, layout, strip=not fast)
        columns.append(seconds.alias("time"))
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


LOG_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".parquet", ".pq")  # before .gz / .zst


def expand_inputs(inputs: Sequence[Path | str]) -> tuple[list[Path], bool]:
    """The files of the inputs, and whether they are a published train/test pair.

    Each input is a file, a directory (its log files, by name: the parts of one log, as
    hourly or daily partitions arrive) or a glob such as `clicks/clicks_hour_*.csv` (the
    matching files, by name). Two inputs of one file each are a published split (train,
    then test); anything else is one log in as many files as it has.
    """
    files: list[list[Path]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            parts = sorted(p for p in path.iterdir() if p.is_file() and _is_log_part(p))
            if not parts:
                raise InputDataError(
                    f"{path}: the directory holds no log files ({', '.join(LOG_SUFFIXES)}, "
                    "optionally .gz or .zst)."
                )
        elif glob.has_magic(str(given)) and not path.exists():
            parts = sorted(Path(p) for p in glob.glob(str(given)) if Path(p).is_file())
            if not parts:
                raise InputDataError(f"{given}: no file matches this pattern.")
        else:
            parts = [path]
        files.append(parts)
    pair = len(files) == 2 and all(len(parts) == 1 for parts in files)
    if len(files) == 2 and not pair:
        raise InputDataError(
            "two inputs are a published split, a train file then a test file; a directory or "
            "pattern is the parts of one log: pass it alone."
        )
    if len(files) > 2:
        raise InputDataError(
            f"expected one log (a file, a directory or a pattern), or two files (train then "
            f"test) of a published split; got {len(files)} inputs."
        )
    return [path for parts in files for path in parts], pair


def _is_log_part(path: Path) -> bool:
    """A data file of a partitioned log (not a marker such as _SUCCESS or a hidden file)."""
    name = path.name.lower().removesuffix(".gz").removesuffix(".zst")
    return not path.name.startswith((".", "_")) and name.endswith(LOG_SUFFIXES)


def scan_events(
    paths: Sequence[Path],
    spec: SourceSpec,
    text_ids: bool = False,
    *,
    parsing: Parsing | None = None,
    pair: bool = False,
) -> pl.LazyFrame:
    """Scan one log (in one or more files), or a published train/test pair, into the
    normalised event table.

    Ids are read as Int64 unless `text_ids`, and rows are located (`file` and `row`
    columns), unless `parsing` says otherwise. Row order inside each file is kept, and
    files are read in the order given, so equal times keep the order of the log.

    `pair`: the two paths are a published split: the first is train, the second test, and
    a `split` column records which is which.
    """
    if parsing is None:
        parsing = Parsing(ids="text" if text_ids else "int64", locate=True)
    if not paths or (pair and len(paths) != 2):
        raise InputDataError(
            f"expected one log, or two files (train then test) of a published split; got {len(paths)}."
        )
    if pair and spec.split_col:
        raise InputDataError("pass either two files (train, test) or --split-col, not both.")
    frames = []
    for file_index, path in enumerate(paths):
        raw = _scan_file(Path(path), spec)
        _check_columns(Path(path), spec, _columns(Path(path), raw))
        if parsing.fast and parsing.ids != "text" and not is_parquet(Path(path)):
            ids = (spec.session_col, spec.user_col, spec.item_col)
            raw = _scan_file(Path(path), spec, {c: ID_DTYPES[parsing.ids] for c in ids if c})
        if parsing.locate:
            raw = raw.with_row_index("row")
        frame = _normalise(raw, spec, parsing)
        if parsing.locate:
            frame = frame.with_columns(pl.lit(file_index, pl.Int32).alias("file"))
        if pair:
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


class WiderIdsNeeded(Exception):
    """An id is in the file but was read as null: `value` is it as an integer (else None)."""

    def __init__(self, column: str, value: int | None) -> None:
        super().__init__(column)
        self.value = value


def _as_integer(raw: object) -> int | None:
    try:
        return int(str(raw).strip())
    except ValueError:
        return None


def validate_events(events: pl.DataFrame, paths: Sequence[Path], spec: SourceSpec) -> None:
    """Raise InputDataError at the first row with a null id, a bad time or a bad split.

    `events` are located (scanned with `file` and `row` columns); an id that is in the
    file but was read as null raises `WiderIdsNeeded` instead.
    """
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
            raise WiderIdsNeeded(column, _as_integer(raw))
        problem = {
            "time": f"the value {raw!r} cannot be read as a time in unit {spec.time_unit!r}",
            "split": f"the value {raw!r} is not 'train' or 'test'",
        }.get(column, f"the id is missing (the value is {raw!r})")
        line = first["row"] + (1 if spec.column_names or is_parquet(path) else 2)
        where = f"row {first['row'] + 1}" + ("" if is_parquet(path) else f" (line {line})")
        fix = {
            "time": "Fix the value, or choose the unit with --time-unit s|ms|iso.",
            "split": "The split column must hold 'train' or 'test'.",
        }.get(column, "Remove such rows or fill the id.")
        raise InputDataError(
            f"{path}: column {raw_column!r}, {where}: {problem}; "
            f"{bad.height} such row(s) in all. {fix}"
        )


def read_events(
    paths: Sequence[Path], spec: SourceSpec, *, compact: bool = False, pair: bool = False
) -> pl.DataFrame:
    """Collect the normalised events (streaming), checked row by row.

    Ids are read as integers when they all are (Int64, or with `compact` Int32 where
    they fit), and as text otherwise. The first read is the fast one (`Parsing.fast`);
    where a value needs more, the log is read again so: the result is the same.
    """
    events = _read_checked(
        paths, spec, compact, pair, lambda scan: scan.collect(engine="streaming")
    )
    assert isinstance(events, pl.DataFrame)
    return events


def write_events(
    paths: Sequence[Path],
    spec: SourceSpec,
    write: Callable[[pl.LazyFrame], pl.LazyFrame],
    *,
    compact: bool = False,
    pair: bool = False,
) -> pl.LazyFrame:
    """`read_events` for a log larger than memory: `write(scan)` streams the normalised
    events to files and returns a scan of them; they are checked there.

    `write` may be called again (wider ids, all time layouts), and must then replace
    what it wrote before.
    """
    events = _read_checked(paths, spec, compact, pair, write)
    assert isinstance(events, pl.LazyFrame)
    return events


Materialise = Callable[[pl.LazyFrame], pl.DataFrame | pl.LazyFrame]


def _read_checked(
    paths: Sequence[Path], spec: SourceSpec, compact: bool, pair: bool, materialise: Materialise
) -> pl.DataFrame | pl.LazyFrame:
    parsing = Parsing(ids="int32" if compact else "int64", fast=True)
    try:
        while True:
            try:
                return _collect_checked(paths, spec, parsing, pair, materialise)
            except WiderIdsNeeded as needed:
                parsing = _widened(parsing, needed.value)
    except pl.exceptions.PolarsError as error:
        names = ", ".join(map(str, paths))
        raise InputDataError(
            f"{names}: cannot be read ({error}). Check the format options."
        ) from error
    except OSError as error:
        raise unreadable(paths, error) from error


INT_RANGES = {"int32": range(-(2**31), 2**31), "int64": range(-(2**63), 2**63)}


def _widened(parsing: Parsing, value: int | None) -> Parsing:
    """How to read again after an id was read as null that is `value` in the file (None:
    not an integer). Every step reads more (not fast, then Int64, then text): it ends."""
    if value is not None and parsing.ids != "text":
        if parsing.fast and value in INT_RANGES[parsing.ids]:
            return replace(parsing, fast=False)  # only the fast read could not take it
        if parsing.ids == "int32" and value in INT_RANGES["int64"]:
            return replace(parsing, ids="int64")
    return replace(parsing, ids="text")


def _collect_checked(
    paths: Sequence[Path], spec: SourceSpec, parsing: Parsing, pair: bool, materialise: Materialise
) -> pl.DataFrame | pl.LazyFrame:
    events = materialise(scan_events(paths, spec, parsing=parsing, pair=pair))
    checks = _bad_rows(spec)
    found = (
        events.lazy()
        .select(
            pl.len().alias("_rows"),
            **{name: condition.any() for name, (_, condition) in checks.items()},
        )
        .collect(engine="streaming")
    )
    if found["_rows"].item() == 0:
        validate_events(pl.DataFrame(), paths, spec)  # raises: no events
    bad = found.drop("_rows")
    if not any(bad.row(0)):
        return events
    del events
    if parsing.fast and "time" in bad.columns and bad["time"].item():
        # Maybe times in a layout other than the sample's further down: read all layouts.
        return _collect_checked(paths, spec, replace(parsing, fast=False), pair, materialise)
    # Only now locate the rows, to name the first bad one (or to widen the ids).
    any_bad = pl.any_horizontal(condition for _, condition in checks.values())
    located = scan_events(paths, spec, parsing=replace(parsing, locate=True), pair=pair)
    located = located.filter(any_bad)
    validate_events(located.collect(engine="streaming"), paths, spec)
    raise AssertionError("unreachable: validate_events raises on a bad row")


def _raw_value(path: Path, spec: SourceSpec, column: str, row: int) -> object:
    """The value as written in the file, for the error message."""
    frame = _scan_file(path, spec)
    return frame.select(pl.col(column)).slice(row, 1).collect().item()
