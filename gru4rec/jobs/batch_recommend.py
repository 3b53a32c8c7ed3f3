"""Batch recommendations: a file of session events in, a Parquet file of top-k lists out."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.pipelines.sessions import order_events
from gru4rec.pipelines.sources import SourceSpec, expand_inputs, read_events
from gru4rec.serving.recommend import Recommender


def recommend_file(
    recommender: Recommender,
    input_path: Path,
    spec: SourceSpec,
    output: Path,
    *,
    k: int = 20,
    exclude_seen: bool = False,
    batch_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the top-k items of every session in `input_path` to `output` (Parquet).

    The output is long: `session_id, rank, item_id, score` (original ids), sessions in
    order of their start, ranks 1..k. It is written to a temporary file and renamed, so a
    failure never leaves a partial file. `progress(done, total)` is called per batch.
    Returns a summary: sessions served and skipped, unknown item events, rows, speed.
    """
    if k < 1:
        raise ConfigError(f"--k must be at least 1; got {k}.")
    staging = _staging_path(Path(output))
    try:
        grouped = read_sessions(input_path, spec)
        started = time.perf_counter()
        recs, counts = score_sessions(
            recommender,
            grouped,
            k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            progress=progress,
        )
        seconds = time.perf_counter() - started
        if counts["sessions_served"] == 0:
            raise InputDataError(
                f"{input_path}: no session has an item the model knows; nothing to recommend."
            )
        recs.write_parquet(staging)
        os.replace(staging, output)
    finally:
        staging.unlink(missing_ok=True)
    return {
        **counts,
        "seconds": seconds,
        "sessions_per_s": counts["sessions_served"] / seconds if seconds > 0 else 0.0,
    }


def score_sessions(
    recommender: Recommender,
    grouped: pl.DataFrame,
    k: int,
    *,
    exclude_seen: bool = False,
    batch_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The top-k rows (`session_id, rank, item_id, score`) of `read_sessions`' sessions, in
    their order, and the counts: sessions, served and skipped (no known item), events of
    unknown items, rows. Every engine scores so."""
    session_ids = grouped["session_id"]
    sessions = as_model_ids(grouped["item_id"], recommender.item_ids.dtype)
    parts, unknown, skipped = [], 0, 0
    for start in range(0, len(sessions), batch_size):
        batch = sessions[start : start + batch_size]
        table, report = recommender.recommend(
            batch, k, exclude_seen=exclude_seen, batch_size=batch_size
        )
        unknown += report.n_unknown_items
        skipped += len(report.empty_sessions)
        parts.append(table.with_columns(pl.col("session") + start))
        if progress is not None:
            progress(start + len(batch), len(sessions))
    recs = pl.concat(parts) if parts else recommender.recommend([], k)[0]
    recs = recs.select(
        session_ids.gather(recs["session"].to_numpy()).alias("session_id"),
        "rank",
        "item_id",
        "score",
    )
    counts = {
        "sessions": len(sessions),
        "sessions_served": len(sessions) - skipped,
        "sessions_skipped": skipped,
        "unknown_item_events": unknown,
        "rows": recs.height,
    }
    return recs, counts


def read_sessions(input_path: Path, spec: SourceSpec) -> pl.DataFrame:
    """The input's sessions in order of their start: `session_id` and `item_id`, the list
    of the session's items in order (every engine reads its input so)."""
    files, _ = expand_inputs([input_path])  # a file, a directory of parts or a pattern
    return group_sessions(read_events(files, spec))


def group_sessions(events: pl.DataFrame) -> pl.DataFrame:
    """Events as sessions in order of their start, each the list of its items in order."""
    return order_events(events).group_by("session_id", maintain_order=True).agg("item_id")


def _staging_path(output: Path) -> Path:
    """A temporary file beside `output`, created now so an unwritable place fails early."""
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise InputDataError(f"--out {output}: the output is Parquet; name it *.parquet.")
    return staging_beside(output, folder=False)


def staging_beside(output: Path, *, folder: bool) -> Path:
    """A temporary file (or `folder`) beside `output`, created now so that a missing or
    unwritable directory fails before any work, with what to do."""
    parent = output.parent
    if not parent.is_dir():
        raise InputDataError(
            f"--out {output}: the directory {parent} does not exist; create it first."
        )
    staging = parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if folder:
            staging.mkdir()
        else:
            staging.touch()
    except OSError as error:
        raise InputDataError(
            f"--out {output}: cannot write in {parent} ({error.strerror})."
        ) from None
    return staging


def model_id_lists(lists: pl.Series, dtype: Any) -> pl.Series:
    """Session lists cast to the model's id type (integer ids meet text ids; an id that
    does not convert becomes null, and is left out by every caller)."""
    if lists.dtype.inner != dtype:  # type: ignore[attr-defined]
        lists = lists.cast(pl.List(dtype), strict=False)
    return lists


def as_model_ids(lists: pl.Series, dtype: Any) -> list[list[Any]]:
    """Sessions as lists of ids of the model's id type (`model_id_lists`, nulls left out)."""
    lists = model_id_lists(lists, dtype)
    return [[i for i in s if i is not None] if s is not None else [] for s in lists.to_list()]
