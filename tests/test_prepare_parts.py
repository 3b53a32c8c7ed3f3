"""`gru4rec prepare` on a log in many files: a directory of parts or a glob, read as one log
with the same result as the concatenated file; a bad row is named in its own part."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import InputDataError
from gru4rec.pipelines.sources import expand_inputs
from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

runner = CliRunner()


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One generated log, whole and cut by day into four files (plus files to skip)."""
    root = tmp_path_factory.mktemp("parts")
    whole = write_click_log(
        generate_clicks(SyntheticLog(n_sessions=800, n_items=40, days=4, seed=3)),
        root / "all.tsv",
        "gru4rec-tsv",
    )
    events = pl.read_csv(whole, separator="\t")
    day = ((pl.col("Time") - pl.col("Time").min()) // 86400).cast(pl.Int64)
    folder = root / "clicks"
    folder.mkdir()
    for (number,), frame in events.with_columns(day.alias("day")).group_by("day"):
        frame.drop("day").write_csv(folder / f"clicks_day_{number}.tsv", separator="\t")
    (folder / "_SUCCESS").write_text("")
    (folder / ".clicks_day_9.tsv.crc").write_text("checksum")
    return whole, folder


def _prepare(inputs: list[str], out: Path) -> None:
    result = runner.invoke(app, ["prepare", *inputs, "--out", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("how", ["directory", "glob"])
def test_parts_prepare_as_the_whole_log(parts: tuple[Path, Path], tmp_path: Path, how: str) -> None:
    whole, folder = parts
    _prepare([str(whole)], tmp_path / "whole")
    given = str(folder) if how == "directory" else str(folder / "clicks_day_*.tsv")
    _prepare([given], tmp_path / "parts")
    for name in ("train", "test", "valid", "train_tr", "items"):
        expected = pl.read_parquet(tmp_path / "whole" / f"{name}.parquet")
        assert pl.read_parquet(tmp_path / "parts" / f"{name}.parquet").equals(expected), name


def test_expand_inputs(parts: tuple[Path, Path]) -> None:
    whole, folder = parts
    files, pair = expand_inputs([folder])
    assert [f.name for f in files] == [f"clicks_day_{d}.tsv" for d in range(len(files))]
    assert not pair and len(files) >= 4
    assert expand_inputs([whole, whole]) == ([whole, whole], True)  # a published split
    with pytest.raises(InputDataError, match="pass it alone"):
        expand_inputs([folder, whole])
    with pytest.raises(InputDataError, match="no file matches"):
        expand_inputs([str(folder / "clicks_hour_*.csv")])


def test_a_bad_row_is_named_in_its_part(parts: tuple[Path, Path], tmp_path: Path) -> None:
    _, folder = parts
    copy = tmp_path / "clicks"
    copy.mkdir()
    for part in sorted(folder.glob("clicks_day_*.tsv")):
        (copy / part.name).write_text(part.read_text())
    last = sorted(copy.glob("*.tsv"))[-1]
    last.write_text(last.read_text() + "17\tnot-an-item\t\n")
    result = runner.invoke(app, ["prepare", str(copy), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert last.name in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
