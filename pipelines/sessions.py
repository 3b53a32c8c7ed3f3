"""The cleaning steps of the reference preprocessing, each a small function on events.

Events are a Polars frame with `session_id`, `item_id`, `time` (and `user_id`,
`order`, `split` where the source has them). Each step takes and returns such a
frame; `pipelines.prepare` chains them and counts what every step drops.
"""

from __future__ import annotations

import polars as pl

DAY = 86_400.0


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


def order_events(events: pl.DataFrame) -> pl.DataFrame:
    """Sessions by start time (then id), events by time (then order, then log order)."""
    keys = ["time", "order"] if "order" in events.columns else ["time"]
    start = pl.col("time").min().over("session_id").alias("_start")
    return (
        events.with_columns(start)
        .sort(["_start", "session_id", *keys], maintain_order=True)
        .drop("_start")
    )


def remove_consecutive_repeats(events: pl.DataFrame) -> pl.DataFrame:
    """Drop an event whose item repeats the previous event's item in the same session.

    Expects `order_events` order (sessions contiguous).
    """
    repeat = (pl.col("item_id") == pl.col("item_id").shift(1)) & (
        pl.col("session_id") == pl.col("session_id").shift(1)
    )
    return events.filter(~repeat.fill_null(False))


def filter_support(
    events: pl.DataFrame, min_session_length: int, min_item_support: int
) -> tuple[pl.DataFrame, int]:
    """Drop short sessions and rare items, again and again until nothing changes.

    Dropping a rare item can shorten a session below the minimum, and dropping a
    session can make an item rare, hence the loop. Returns the events and the
    number of rounds that changed something.
    """
    rounds = 0
    while True:
        kept = events.filter(
            (pl.len().over("item_id") >= min_item_support)
            & (pl.len().over("session_id") >= min_session_length)
        )
        if kept.height == events.height:
            return kept, rounds
        events, rounds = kept, rounds + 1


def split_by_time(events: pl.DataFrame, days: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train / test by session start: test = sessions starting in the last `days` days.

    The boundary is `max(time) - days * 86400`; a session starting exactly there is test.
    """
    boundary = events["time"].max() - days * DAY  # type: ignore[operator]
    is_test = pl.col("time").min().over("session_id") >= boundary
    return events.filter(~is_test), events.filter(is_test)


def split_by_fraction(events: pl.DataFrame, fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train / validation for logs without time: the last `fraction` of sessions, in order."""
    sessions = events["session_id"].unique(maintain_order=True)
    n_valid = round(len(sessions) * fraction)
    valid_sessions = sessions.tail(n_valid) if n_valid else sessions.clear()
    is_valid = pl.col("session_id").is_in(valid_sessions.implode())
    return events.filter(~is_valid), events.filter(is_valid)


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
    return (
        train.group_by("item_id", maintain_order=True)
        .agg(pl.len().cast(pl.Int64).alias("support"))
        .with_row_index("item_idx")
        .select("item_id", pl.col("item_idx").cast(pl.Int32), "support")
    )


def attach_item_idx(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Add `item_idx` from the item map; every item must be in it."""
    return events.join(
        items.select("item_id", "item_idx"), on="item_id", how="left", maintain_order="left"
    )


def count(events: pl.DataFrame) -> dict[str, int]:
    """Events, sessions and distinct items of a frame."""
    if events.height == 0:
        return {"events": 0, "sessions": 0, "items": 0}
    row = events.select(
        pl.len().alias("events"),
        pl.col("session_id").n_unique().alias("sessions"),
        pl.col("item_id").n_unique().alias("items"),
    ).row(0, named=True)
    return {key: int(value) for key, value in row.items()}
