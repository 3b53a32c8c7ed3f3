"""The log layouts `prepare` (and `recommend`) read: each format a `SourceSpec`, which
columns hold the session, user, item, time, event type, in-session order and published
split.

`FORMATS` is the one list of the formats: `FORMAT_NAMES`, the `--format` choices of the
command line and `sources.resolve_spec` read it. Light on purpose (no Polars), so the
command line can list the formats without loading the readers (`pipelines.sources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TimeUnit = Literal["s", "ms", "iso"]

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
FORMAT_NAMES = tuple(FORMATS)  # the names, in the order `--help` lists them

__all__ = ["FORMATS", "FORMAT_NAMES", "TRIVAGO_ITEM_ACTIONS", "SourceSpec", "TimeUnit"]
