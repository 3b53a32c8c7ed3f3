"""What `prepare` is asked to do (`PrepareOptions`) and what it did (`StepLog`): the counts
after every step and where the time splits cut, shared by the in-memory and the
bucketed paths."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gru4rec.errors import InputDataError
from gru4rec.pipelines import sessions as steps


@dataclass(frozen=True)
class PrepareOptions:
    """The optional steps; None picks the default for a whole log vs a kept split."""

    idle_gap: float = 3600.0  # seconds of inactivity that end a user's session
    remove_repeats: bool | None = None  # default: on for a whole log, off for a kept split
    apply_filter: bool | None = None  # iterative support filter; same default rule
    min_session_length: int = 2
    min_item_support: int = 5
    test_days: float | None = None  # None: the format's customary period
    # Test = sessions starting at or after this time (seconds since 1970 UTC, or an ISO
    # date / datetime in UTC); None: the last test_days before the last session start of
    # the log's bulk (`sessions.StartDays.bulk_end`).
    test_start: float | str | None = None
    valid_days: float | None = None  # None: as test_days; 0: no validation split
    valid_fraction: float | None = None  # last fraction of train sessions, for logs without time
    # A computed test or validation split with fewer sessions is refused; None: 1% of the
    # sessions split, at most 100 (a published split is kept as given); 0: no minimum.
    min_split_sessions: int | None = None

    def __post_init__(self) -> None:
        if self.min_session_length < 1 or self.min_item_support < 1:
            raise InputDataError("--min-session-length and --min-item-support must be >= 1.")
        if self.idle_gap <= 0:
            raise InputDataError("--idle-gap must be a positive number of seconds.")
        for name in ("test_days", "valid_days"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputDataError(f"--{name.replace('_', '-')} must be >= 0.")
        if self.valid_fraction is not None and not 0 < self.valid_fraction < 1:
            raise InputDataError("--valid-fraction must be between 0 and 1 (exclusive).")
        if self.min_split_sessions is not None and self.min_split_sessions < 0:
            raise InputDataError("--min-split-sessions must be >= 0.")
        if isinstance(self.test_start, str):
            object.__setattr__(self, "test_start", parse_time(self.test_start, "--test-start"))


def parse_time(text: str, option: str) -> float:
    """Seconds since 1970 UTC from an ISO date or datetime (UTC unless it says otherwise)
    or a number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputDataError(
            f"{option} takes an ISO date or datetime (e.g. 2017-10-16 or 2017-10-16T06:00), "
            f"or seconds since 1970; got {text!r}."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class StepLog:
    """Counts after every step, and what each step dropped; where time splits cut."""

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.time_splits: dict[str, dict[str, Any]] = {}
        self._report = report

    def record_time_split(self, name: str, where: steps.TimeSplit) -> None:
        """A time split's boundary and the ranges of clicks and session starts it saw."""
        self.time_splits[name] = {
            "boundary": _iso(where.boundary),
            "measured_from": where.measured_from,
            "clicks": [_iso(t) for t in where.clicks],
            "session_starts": [_iso(t) for t in where.starts],
            "stragglers": where.stragglers,  # sessions on thin days after the bulk, kept
            "straggler_days": where.straggler_days,
        }

    def table(self) -> str:
        """The counts so far as a plain-text table (for an error message)."""
        lines = [f"{'step':<58} {'scope':<8} {'events':>12} {'sessions':>10} {'items':>8}"]
        for row in self.rows:
            values = [
                ("-" if row[k] is None else f"{row[k]:,}") for k in ("events", "sessions", "items")
            ]
            lines.append(
                f"{row['step'][:58]:<58} {row['scope']:<8} {values[0]:>12} "
                f"{values[1]:>10} {values[2]:>8}"
            )
        for name, where in self.time_splits.items():
            lines.append(
                f"{name} split: boundary {where['boundary']} ({where['measured_from']}); "
                f"clicks {where['clicks'][0]} .. {where['clicks'][1]}, session starts "
                f"{where['session_starts'][0]} .. {where['session_starts'][1]}"
            )
        return "\n".join(lines)

    def record(
        self, step: str, counts: dict[str, int], *, scope: str = "all", **extra: int
    ) -> None:
        """`counts` (events, sessions, items) after `step`; drops are against the scope's last row."""
        previous = next((row for row in reversed(self.rows) if row["scope"] == scope), None)
        row: dict[str, Any] = {"step": step, "scope": scope, **counts}
        for key in ("events", "sessions", "items"):
            before = previous[key] if previous else counts[key]
            # None: the step before could not count it (raw rows before the event filter).
            row[f"dropped_{key}"] = None if before is None else int(before) - counts[key]
        self.rows.append({**row, **extra})
        if self._report:
            self._report(step)

    def record_unfiltered(self, events: int) -> None:
        """The `events` read before the event filter, as the first row ("read"); their
        sessions and items are not counted (None), nor, then, what the filter drops of them."""
        self.rows.append(
            {
                "step": "read",
                "scope": "all",
                "events": events,
                "sessions": None,
                "items": None,
                "dropped_events": 0,
                "dropped_sessions": 0,
                "dropped_items": 0,
            }
        )

    def scopes(self) -> list[str]:
        """The splits counted, in the order first counted."""
        return list(dict.fromkeys(row["scope"] for row in self.rows if row["scope"] != "all"))

    def last_counts(self, scope: str) -> dict[str, int]:
        row = next(row for row in reversed(self.rows) if row["scope"] == scope)
        return {key: row[key] for key in ("events", "sessions", "items")}


SPLIT_PARTS = {"test": ("train", "test"), "valid": ("train_tr", "valid")}  # split, and of what
MIN_SPLIT_SHARE, MIN_SPLIT_CAP = 0.01, 100


def check_splits(
    log: StepLog,
    options: PrepareOptions,
    names: Sequence[str],
    kept_split: bool,
    start_days: Callable[[str], steps.StartDays],
) -> None:
    """Refuse an empty split (any of `names`, with the counts of every step), and a test or
    validation split made here (not `kept_split`) holding fewer sessions than
    `options.min_split_sessions` (default: 1% of the sessions split, at most 100), with the
    counts, the last days' session starts (`start_days(split)`: of what was split) and what
    to do. The same check for the split in memory and in buckets."""
    for name in names:
        if log.last_counts(name)["events"] == 0:
            raise InputDataError(
                f"the {name} split is empty after these steps:\n{log.table()}\n"
                "Adjust --test-days / --test-start, --valid-days or the filters."
            )
    if kept_split:
        return
    for name, parts in SPLIT_PARTS.items():
        if name not in names:
            continue
        counts = log.last_counts(name)
        total = sum(log.last_counts(part)["sessions"] for part in parts)
        minimum = options.min_split_sessions
        rule = "--min-split-sessions"
        if minimum is None:
            minimum = min(MIN_SPLIT_CAP, math.ceil(MIN_SPLIT_SHARE * total))
            rule = f"1% of the {total:,} sessions split, at most {MIN_SPLIT_CAP}"
        if counts["sessions"] >= minimum:
            continue
        days = start_days(name)
        where = log.time_splits.get(name)
        placed = f" (boundary {where['boundary']} UTC, {where['measured_from']})" if where else ""
        advice = (
            "Place the boundary inside the log with --test-start DATE (e.g. --test-start "
            f"{np.datetime64(int(days.bulk_end()[0] // steps.DAY), 'D')}) or a longer "
            "--test-days"
            if name == "test"
            else "Use a longer --valid-days or a --valid-fraction"
        )
        raise InputDataError(
            f"the {name} split holds {counts['sessions']:,} sessions ({counts['events']:,} "
            f"events){placed}, fewer than the minimum of {minimum:,} ({rule}). Session "
            f"starts per day, the last days of what was split:\n{days.tail()}\n{advice}; or "
            "set --min-split-sessions (0: no minimum)."
        )


__all__ = ["PrepareOptions", "StepLog", "check_splits", "parse_time"]
