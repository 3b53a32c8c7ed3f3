"""Prepared Parquet -> SessionData: offsets, remapping by item_id, counted drops, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gru4rec.errors import InputDataError
from gru4rec.network.data import SessionData, load_items, load_split


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    pl.DataFrame(
        {
            "item_id": [10, 20, 30, 40],
            "item_idx": pl.Series([0, 1, 2, 3], dtype=pl.Int32),
            "support": [3, 2, 2, 1],
        }
    ).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame(
        {
            "session_id": [7, 7, 7, 2, 2, 5, 9, 9],
            "item_id": [10, 20, 30, 10, 40, 20, 20, 10],
            "item_idx": pl.Series([0, 1, 2, 0, 3, 1, 1, 0], dtype=pl.Int32),
            "time": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    ).write_parquet(tmp_path / "test.parquet")
    return tmp_path


def test_load_items(data_dir: Path) -> None:
    items = load_items(data_dir)
    assert items.columns == ["item_id", "item_idx", "support"]
    assert items["item_idx"].to_list() == [0, 1, 2, 3]


def test_load_split_keeps_file_order_and_drops_short_sessions(data_dir: Path) -> None:
    data, report = load_split(data_dir, "test")
    assert data.item_idx.tolist() == [0, 1, 2, 0, 3, 1, 0]
    assert data.item_idx.dtype == np.int64 and data.session_offsets.dtype == np.int64
    assert data.session_offsets.tolist() == [0, 3, 5, 7]
    assert (data.n_events, data.n_sessions) == (7, 3)
    assert (report.n_unknown_events, report.n_short_sessions_dropped) == (0, 1)
    assert (report.n_events_read, report.n_sessions_read) == (8, 4)


def test_the_same_item_map_is_used_as_is(data_dir: Path) -> None:
    data, report = load_split(data_dir, "test", item_ids=[10, 20, 30, 40])
    assert data.item_idx.tolist() == [0, 1, 2, 0, 3, 1, 0]
    assert report.n_unknown_events == 0


def test_a_different_item_map_remaps_by_item_id_and_counts_drops(data_dir: Path) -> None:
    # The model knows 20, 10, 30 (in that order); item 40 is unknown.
    data, report = load_split(data_dir, "test", item_ids=pl.Series([20, 10, 30]))
    # session 7: 10 20 30 -> 1 0 2; session 2: 10 (40 dropped) -> too short; 5: too short;
    # session 9: 20 10 -> 0 1.
    assert data.item_idx.tolist() == [1, 0, 2, 0, 1]
    assert data.session_offsets.tolist() == [0, 3, 5]
    assert report.n_unknown_events == 1
    assert report.n_short_sessions_dropped == 2


def test_string_item_ids_match_integer_ones(data_dir: Path) -> None:
    data, report = load_split(data_dir, "test", item_ids=np.array(["20", "10"]))
    assert data.item_idx.tolist() == [1, 0, 0, 1]
    assert report.n_unknown_events == 2  # 30 and 40


def test_missing_file_says_to_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"train\.parquet does not exist.*gru4rec prepare"):
        load_split(tmp_path, "train")
    with pytest.raises(InputDataError, match=r"items\.parquet"):
        load_items(tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    pl.DataFrame({"session_id": [1, 1], "item_id": [1, 2]}).write_parquet(
        tmp_path / "train.parquet"
    )
    with pytest.raises(InputDataError, match=r"lacks column.*item_idx"):
        load_split(tmp_path, "train")


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputDataError, match=r"items\.parquet is not a readable Parquet"):
        load_items(tmp_path)


def test_non_contiguous_sessions_are_rejected(data_dir: Path) -> None:
    frame = pl.read_parquet(data_dir / "test.parquet")
    frame.with_columns(pl.Series("session_id", [7, 7, 2, 7, 2, 5, 9, 9])).write_parquet(
        data_dir / "test.parquet"
    )
    with pytest.raises(InputDataError, match="not contiguous"):
        load_split(data_dir, "test")


def test_item_index_out_of_range_is_rejected(data_dir: Path) -> None:
    frame = pl.read_parquet(data_dir / "test.parquet")
    frame.with_columns(pl.col("item_idx") + 3).write_parquet(data_dir / "test.parquet")
    with pytest.raises(InputDataError, match=r"outside 0\.\.3"):
        load_split(data_dir, "test")


def test_session_data_from_sessions_and_checks() -> None:
    data = SessionData.from_sessions([[1, 2], [], [3]])
    assert data.session_offsets.tolist() == [0, 2, 2, 3]
    assert data.session_lengths.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="offsets"):
        SessionData(np.arange(3), np.array([0, 2]))
