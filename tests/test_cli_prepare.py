"""`gru4rec generate` / `gru4rec prepare` through Typer and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gru4rec.cli import app

runner = CliRunner()


def test_generate_then_prepare_prints_the_step_table(tmp_path: Path) -> None:
    log = tmp_path / "clicks.tsv.gz"
    result = runner.invoke(
        app, ["generate", "--out", str(log), "--sessions", "2000", "--items", "100"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "data"
    result = runner.invoke(app, ["prepare", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "counts after every step" in result.stdout
    assert "remove consecutive repeats" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "gru4rec-tsv" and manifest["splits"]["test"]["events"] > 0


def test_generic_options_and_event_filter(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    rows = ["sid,item,ts,kind"]
    for session in range(40):
        for k in range(3):
            rows.append(f"{session},{k % 2},{session * 600_000 + k * 1000},view")
        rows.append(f"{session},7,{session * 600_000 + 5000},buy")
    log.write_text("\n".join(rows) + "\n")
    result = runner.invoke(
        app,
        [
            "prepare",
            str(log),
            "--out",
            str(tmp_path / "out"),
            "--format",
            "generic",
            "--session-col",
            "sid",
            "--item-col",
            "item",
            "--time-col",
            "ts",
            "--time-unit",
            "ms",
            "--event-col",
            "kind",
            "--event-filter",
            "view",
            "--test-days",
            "0.05",
            "--valid-days",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["steps"][0]["events"] == 160 and manifest["steps"][1]["events"] == 120


def test_bad_input_exits_non_zero_with_one_paragraph(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("SessionId\tItemId\tTime\n1\t5\tnot-a-time\n")
    result = runner.invoke(app, ["prepare", str(log), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "column 'Time', row 1 (line 2)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["prepare", "x.tsv", "--out", str(tmp_path / "o"), "--format", "csvx"]
    )
    assert result.exit_code == 2 and "'csvx' is not one of 'gru4rec-tsv'" in result.output
    result = runner.invoke(
        app, ["prepare", str(tmp_path / "nope.tsv"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no such file" in result.output


def test_real_subprocess_help_and_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gru4rec", "prepare", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--session-col" in done.stdout
    for option in ("--idle-gap", "--test-days", "--event-filter", "--split-col", "--order-col"):
        assert option in done.stdout
    bad = [
        sys.executable,
        "-m",
        "gru4rec",
        "prepare",
        str(tmp_path / "missing.tsv"),
        "--out",
        str(tmp_path / "o"),
    ]
    done = subprocess.run(bad, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr


def _generated(tmp_path: Path) -> Path:
    log = tmp_path / "clicks.tsv.gz"
    result = runner.invoke(
        app, ["generate", "--out", str(log), "--sessions", "2000", "--items", "100"]
    )
    assert result.exit_code == 0, result.output
    return log


def _fails_cleanly(args: list[str], tmp_path: Path, *phrases: str) -> None:
    """Exit 2 with one paragraph naming the problem, no traceback, nothing left behind."""
    before = set(tmp_path.rglob("*"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is not None
    text = " ".join(result.output.split())
    for phrase in phrases:
        assert phrase in text, text
    assert set(tmp_path.rglob("*")) == before  # no output, no staging folder


def test_damaged_and_unreadable_inputs_get_a_clear_error(tmp_path: Path) -> None:
    # Regression: a truncated .gz ended in `OSError: unexpected end of file`.
    log = _generated(tmp_path)
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(log.read_bytes()[:20_000])
    _fails_cleanly(
        ["prepare", str(cut), "--out", str(tmp_path / "a")],
        tmp_path,
        "cut.tsv.gz: cannot be read",
        "cut short",
        "gzip -t",
    )
    import bz2

    packed = tmp_path / "clicks.tsv.bz2"
    packed.write_bytes(bz2.compress(gzip_text(log).encode()))
    _fails_cleanly(
        ["prepare", str(packed), "--out", str(tmp_path / "b")],
        tmp_path,
        "is compressed with bzip2",
        "bunzip2 clicks.tsv.bz2",
    )
    import polars as pl

    table = tmp_path / "clicks.parquet"
    pl.read_csv(log, separator="\t").write_parquet(table)
    table.write_bytes(table.read_bytes()[:-30])  # the footer cut off
    _fails_cleanly(
        ["prepare", str(table), "--out", str(tmp_path / "c")],
        tmp_path,
        "clicks.parquet: cannot be read as a table",
    )


def gzip_text(path: Path) -> str:
    import gzip

    return gzip.decompress(path.read_bytes()).decode()


def test_unwritable_outputs_get_a_clear_error(tmp_path: Path, monkeypatch: Any) -> None:
    # Regression: --out under a regular file ended in NotADirectoryError.
    log = _generated(tmp_path)
    (tmp_path / "notes.txt").write_text("a file")
    _fails_cleanly(
        ["prepare", str(log), "--out", str(tmp_path / "notes.txt" / "data")],
        tmp_path,
        "notes.txt is a file, not a directory",
    )
    # A full disk (or a read-only directory) while writing: simulated, as tests may run
    # as root, which ignores permissions.
    import errno

    import polars as pl

    def full(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", full)
    _fails_cleanly(
        ["prepare", str(log), "--out", str(tmp_path / "data")],
        tmp_path,
        "cannot write the prepared data there (No space left on device)",
        "nothing was written",
    )

    def read_only(self: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", read_only)
    _fails_cleanly(
        ["prepare", str(log), "--out", str(tmp_path / "data")],
        tmp_path,
        "(Permission denied)",
        "Check that the directory is writable",
    )
