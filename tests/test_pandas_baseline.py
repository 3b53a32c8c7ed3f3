"""The benchmark's pandas baseline does the same work as the Polars pipeline.

Both run on the same generated YOOCHOOSE-layout log and must write identical tables
(same sessions, items, order, item indices) and identical counts, so the throughput
ratio printed by `python -m benchmarks.prepare_bench` compares like with like.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

try:
    from benchmarks.pandas_prepare import prepare_pandas
except ModuleNotFoundError:  # plain `pytest` does not put the project root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.pandas_prepare import prepare_pandas

from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.prepare import prepare
from gru4rec.pipelines.sources import resolve_spec
from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

TABLES = ("train", "test", "train_tr", "valid", "items")


def _run_both(log: Path, tmp_path: Path, test_days: float = 1.0) -> tuple[dict, dict]:
    spec = resolve_spec("yoochoose")
    options = PrepareOptions(test_days=test_days)
    polars_manifest = prepare([log], tmp_path / "polars", spec, options, format_name="yoochoose")
    pandas_manifest = prepare_pandas(log, tmp_path / "pandas", test_days=test_days)
    return polars_manifest, pandas_manifest


def _assert_same_tables(tmp_path: Path) -> None:
    for name in TABLES:
        expected = pl.read_parquet(tmp_path / "polars" / f"{name}.parquet")
        actual = pl.read_parquet(tmp_path / "pandas" / f"{name}.parquet")
        # Polars divides by a scalar as a multiplication by its reciprocal, so `time`
        # (ms / 1000) can differ from pandas in the last bit: compare it to 1 µs.
        assert_frame_equal(actual, expected, check_exact=False, rel_tol=0, abs_tol=1e-6)


def _counts(manifest: dict) -> list[tuple[str, int, int, int]]:
    return [
        (row["scope"], row["events"], row["sessions"], row["items"]) for row in manifest["steps"]
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_pandas_baseline_writes_the_same_tables_as_the_pipeline(tmp_path: Path, seed: int) -> None:
    clicks = generate_clicks(SyntheticLog(n_sessions=3_000, n_items=300, days=5.0, seed=seed))
    log = write_click_log(clicks, tmp_path / "clicks.dat", "yoochoose")
    polars_manifest, pandas_manifest = _run_both(log, tmp_path)

    assert pandas_manifest["splits"] == polars_manifest["splits"]
    assert pandas_manifest["n_items"] == polars_manifest["n_items"]
    assert _counts(pandas_manifest) == _counts(polars_manifest)
    assert polars_manifest["splits"]["test"]["sessions"] > 50  # the split has something in it
    _assert_same_tables(tmp_path)
    # Every cleaning step had something to do on this log.
    steps = [row["events"] for row in pandas_manifest["steps"][:3]]
    assert steps[0] > steps[1] > steps[2]


def test_pandas_baseline_matches_on_boundaries_and_ties(tmp_path: Path) -> None:
    # The last session start is 04-03T00:00 (session 8), so the test boundary is
    # 04-02T00:00: session 5 starts exactly on it (test), session 4 one millisecond before
    # (train, though it ends after it), and session 6's late click at 04-03T01:00 moves
    # nothing. Train's last session start is session 4's, 04-01T23:59:59.999, so the
    # validation boundary is a day before it: sessions 9 and 4 (valid). Session 3 has equal times (log order
    # kept) and a repeat; session 4 is written out of time order; item 99 is only in
    # test (unknown: session 10 becomes too short), item 77 only in valid.
    rows = [
        (1, "03-30T01:00:00.000", 11),
        (1, "03-30T01:01:00.000", 12),
        (1, "03-30T01:02:00.000", 13),
        (1, "03-30T01:03:00.000", 14),
        (2, "03-30T02:00:00.000", 12),
        (2, "03-30T02:01:00.000", 13),
        (2, "03-30T02:02:00.000", 14),
        (2, "03-30T02:03:00.000", 11),
        *[(3, "03-30T03:00:00.000", item) for item in (14, 11, 13, 13, 12)],
        (7, "03-30T05:00:00.000", 11),
        (9, "04-01T06:00:00.000", 77),
        (9, "04-01T06:01:00.000", 13),
        (9, "04-01T06:02:00.000", 77),
        (9, "04-01T06:03:00.000", 14),
        (9, "04-01T06:04:00.000", 77),
        (4, "04-02T06:00:00.000", 12),
        (4, "04-01T23:59:59.999", 11),
        (4, "04-02T05:00:00.000", 77),
        (4, "04-02T06:00:00.000", 77),
        (5, "04-02T00:00:00.000", 11),
        (5, "04-02T00:01:00.000", 12),
        (5, "04-02T00:02:00.000", 13),
        *[
            (6, f"04-02T{12 + i:02d}:00:00.000", item)
            for i, item in enumerate((99, 11, 99, 12, 99, 13, 99, 14))
        ],
        (6, "04-03T01:00:00.000", 99),
        (8, "04-03T00:00:00.000", 11),
        (8, "04-03T00:01:00.000", 12),
        (10, "04-02T01:00:00.000", 99),
        (10, "04-02T01:01:00.000", 11),
    ]
    log = tmp_path / "clicks.dat"
    log.write_text("".join(f"{s},2014-{t}Z,{item},0\n" for s, t, item in rows))
    polars_manifest, pandas_manifest = _run_both(log, tmp_path)

    assert pandas_manifest["splits"] == polars_manifest["splits"]
    assert _counts(pandas_manifest) == _counts(polars_manifest)
    tables = {name: pl.read_parquet(tmp_path / "pandas" / f"{name}.parquet") for name in TABLES}
    sessions = {
        name: frame["session_id"].unique(maintain_order=True).to_list()
        for name, frame in tables.items()
        if name != "items"
    }
    assert sessions == {
        "train": [1, 2, 3, 9, 4],
        "test": [5, 6, 8],
        "train_tr": [1, 2, 3],
        "valid": [9, 4],
    }
    assert tables["train"].filter(pl.col("session_id") == 3)["item_id"].to_list() == [
        14,
        11,
        13,
        12,
    ]
    assert tables["train"].filter(pl.col("session_id") == 4)["item_id"].to_list() == [
        11,
        77,
        12,
        77,
    ]
    assert tables["valid"]["item_id"].to_list() == [13, 14, 11, 12]
    _assert_same_tables(tmp_path)
    manifest = json.loads((tmp_path / "pandas" / "manifest.json").read_text())
    assert manifest["splits"] == pandas_manifest["splits"]


def test_item_map_follows_the_order_of_train_parquet(tmp_path: Path) -> None:
    # Regression: the item map was built from train before train was ordered again, so
    # item_idx did not follow the first appearance of items in train.parquet.
    # Session 1 starts first, but only with rare item 99: once that is filtered out it
    # starts after session 2, so train.parquet has session 2 (item 20) first.
    rows = [
        (1, "00:00:00", 99),
        (1, "00:01:40", 10),
        (1, "00:01:50", 20),
        (2, "00:00:50", 20),
        (2, "00:01:00", 10),
        (3, "10:00:00", 10),
        (3, "10:01:00", 20),
    ]
    log = tmp_path / "clicks.dat"
    log.write_text("".join(f"{s},2014-04-0{1 + 8 * (s == 3)}T{t}.000Z,{i},0\n" for s, t, i in rows))
    spec = resolve_spec("yoochoose")
    options = PrepareOptions(min_item_support=2, valid_days=0)
    prepare([log], tmp_path / "polars", spec, options, format_name="yoochoose")
    prepare_pandas(log, tmp_path / "pandas", min_item_support=2, valid_days=0)

    train = pl.read_parquet(tmp_path / "polars" / "train.parquet")
    assert train["session_id"].unique(maintain_order=True).to_list() == [2, 1]
    items = pl.read_parquet(tmp_path / "polars" / "items.parquet")
    pandas_items = pl.read_parquet(tmp_path / "pandas" / "items.parquet")
    assert pandas_items["item_id"].to_list() == [20, 10]  # the baseline follows the contract
    assert items["item_id"].to_list() == train["item_id"].unique(maintain_order=True).to_list()
