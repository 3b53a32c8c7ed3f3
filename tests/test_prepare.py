"""`prepare` end to end: every format, the manifest, atomic output, bad input, real logs."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from pathlib import Path

import polars as pl
import pytest

from gru4rec.errors import InputDataError
from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.prepare import prepare
from gru4rec.pipelines.sources import read_events, resolve_spec
from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log
from tests.conftest import shared_file

DAY = 86_400


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    else:
        path.write_text(text)
    return path


def read_split(out: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(out / f"{name}.parquet")


def test_synthetic_log_through_the_whole_pipeline(tmp_path: Path) -> None:
    clicks = generate_clicks(SyntheticLog(n_sessions=3000, n_items=200, days=10, seed=1))
    log = write_click_log(clicks, tmp_path / "clicks.tsv.gz", "gru4rec-tsv")
    out = tmp_path / "data"
    manifest = prepare([log], out, resolve_spec("gru4rec-tsv"))
    assert sorted(p.name for p in out.iterdir()) == [
        "items.parquet",
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "train_tr.parquet",
        "valid.parquet",
    ]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    train, test, items = read_split(out, "train"), read_split(out, "test"), read_split(out, "items")
    assert train.schema == pl.Schema(
        {"session_id": pl.Int64, "item_id": pl.Int64, "item_idx": pl.Int32, "time": pl.Float64}
    )
    # The contract: sessions contiguous, ordered by start; events by time; test items known.
    for frame in (train, test):
        assert frame["session_id"].rle_id().max() + 1 == frame["session_id"].n_unique()
        starts = frame.group_by("session_id", maintain_order=True).agg(pl.col("time").min())
        assert starts["time"].is_sorted()
        assert frame.group_by("session_id").agg(pl.col("time").is_sorted()).get_column("time").all()
        assert frame.group_by("session_id").len()["len"].min() >= 2
    assert test["item_id"].is_in(train["item_id"].implode()).all()
    assert (
        test["time"].min() >= train.group_by("session_id").agg(pl.col("time").min())["time"].max()
    )
    assert items["item_idx"].to_list() == list(range(items.height))
    assert items["support"].sum() == train.height and items["support"].min() >= 5
    # The manifest accounts for every event: each step's count = the previous minus its drop.
    rows = [r for r in manifest["steps"] if r["scope"] == "all"]
    for before, after in itertools.pairwise(rows):
        assert after["events"] == before["events"] - after["dropped_events"]
    assert rows[0]["events"] == clicks.height
    assert manifest["splits"]["train"]["events"] + manifest["steps"][-4]["events"] > 0


def test_generic_mapping_with_ms_times_events_and_user_sessions(tmp_path: Path) -> None:
    # RetailRocket-like: no session id; sessions from visitor + 1 h idle gap; views only.
    rows = ["timestamp,visitorid,event,itemid"]
    hour = 3_600_000
    for day in range(3):
        for user in range(8):
            start = day * DAY * 1000 + user * 10 * hour // 10
            for k, item in enumerate([1, 2, 3, 1]):
                rows.append(f"{start + k * 60_000},{user},view,{item}")
            rows.append(f"{start + 5 * 60_000},{user},addtocart,{9}")
    log = write(tmp_path / "events.csv", "\n".join(rows) + "\n")
    out = tmp_path / "rr"
    manifest = prepare(
        [log], out, resolve_spec("retailrocket", test_days=1.0), PrepareOptions(valid_days=0)
    )
    steps = manifest["steps"]
    assert steps[0]["events"] == 3 * 8 * 5
    assert steps[1]["events"] == 3 * 8 * 4 and steps[1]["sessions"] == 24
    # The last session starts on day 2 at 07:00; a day before it is day 1 at 07:00, where
    # user 7's session of day 1 starts: on the boundary, so test (8 + 1 sessions).
    assert read_split(out, "test")["session_id"].n_unique() == 9
    assert manifest["time_splits"]["test"]["boundary"] == "1970-01-02 07:00:00"
    assert not (out / "valid.parquet").exists()


def test_yoochoose_raw_format_with_iso_times(tmp_path: Path) -> None:
    clicks = generate_clicks(SyntheticLog(n_sessions=2000, n_items=100, days=5, seed=2))
    log = write_click_log(clicks, tmp_path / "yoochoose-clicks.dat", "yoochoose")
    out = tmp_path / "yc"
    prepare([log], out, resolve_spec("yoochoose"))
    train = read_split(out, "train")
    # ISO times round-trip to the generator's seconds (millisecond precision).
    original = clicks.filter(pl.col("session_id") == train["session_id"][0])["time"][0]
    assert train["time"][0] == pytest.approx(original, abs=1e-3)


def test_diginetica_raw_sample(tmp_path: Path) -> None:
    path = shared_file("diginetica_raw_sample_train-item-views.csv.gz")
    manifest = prepare([path], tmp_path / "dg", resolve_spec("diginetica", test_days=1.0))
    assert manifest["steps"][0]["events"] == 12_391
    assert manifest["steps"][0]["sessions"] == 2_986
    train = read_split(tmp_path / "dg", "train")
    assert train.height > 0 and train["time"].min() > 1.4e9  # eventdate parsed as days


def test_trivago_keeps_item_actions_only(tmp_path: Path) -> None:
    path = shared_file("trivago_rsc19_val_100k.parquet")
    manifest = prepare(
        [path],
        tmp_path / "tv",
        resolve_spec("trivago", test_days=0.2),
        PrepareOptions(valid_days=0),
    )
    raw = pl.read_parquet(path)
    item_actions = raw.filter(pl.col("action_type").str.contains("item")).height
    assert manifest["steps"][0]["events"] == raw.height
    assert manifest["steps"][1]["events"] == item_actions


def test_diginetica_published_split_is_kept_exactly(tmp_path: Path) -> None:
    path = shared_file("diginetica_srgnn.tsv.gz")
    spec = resolve_spec(
        "generic", session_col="SessionId", item_col="ItemId", order_col="Pos", split_col="Split"
    )
    manifest = prepare([path], tmp_path / "dg", spec, PrepareOptions(valid_fraction=0.1))
    splits = manifest["splits"]
    assert splits["train"] == {"events": 906_140, "sessions": 186_670, "items": 43_097}
    assert splits["test"]["events"] == 76_821 and splits["test"]["sessions"] == 15_963
    assert manifest["n_items"] == 43_097
    test = read_split(tmp_path / "dg", "test")
    # Without times, sessions keep the file's (chronological) session order.
    assert test["session_id"].unique(maintain_order=True).is_sorted()


def test_yoochoose_100k_published_split(tmp_path: Path) -> None:
    train = shared_file("yoochoose_100k/yoochoose-clicks-100k_train_full.txt.gz")
    test = shared_file("yoochoose_100k/yoochoose-clicks-100k_test.txt.gz")
    manifest = prepare([train, test], tmp_path / "yc", resolve_spec("gru4rec-tsv"))
    splits = manifest["splits"]
    assert splits["train"] == {"events": 70_278, "sessions": 17_794, "items": 2_933}
    assert splits["test"] == {"events": 13_568, "sessions": 3_416, "items": 1_771}
    # Re-running the session-length filter drops nothing. (Item support >= 5 does drop
    # 135 items: the sample was drawn after filtering the whole YOOCHOOSE log.)
    again = prepare(
        [train, test],
        tmp_path / "yc2",
        resolve_spec("gru4rec-tsv"),
        PrepareOptions(apply_filter=True, min_item_support=1),
    )
    assert again["splits"] == {
        **splits,
        "train_tr": again["splits"]["train_tr"],
        "valid": again["splits"]["valid"],
    }


def test_read_events_gives_int64_ids_unless_compact(tmp_path: Path) -> None:
    log = write(tmp_path / "log.tsv", "SessionId\tItemId\tTime\n1\t5\t0\n1\t6\t1\n")
    events = read_events([log], resolve_spec("gru4rec-tsv"))
    assert events.schema == pl.Schema(
        {"session_id": pl.Int64, "item_id": pl.Int64, "time": pl.Float64}
    )
    compact = read_events([log], resolve_spec("gru4rec-tsv"), compact=True)
    assert compact.schema["session_id"] == pl.Int32
    assert compact.cast({"session_id": pl.Int64, "item_id": pl.Int64}).equals(events)


def test_values_the_fast_read_cannot_take_are_read_as_before(tmp_path: Path) -> None:
    # The fast read takes Int32 ids, ISO times in the layout of the first rows, and
    # values without blanks: ids beyond Int32, a padded id and times in another layout
    # further down are read again the general way, with the same result.
    big = 3_000_000_000
    rows = [
        f"{s},2014-04-0{1 + s // 1100}T10:{s % 60:02d}:00.000Z,{s % 7},0" for s in range(1, 2001)
    ]
    rows += [f"{big},2014-04-03 10:00:00, 5 ,0", f"{big},2014-04-03 10:00:01.5,6,0"]
    log = write(tmp_path / "clicks.dat", "\n".join(rows) + "\n")
    out = tmp_path / "yc"
    options = PrepareOptions(
        apply_filter=False, remove_repeats=False, valid_days=0, min_split_sessions=0
    )  # single-event sessions: the split is not what this test is about
    prepare([log], out, resolve_spec("yoochoose"), options)
    test = read_split(out, "test")
    assert test.schema["session_id"] == pl.Int64 and test.schema["item_id"] == pl.Int64
    last = test.filter(pl.col("session_id") == big)
    assert last["item_id"].to_list() == [5, 6]
    assert last["time"].to_list() == [1396519200.0, 1396519201.5]


# ---- bad input: a clear error naming file, column and row; nothing left behind ----


@pytest.mark.parametrize(
    "text, options, message",
    [
        ("SessionId\tItemId\tTime\n1\t5\t0\n1\tx\t1\n2\t5\t86400\n2\tx\t86401\n", {}, None),
        (
            "SessionId\tItem\tTime\n1\t5\t0\n",
            {},
            "column 'ItemId' (the --item-col column) is missing",
        ),
        ("SessionId\tItemId\tTime\n1\t5\t0\n1\t\t1\n", {}, "column 'ItemId', row 2 (line 3)"),
        (
            "SessionId\tItemId\tTime\n1\t5\t0\n1\t6\tyesterday\n",
            {},
            "'yesterday' cannot be read as a time",
        ),
        ("SessionId,ItemId,Time\n1,5,0\n", {}, "the separator is probably wrong"),
        ("SessionId\tItemId\tTime\n", {}, "no events"),
        ("SessionId\tItemId\tTimestamp\n1\t5\t0\n", {}, "Did you mean 'Timestamp'?"),
    ],
)
def test_bad_input_is_explained(
    tmp_path: Path, text: str, options: dict, message: str | None
) -> None:
    log = write(tmp_path / "log.tsv", text)
    out = tmp_path / "out"
    if message is None:
        prepare(
            [log],
            out,
            resolve_spec("gru4rec-tsv"),
            PrepareOptions(apply_filter=False, test_days=0.5, valid_days=0),
        )
        assert read_split(out, "train")["item_id"].to_list() == ["5", "x"]  # text ids kept
        return
    with pytest.raises(InputDataError, match=re.escape(message)) as error:
        prepare([log], out, resolve_spec("gru4rec-tsv", **options))
    assert str(log) in str(error.value) or "no events" in str(error.value)
    assert list(tmp_path.iterdir()) == [log]  # no output, no temporary directory


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="no such file"):
        prepare([tmp_path / "nope.tsv"], tmp_path / "out", resolve_spec("gru4rec-tsv"))
    empty = write(tmp_path / "empty.tsv", "")
    with pytest.raises(InputDataError, match="the file is empty"):
        prepare([empty], tmp_path / "out", resolve_spec("gru4rec-tsv"))


def test_existing_output_needs_overwrite_and_is_replaced_atomically(tmp_path: Path) -> None:
    clicks = generate_clicks(SyntheticLog(n_sessions=1500, n_items=80, days=5, seed=3))
    log = write_click_log(clicks, tmp_path / "log.tsv", "gru4rec-tsv")
    out = tmp_path / "out"
    prepare([log], out, resolve_spec("gru4rec-tsv"))
    with pytest.raises(InputDataError, match="--overwrite"):
        prepare([log], out, resolve_spec("gru4rec-tsv"))
    bad = write(tmp_path / "bad.tsv", "SessionId\tItemId\tTime\n1\t\t0\n")
    with pytest.raises(InputDataError):
        prepare([bad], out, resolve_spec("gru4rec-tsv"), overwrite=True)
    assert (out / "manifest.json").exists()  # a failed run left the previous output intact
    prepare([log], out, resolve_spec("gru4rec-tsv"), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "log.tsv", "out"]


def test_order_only_log_cannot_be_split_by_time(tmp_path: Path) -> None:
    log = write(tmp_path / "log.tsv", "s\ti\tpos\n1\t5\t0\n1\t6\t1\n")
    spec = resolve_spec("generic", session_col="s", item_col="i", order_col="pos")
    with pytest.raises(InputDataError, match="cannot be split by time"):
        prepare([log], tmp_path / "out", spec, PrepareOptions(apply_filter=False))


def _straggler_log(tmp_path: Path) -> Path:
    """A news-portal-like log (ms times): 40 sessions a day start over 16 days; 1 in 10
    gets a last click 5-28 days after its start (readers coming back to an old tab)."""
    rows = ["session,item,ts"]
    for day in range(16):
        for k in range(40):
            session, start = day * 40 + k, (day * DAY + k * 1800) * 1000
            items = [(session + j) % 12 for j in range(4)]
            times = [start + j * 60_000 for j in range(4)]
            if session % 10 == 3:
                times[-1] = start + (5 + session % 24) * DAY * 1000
            rows += [f"{session},{item},{t}" for item, t in zip(items, times, strict=True)]
    return write(tmp_path / "news.csv", "\n".join(rows) + "\n")


NEWS = {"session_col": "session", "item_col": "item", "time_col": "ts", "time_unit": "ms"}


def test_late_clicks_do_not_empty_the_test_split(tmp_path: Path) -> None:
    # Regression: the last days were counted back from the last click, which
    # a straggler put weeks after the last session start: the test split came out empty.
    log = _straggler_log(tmp_path)
    manifest = prepare(
        [log],
        tmp_path / "out",
        resolve_spec("generic", **NEWS),
        PrepareOptions(test_days=1, valid_days=1),
    )
    test = read_split(tmp_path / "out", "test")
    starts = test.group_by("session_id").agg(pl.col("time").min())["time"]
    assert starts.min() >= 14 * DAY and starts.max() < 16 * DAY
    # The last day of session starts, boundary included: day 15's 40 and day 14's last.
    assert test["session_id"].n_unique() == 41
    where = manifest["time_splits"]["test"]
    assert where["measured_from"] == "last session start"
    assert where["boundary"] == "1970-01-15 19:30:00"  # the last start, 15 d 19:30, - 1 day
    assert where["session_starts"] == ["1970-01-01 00:00:00", "1970-01-16 19:30:00"]
    assert where["clicks"][1] > "1970-02-01"  # the stragglers' clicks
    valid = read_split(tmp_path / "out", "valid")
    assert valid["session_id"].n_unique() == 41  # counted back from train's last start
    assert manifest["time_splits"]["valid"]["boundary"] == "1970-01-14 19:00:00"


def test_test_start_places_the_boundary_explicitly(tmp_path: Path) -> None:
    log = _straggler_log(tmp_path)
    manifest = prepare(
        [log],
        tmp_path / "out",
        resolve_spec("generic", **NEWS),
        PrepareOptions(test_start="1970-01-13", valid_days=0),
    )
    test = read_split(tmp_path / "out", "test")
    assert test["session_id"].n_unique() == 4 * 40  # days 12-15 (the 13th of January on)
    assert manifest["time_splits"]["test"]["boundary"] == "1970-01-13 00:00:00"
    assert manifest["time_splits"]["test"]["measured_from"] == "--test-start"
    with pytest.raises(InputDataError, match="--test-start takes an ISO date"):
        PrepareOptions(test_start="next tuesday")


def test_an_empty_split_shows_the_counts_up_to_the_failure(tmp_path: Path) -> None:
    log = _straggler_log(tmp_path)
    with pytest.raises(InputDataError) as raised:
        prepare(
            [log],
            tmp_path / "out",
            resolve_spec("generic", **NEWS),
            PrepareOptions(test_start="1971-01-01", valid_days=0),
        )
    message = str(raised.value)
    assert message.startswith("the test split is empty after these steps:")
    assert re.search(r"read\s+all\s+2,560\s+640", message)  # 640 sessions of 4 clicks
    assert "boundary 1971-01-01 00:00:00 (--test-start)" in message
    assert "session starts 1970-01-01 00:00:00 .. 1970-01-16 19:30:00" in message
    assert not (tmp_path / "out").exists()
