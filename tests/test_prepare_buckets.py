"""`prepare` in buckets (for logs larger than memory) writes what `prepare` in memory
writes: the same rows in the same order, the same item map, the same counts per step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.pipelines.buckets import auto_buckets
from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.prepare import prepare
from gru4rec.pipelines.sources import resolve_spec
from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks

runner = CliRunner()
DAY = 86_400


@pytest.fixture(scope="module")
def clicks() -> pl.DataFrame:
    """A log whose sessions tie on start times and times inside sessions (whole minutes),
    with repeats, one-event sessions and rare items for every step to work on."""
    clicks = generate_clicks(SyntheticLog(n_sessions=3_000, n_items=300, days=20, seed=5))
    minutes = ((pl.col("time") // 60) * 60).cast(pl.Float64)
    return clicks.select(
        pl.col("session_id").alias("SessionId"),
        pl.col("item_id").alias("ItemId"),
        minutes.alias("Time"),
    )


def _both(
    tmp_path: Path,
    inputs: list[Path],
    fmt: str,
    options: PrepareOptions,
    buckets: int = 5,
    **columns: object,
) -> tuple[Path, Path]:
    spec = resolve_spec(fmt, **columns)  # type: ignore[arg-type]
    whole, parts = tmp_path / "memory", tmp_path / "buckets"
    prepare(inputs, whole, spec, options, format_name=fmt, buckets=1)
    manifest = prepare(inputs, parts, spec, options, format_name=fmt, buckets=buckets)
    assert manifest["buckets"] == buckets
    assert not list(tmp_path.glob(".*buckets*")), "the intermediate files are removed"
    return whole, parts


def _assert_same(whole: Path, parts: Path) -> None:
    names = sorted(p.name for p in whole.glob("*.parquet"))
    assert names == sorted(p.name for p in parts.glob("*.parquet"))
    for name in names:
        expected = pl.read_parquet(whole / name)
        assert pl.read_parquet(parts / name).equals(expected), name
    expected, got = (json.loads((d / "manifest.json").read_text()) for d in (whole, parts))
    for key in ("steps", "time_splits", "splits", "n_items", "kept_split"):
        assert got[key] == expected[key], key


def test_session_log_by_time(clicks: pl.DataFrame, tmp_path: Path) -> None:
    log = tmp_path / "clicks.tsv"
    clicks.write_csv(log, separator="\t")
    whole, parts = _both(tmp_path, [log], "gru4rec-tsv", PrepareOptions(test_days=2))
    _assert_same(whole, parts)
    manifest = json.loads((parts / "manifest.json").read_text())
    filtered = next(row for row in manifest["steps"] if row["step"].startswith("filter"))
    assert filtered["dropped_events"] > 0 and filtered["dropped_items"] > 0


def test_text_ids_fraction_and_test_start(clicks: pl.DataFrame, tmp_path: Path) -> None:
    """Text session ids order tied starts as text; the validation fraction and
    --test-start cut the merged order."""
    text = clicks.with_columns(
        ("s" + pl.col("SessionId").cast(pl.String)).alias("SessionId"),
        ("i" + pl.col("ItemId").cast(pl.String)).alias("ItemId"),
    )
    log = tmp_path / "clicks.tsv"
    text.write_csv(log, separator="\t")
    start = float(text["Time"].min() + 17 * DAY)  # type: ignore[operator]
    options = PrepareOptions(test_start=start, valid_fraction=0.15)
    _assert_same(*_both(tmp_path, [log], "gru4rec-tsv", options, buckets=3))


def test_sessions_built_from_users_with_an_event_filter(
    clicks: pl.DataFrame, tmp_path: Path
) -> None:
    """Session ids numbered over the whole log (by user, then time) from buckets of users."""
    rng = np.random.default_rng(0)
    users = clicks.with_columns(
        (pl.col("SessionId") % 700).alias("visitorid"),  # users with many sessions
        pl.Series("event", rng.choice(["view", "view", "view", "addtocart"], clicks.height)),
    ).select(
        (pl.col("Time") * 1000).cast(pl.Int64).alias("timestamp"),
        "visitorid",
        "event",
        pl.col("ItemId").alias("itemid"),
    )
    log = tmp_path / "events.csv"
    users.write_csv(log)
    whole, parts = _both(tmp_path, [log], "retailrocket", PrepareOptions(test_days=3), buckets=4)
    _assert_same(whole, parts)
    assert json.loads((parts / "manifest.json").read_text())["steps"][0]["step"] == "read"


def test_published_pair(clicks: pl.DataFrame, tmp_path: Path) -> None:
    cut = clicks["Time"].min() + 18 * DAY  # type: ignore[operator]
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    clicks.filter(pl.col("Time") < cut).write_csv(train, separator="\t")
    clicks.filter(pl.col("Time") >= cut).write_csv(test, separator="\t")
    _assert_same(*_both(tmp_path, [train, test], "gru4rec-tsv", PrepareOptions(valid_days=1)))


def test_more_buckets_than_sessions(tmp_path: Path) -> None:
    """Empty buckets add nothing."""
    log = tmp_path / "tiny.tsv"
    rows = [(s, i, 1e9 + 3600 * s + k) for s in range(12) for k, i in enumerate((s % 3, 1, 2))]
    pl.DataFrame(rows, schema=["SessionId", "ItemId", "Time"], orient="row").write_csv(
        log, separator="\t"
    )
    options = PrepareOptions(test_days=0.1, valid_days=0.1, min_item_support=1)
    _assert_same(*_both(tmp_path, [log], "gru4rec-tsv", options, buckets=64))


def test_cli_buckets_option(clicks: pl.DataFrame, tmp_path: Path) -> None:
    log = tmp_path / "clicks.tsv"
    clicks.write_csv(log, separator="\t")
    result = runner.invoke(
        app,
        ["prepare", str(log), "--out", str(tmp_path / "out"), "--buckets", "3", "--test-days", "2"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["buckets"] == 3
    assert "prepared in 3 buckets of sessions" in " ".join(result.output.split())
    bad = runner.invoke(app, ["prepare", str(log), "--out", str(tmp_path / "x"), "--buckets", "0"])
    assert bad.exit_code != 0 and "--buckets" in bad.output


def test_auto_buckets(tmp_path: Path) -> None:
    """In memory while the log needs under half the memory; else buckets of a quarter."""
    log = tmp_path / "log.csv"
    log.write_bytes(b"x" * 40_000)  # about 1,000 events: 32 kB in memory
    assert auto_buckets([log], memory=1 << 20) == 1
    assert auto_buckets([log], memory=64_000) == 1
    assert auto_buckets([log], memory=40_000) == 4  # 32 kB in quarters of 10 kB
    assert auto_buckets([tmp_path / "missing.csv"], memory=10) == 1  # reading will say


def test_a_full_disk_mid_way_leaves_nothing(
    clicks: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gru4rec.errors import InputDataError
    from gru4rec.pipelines.buckets import Workspace

    log = tmp_path / "clicks.tsv"
    clicks.write_csv(log, separator="\t")
    real = Workspace.write

    def write(self: Workspace, frame: pl.DataFrame, stage: str, bucket: int) -> None:
        if stage == "train" and bucket == 2:
            raise OSError(28, "No space left on device")
        real(self, frame, stage, bucket)

    monkeypatch.setattr(Workspace, "write", write)
    spec = resolve_spec("gru4rec-tsv")
    with pytest.raises(InputDataError, match=r"No space left on device.*nothing was written"):
        prepare([log], tmp_path / "out", spec, PrepareOptions(test_days=2), buckets=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clicks.tsv"]


def test_cgroup_limits_count_as_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a container (a cgroup with a memory limit) the room left under the limit is the
    memory available: a machine's free memory would overstate it."""
    from gru4rec.pipelines import buckets

    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/job/1\n0::/job/1\n")
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    (v1 / "job" / "1").mkdir(parents=True)
    (v1 / "job" / "1" / "memory.limit_in_bytes").write_text(str(3 << 30))
    (v1 / "job" / "1" / "memory.usage_in_bytes").write_text(str(1 << 30))
    (v1 / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # the root: no limit
    (v1 / "memory.usage_in_bytes").write_text("0")
    (v2 / "job" / "1").mkdir(parents=True)
    (v2 / "job" / "1" / "memory.max").write_text("max\n")
    (v2 / "job" / "1" / "memory.current").write_text("5\n")
    monkeypatch.setattr(buckets, "PROC_CGROUP", proc)
    monkeypatch.setattr(
        buckets,
        "CGROUP_FILES",
        {
            2: (v2, "memory.max", "memory.current"),
            1: (v1, "memory.limit_in_bytes", "memory.usage_in_bytes"),
        },
    )
    assert buckets._cgroup_room() == [2 << 30]
    assert buckets.available_memory() <= 2 << 30
    (v2 / "job" / "1" / "memory.max").write_text(str(1 << 30))
    assert sorted(buckets._cgroup_room()) == [(1 << 30) - 5, 2 << 30]
    assert buckets.available_memory() == (1 << 30) - 5


def test_order_only_log_with_a_split_column(clicks: pl.DataFrame, tmp_path: Path) -> None:
    """SR-GNN's layout: no time, a position inside the session, a published split column;
    validation by fraction."""
    ordered = (
        clicks.with_columns(
            pl.int_range(pl.len()).over("SessionId").alias("Pos"),
            pl.when(pl.col("SessionId") % 9 == 0)
            .then(pl.lit("test"))
            .otherwise(pl.lit("train"))
            .alias("Split"),
        )
        .select("SessionId", "ItemId", "Pos", "Split")
        .sample(fraction=1.0, shuffle=True, seed=1)
    )
    log = tmp_path / "srgnn.tsv"
    ordered.write_csv(log, separator="\t")
    columns = {
        "session_col": "SessionId",
        "item_col": "ItemId",
        "order_col": "Pos",
        "split_col": "Split",
        "time_col": None,
    }
    options = PrepareOptions(valid_fraction=0.1)
    _assert_same(*_both(tmp_path, [log], "generic", options, buckets=3, **columns))


def test_a_bad_row_is_named_in_bucket_mode(clicks: pl.DataFrame, tmp_path: Path) -> None:
    """The buckets are checked as the in-memory reader checks: the row is named, ids too
    large for 32 bits are read again wider, and nothing is left behind."""
    from gru4rec.errors import InputDataError

    wide = clicks.with_columns(pl.col("SessionId") + 2**40)  # ids past Int32: read again
    log = tmp_path / "clicks.tsv"
    wide.write_csv(log, separator="\t")
    whole, parts = _both(tmp_path, [log], "gru4rec-tsv", PrepareOptions(test_days=2), buckets=3)
    _assert_same(whole, parts)
    assert pl.read_parquet(parts / "train.parquet")["session_id"].min() > 2**40
    lines = log.read_text().splitlines()
    lines[101] = "\t".join(["", *lines[101].split("\t")[1:]])  # a missing session id
    log.write_text("\n".join(lines) + "\n")
    spec = resolve_spec("gru4rec-tsv")
    with pytest.raises(InputDataError, match=r"column 'SessionId', row 101 \(line 102\)"):
        prepare([log], tmp_path / "bad", spec, PrepareOptions(test_days=2), buckets=3)
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))
