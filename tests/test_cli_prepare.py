"""`gru4rec generate` / `gru4rec prepare` through Typer and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gru4rec.cli import app

runner = CliRunner()


def test_generate_then_prepare_prints_the_step_table(tmp_path: Path) -> None:
    log = tmp_path / "clicks.tsv.gz"
    result = runner.invoke(app, ["generate", str(log), "--sessions", "2000", "--items", "100"])
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
    result = runner.invoke(app, [
        "prepare", str(log), "--out", str(tmp_path / "out"), "--format", "generic",
        "--session-col", "sid", "--item-col", "item", "--time-col", "ts", "--time-unit", "ms",
        "--event-col", "kind", "--event-filter", "view", "--test-days", "0.05", "--valid-days", "0",
    ])  # fmt: skip
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
    assert result.exit_code == 2 and "unknown format 'csvx'" in result.output
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
    bad = [sys.executable, "-m", "gru4rec", "prepare", str(tmp_path / "missing.tsv"),
           "--out", str(tmp_path / "o")]  # fmt: skip
    done = subprocess.run(bad, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr
