"""Known-answer tests of every cleaning step, on tiny hand-written logs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gru4rec.pipelines import sessions as steps


def events(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["session_id", "item_id", "time"], orient="row")


def test_build_sessions_cuts_at_idle_gaps_and_user_changes() -> None:
    log = pl.DataFrame(
        {
            "user_id": [7, 7, 7, 7, 9, 9],
            "item_id": [1, 2, 3, 4, 5, 6],
            # user 7: gap 100 (same), 3601 (> 1 h: new), 3600 (not > 1 h: same)
            "time": [0.0, 100.0, 3701.0, 7301.0, 50.0, 60.0],
        }
    )
    result = steps.build_sessions(log, idle_gap=3600.0)
    assert result["session_id"].to_list() == [0, 0, 1, 1, 2, 2]
    assert result["item_id"].to_list() == [1, 2, 3, 4, 5, 6]


def test_build_sessions_sorts_each_user_by_time() -> None:
    log = pl.DataFrame({"user_id": [1, 2, 1], "item_id": [10, 20, 11], "time": [50.0, 0.0, 10.0]})
    result = steps.build_sessions(log, idle_gap=100.0)
    assert result.select("user_id", "item_id").rows() == [(1, 11), (1, 10), (2, 20)]


def test_order_events_by_session_start_then_time() -> None:
    log = events([(2, 20, 5.0), (1, 10, 9.0), (2, 21, 3.0), (1, 11, 8.0), (3, 30, 3.0)])
    result = steps.order_events(log)
    # session 2 starts at 3 (tie with 3: lower id first), session 1 at 8.
    assert result.select("session_id", "item_id").rows() == [
        (2, 21),
        (2, 20),
        (3, 30),
        (1, 11),
        (1, 10),
    ]


def test_order_events_uses_the_order_column_for_equal_times() -> None:
    log = pl.DataFrame(
        {
            "session_id": [1, 1, 1],
            "item_id": [5, 6, 7],
            "time": [0.0, 0.0, 0.0],
            "order": [3.0, 1.0, 2.0],
        }
    )
    assert steps.order_events(log)["item_id"].to_list() == [6, 7, 5]


def test_remove_consecutive_repeats_only_inside_a_session() -> None:
    log = events([(1, 5, 0.0), (1, 5, 1.0), (1, 6, 2.0), (1, 5, 3.0), (2, 5, 0.0), (2, 5, 1.0)])
    result = steps.remove_consecutive_repeats(log)
    # (1,5,1) repeats; (1,5,3) does not (6 in between); (2,5,0) is a new session.
    assert result.rows() == [(1, 5, 0.0), (1, 6, 2.0), (1, 5, 3.0), (2, 5, 0.0)]


def test_filter_support_needs_several_rounds() -> None:
    # Each round checks both conditions on the same frame. Round 1 drops item 9
    # (support 1); round 2 drops session 3 (now length 1); round 3 drops item 8 (now
    # support 1); round 4 drops session 2 (now length 1); round 5 changes nothing.
    log = events(
        [
            (1, 1, 0.0),
            (1, 2, 1.0),
            (2, 1, 0.0),
            (2, 8, 1.0),
            (3, 8, 0.0),
            (3, 9, 1.0),
            (4, 1, 0.0),
            (4, 2, 1.0),
        ]
    )
    kept, rounds = steps.filter_support(log, min_session_length=2, min_item_support=2)
    assert kept["session_id"].unique().sort().to_list() == [1, 4]
    assert rounds == 4
    again, more = steps.filter_support(kept, 2, 2)
    assert (again.height, more) == (kept.height, 0)


def test_split_by_time_uses_session_start_and_an_inclusive_boundary() -> None:
    day = steps.DAY
    log = events(
        [
            (1, 1, 0.0),
            (1, 2, 1.5 * day),  # starts before the boundary, ends after: train
            (2, 1, 1.0 * day),
            (2, 2, 1.2 * day),  # starts exactly on the boundary: test
            (3, 1, 0.5 * day),
            (3, 2, 2.5 * day),  # a late click: the last click, still train
            (4, 1, 2.0 * day),
            (4, 2, 2.1 * day),
        ]  # the last session start: 2 days
    )
    train, test, where = steps.split_by_time(log, days=1.0)
    assert train["session_id"].unique().sort().to_list() == [1, 3]
    assert test["session_id"].unique().sort().to_list() == [2, 4]
    assert where == steps.TimeSplit(
        1.0 * day, "last session start", (0.0, 2.5 * day), (0.0, 2.0 * day)
    )
    # An explicit boundary instead of the last days.
    train, test, where = steps.split_by_time(log, days=1.0, start=0.5 * day)
    assert test["session_id"].unique().sort().to_list() == [2, 3, 4]
    assert where.measured_from == "--test-start"


def test_split_by_time_goes_by_each_sessions_start_whatever_the_row_order() -> None:
    # Regression: the split cut at the first row whose session starts after the
    # boundary, trusting the rows to be in start order. When a step moves a session's
    # start (the support filter dropped its first events, here session 1's, whose start
    # is now day 3) the order no longer holds, and the cut put every session on one side.
    day = steps.DAY
    log = events(
        [
            (1, 2, 3.0 * day),
            (1, 3, 3.1 * day),  # first in the rows, starts last
            (2, 1, 0.5 * day),
            (2, 2, 0.6 * day),
            (3, 1, 1.0 * day),
            (3, 3, 1.1 * day),
            (4, 2, 2.5 * day),
            (4, 1, 2.6 * day),
        ]
    )
    train, test, where = steps.split_by_time(log, days=1.0, ordered=True)
    assert where.boundary == 2.0 * day
    assert train["session_id"].unique().sort().to_list() == [2, 3]
    assert test["session_id"].unique().sort().to_list() == [1, 4]
    assert train.height + test.height == log.height
    for part in (train, test):  # each part in order_events order
        assert part.equals(steps.order_events(part))


def test_split_by_fraction_takes_the_last_sessions_in_order() -> None:
    log = events([(s, 1, float(i)) for i, s in enumerate([4, 4, 2, 2, 9, 9, 1, 1])])
    train, valid = steps.split_by_fraction(log, 0.5)
    assert train["session_id"].unique(maintain_order=True).to_list() == [4, 2]
    assert valid["session_id"].unique(maintain_order=True).to_list() == [9, 1]


def test_drop_unknown_items_then_short_sessions() -> None:
    test = events([(1, 1, 0.0), (1, 99, 1.0), (1, 2, 2.0), (2, 1, 0.0), (2, 99, 1.0), (3, 99, 0.0)])
    kept, short = steps.drop_unknown_items(test, pl.Series([1, 2, 3]), min_session_length=2)
    assert kept.rows() == [(1, 1, 0.0), (1, 2, 2.0)]
    assert short.rows() == [(2, 1, 0.0)]  # session 2 lost item 99 and became too short


def test_item_map_is_dense_in_first_appearance_order_with_support() -> None:
    train = events([(1, 50, 0.0), (1, 40, 1.0), (2, 40, 0.0), (2, 60, 1.0), (2, 50, 2.0)])
    items = steps.item_map(train)
    assert items.rows() == [(50, 0, 2), (40, 1, 2), (60, 2, 1)]
    assert items.schema["item_idx"] == pl.Int32
    mapped = train.join(items, on="item_id", how="left", maintain_order="left")
    assert mapped["item_idx"].to_list() == [0, 1, 1, 2, 0]


@pytest.mark.parametrize(
    "frame, expected",
    [
        (events([(1, 5, 0.0), (1, 6, 1.0), (2, 5, 0.0)]), {"events": 3, "sessions": 2, "items": 2}),
        (
            events([]).cast({"session_id": pl.Int64, "item_id": pl.Int64, "time": pl.Float64}),
            {"events": 0, "sessions": 0, "items": 0},
        ),
    ],
)
def test_count(frame: pl.DataFrame, expected: dict[str, int]) -> None:
    assert steps.count(frame) == expected


def test_group_sessions_sorts_only_when_needed() -> None:
    grouped = events([(2, 20, 0.0), (2, 21, 1.0), (1, 10, 0.5)])  # contiguous, in time order
    assert steps.group_sessions(grouped) is grouped
    scattered = events([(1, 10, 5.0), (2, 20, 0.0), (1, 11, 1.0)])
    result = steps.group_sessions(scattered)
    assert result.select("session_id", "item_id").rows() == [(1, 11), (1, 10), (2, 20)]


@pytest.mark.parametrize(
    "item_ids", [[50, 40, 50, 60], [5 * 10**12, 7, 5 * 10**12, 0], ["b", "a", "b", "c"]]
)
def test_encode_items_gives_dense_codes_that_decode(item_ids: list) -> None:
    # Dense integer ids are looked up in an array, others (sparse, text) by hashing.
    log = events(
        [(1, item_ids[0], 0.0), (1, item_ids[1], 1.0), (2, item_ids[2], 2.0), (2, item_ids[3], 3.0)]
    )
    coded, ids = steps.encode_items(log)
    assert coded["item_id"].to_list() == [0, 1, 0, 2]
    assert ids.gather(coded["item_id"]).to_list() == item_ids
    assert coded.schema["item_id"] == pl.UInt16  # 2 bytes an event while <= 65,536 items


def test_encode_items_with_many_items() -> None:
    many = pl.DataFrame({"session_id": 1, "item_id": range(70_000, 0, -1), "time": 0.0})
    coded, ids = steps.encode_items(many)
    assert coded.schema["item_id"] == pl.UInt32
    assert ids.gather(coded["item_id"]).equals(many["item_id"])


def test_taking_kept_events_orders_sessions_by_their_new_start() -> None:
    # Session 1 starts first, but its first event is dropped: it then starts after 2.
    log = events([(1, 9, 0.0), (1, 1, 5.0), (1, 2, 6.0), (2, 1, 1.0), (2, 2, 2.0), (3, 9, 9.0)])
    coded, ids = steps.encode_items(log)
    kept = steps.KeptEvents(coded, len(ids))
    kept.drop(np.array([0, 5]))  # (1, 9) and all of session 3
    assert kept.counts() == {"events": 4, "sessions": 2, "items": 2}
    taken = steps.take(coded, kept.start_index(coded))
    assert taken.select("session_id", "time").rows() == [(2, 1.0), (2, 2.0), (1, 5.0), (1, 6.0)]
    assert coded.width == 0  # its columns were moved out, not copied


def test_split_by_time_of_ordered_events_gives_the_same_slices() -> None:
    day = steps.DAY
    log = events(
        [
            (3, 1, 0.0),
            (3, 2, 0.1 * day),
            (1, 1, 0.5 * day),
            (1, 2, 2.0 * day),
            (2, 1, 1.0 * day),
            (2, 2, 1.5 * day),
        ]
    )
    ordered = steps.order_events(log)
    general, sliced = steps.split_by_time(log, 0.6), steps.split_by_time(ordered, 0.6, ordered=True)
    for one, other in zip(general[:2], sliced[:2], strict=True):
        assert one.equals(other)
    assert general[2] == sliced[2]
    # The last session start is day 1 (session 2): sessions from day 0.4 on are test.
    assert sliced[1]["session_id"].to_list() == [1, 1, 2, 2]
