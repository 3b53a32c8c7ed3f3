"""Time splits that match the log: the test period is counted back from the end of the log's
bulk, not from a handful of late sessions after it (a news portal's log shape), which are
kept and reported; a split below the minimum is refused with the counts, the last days'
session starts and what to do; in memory and in buckets alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import InputDataError
from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.prepare import prepare
from gru4rec.pipelines.sessions import DAY, StartDays
from gru4rec.pipelines.sources import resolve_spec

BULK_DAYS, PER_DAY = 10, 200
STRAGGLERS = (14, 3, 3, 1, 2, 3)  # sessions starting on each of the six days after the bulk
COLUMNS = {"session_col": "session", "item_col": "item", "time_col": "ts", "time_unit": "s"}


def news_log(path: Path) -> Path:
    """BULK_DAYS days of PER_DAY sessions, then STRAGGLERS; 3 clicks a session, 30 items."""
    rng = np.random.default_rng(0)
    days = [d for d in range(BULK_DAYS) for _ in range(PER_DAY)]
    days += [BULK_DAYS + i for i, n in enumerate(STRAGGLERS) for _ in range(n)]
    rows = []
    for session, day in enumerate(days):
        start = day * DAY + rng.uniform(0, DAY - 600)
        for k, item in enumerate(rng.choice(30, size=3, replace=False)):
            rows.append((session, int(item), start + 60 * k))
    pl.DataFrame(rows, schema=["session", "item", "ts"], orient="row").write_csv(path)
    return path


def test_start_days_find_the_bulk_end() -> None:
    starts = np.array([0.5, 0.6, 1.2, 1.9, 2.5, 2.1, 2.4, 3.3, 5.1]) * DAY
    days = StartDays.of(starts)
    assert days.days.tolist() == [0, 1, 2, 3, 5] and days.counts.tolist() == [2, 2, 3, 1, 1]
    assert days.last[2] == 2.5 * DAY
    # median 2: days 3 and 5 (1 start each) are thick enough at a share of 0.5, thin at 0.6.
    assert days.bulk_end(0.5) == (5.1 * DAY, 0, 0)
    assert days.bulk_end(0.6) == (2.5 * DAY, 2, 2)
    halves = StartDays.combined([StartDays.of(starts[:4]), StartDays.of(starts[4:])])
    assert [a.tolist() for a in (halves.days, halves.counts, halves.last)] == [
        a.tolist() for a in (days.days, days.counts, days.last)
    ]


@pytest.mark.parametrize("buckets", [1, 4])
def test_the_test_period_ends_with_the_bulk_and_the_stragglers_are_kept(
    tmp_path: Path, buckets: int
) -> None:
    log = news_log(tmp_path / "news.csv")
    out = tmp_path / "out"
    manifest = prepare(
        [log], out, resolve_spec("generic", **COLUMNS), PrepareOptions(), buckets=buckets
    )
    where = manifest["time_splits"]["test"]
    assert where["stragglers"] == sum(STRAGGLERS) and where["straggler_days"] == len(STRAGGLERS)
    assert where["measured_from"] == "last session start of the log's bulk"
    test = pl.read_parquet(out / "test.parquet")
    starts = test.group_by("session_id").agg(pl.col("time").min())["time"].to_numpy()
    in_bulk = starts < BULK_DAYS * DAY
    # About the bulk's last day (a day back from its last start), plus every straggler.
    assert (~in_bulk).sum() == sum(STRAGGLERS)
    assert 0.8 * PER_DAY <= in_bulk.sum() <= 1.2 * PER_DAY
    assert where["boundary"].startswith(f"1970-01-{BULK_DAYS - 1:02d}")
    valid = manifest["splits"]["valid"]["sessions"]
    assert 0.8 * PER_DAY <= valid <= 1.2 * PER_DAY


def test_in_memory_and_in_buckets_give_the_same_output(tmp_path: Path) -> None:
    log = news_log(tmp_path / "news.csv")
    spec = resolve_spec("generic", **COLUMNS)
    one = prepare([log], tmp_path / "one", spec, PrepareOptions(), buckets=1)
    four = prepare([log], tmp_path / "four", spec, PrepareOptions(), buckets=4)
    for key in ("steps", "time_splits", "splits"):
        assert one[key] == four[key], key
    for name in ("train", "test", "train_tr", "valid"):
        assert pl.read_parquet(tmp_path / "one" / f"{name}.parquet").equals(
            pl.read_parquet(tmp_path / "four" / f"{name}.parquet")
        ), name


@pytest.mark.parametrize("buckets", [1, 4])
def test_a_split_below_the_minimum_is_refused(tmp_path: Path, buckets: int) -> None:
    log = news_log(tmp_path / "news.csv")
    spec = resolve_spec("generic", **COLUMNS)
    late = f"1970-01-{BULK_DAYS + len(STRAGGLERS):02d}"  # the last straggler day: 3 sessions
    with pytest.raises(InputDataError) as caught:
        prepare([log], tmp_path / "out", spec, PrepareOptions(test_start=late), buckets=buckets)
    message = str(caught.value)
    assert "the test split holds 3 sessions" in message
    assert "fewer than the minimum of 21 (1% of the 2,026 sessions split" in message
    assert f"{late}  3" in message and "1970-01-10  200" in message  # the days' tail
    assert "--test-start" in message and "--min-split-sessions" in message
    assert not (tmp_path / "out").exists()
    manifest = prepare(
        [log],
        tmp_path / "out",
        spec,
        PrepareOptions(test_start=late, min_split_sessions=0),
        buckets=buckets,
    )
    assert manifest["splits"]["test"]["sessions"] == 3


def test_the_command_reports_the_stragglers_and_refuses_a_tiny_split(tmp_path: Path) -> None:
    log = news_log(tmp_path / "news.csv")
    columns = [
        "--format",
        "generic",
        "--session-col",
        "session",
        "--item-col",
        "item",
        "--time-col",
        "ts",
    ]
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(log), "--out", str(tmp_path / "ok"), *columns])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        f"test: {sum(STRAGGLERS)} sessions start on {len(STRAGGLERS)} thin days after the log's bulk"
        in said
    )
    result = runner.invoke(
        app,
        [
            "prepare",
            str(log),
            "--out",
            str(tmp_path / "no"),
            *columns,
            "--test-start",
            "1970-01-16",
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "the test split holds 3 sessions" in " ".join(result.output.split())
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert manifest["options"]["min_split_sessions"] is None
