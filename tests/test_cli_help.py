"""`--help` is whole at the default terminal width: every command's summary and every
option's help text, no line wider than 80 columns and nothing cut short; the fixed choices
are listed; `--version` answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gru4rec import __version__
from gru4rec.cli import app
from gru4rec.commands.options import IndexKindChoice, TieChoice
from gru4rec.network.config import PRESETS
from gru4rec.pipelines.sources import FORMATS
from gru4rec.scoring.evaluate import TIE_MODES
from gru4rec.serving.retrieval import INDEX_KINDS

runner = CliRunner()


def _words(text: str) -> str:
    """Text as one space between words; a word the wrapper broke after a hyphen is joined."""
    return " ".join(re.sub(r"-\s+", "-", text.replace("`", "")).split())


def _commands() -> dict[str, Any]:
    group: Any = typer.main.get_command(app)  # a click-style group (Typer may vendor click)
    return dict(group.commands)


def _help(*args: str, width: int) -> str:
    result = runner.invoke(
        app, [*args, "--help"], env={"COLUMNS": str(width)}, terminal_width=width
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("width", [80, 1000])
@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_help_is_shown_whole(name: str, width: int) -> None:
    command = _commands()[name]
    output = _help(name, width=width)
    shown = _words(output)
    helps = [
        param.help
        for param in command.params
        if getattr(param, "help", None) and not getattr(param, "hidden", False)
    ]
    assert helps, f"{name} has no documented option"
    for text in helps:
        assert _words(text) in shown, f"{name} --help lost part of: {text!r}"
    assert "…" not in output
    if width == 80:
        wide = [line for line in output.splitlines() if len(line) > 80]
        assert not wide, f"{name} --help is wider than 80 columns: {wide}"


def test_the_command_list_shows_every_summary_whole() -> None:
    output = _help(width=80)
    for name, command in _commands().items():
        line = next(line for line in output.splitlines() if line.strip().startswith(name + " "))
        assert command.short_help in line and not line.endswith("..."), line


def test_the_command_line_shows_exactly_the_registries_names() -> None:
    # --preset and --format are made from the registries (PRESETS' and FORMATS' light
    # modules): the command line shows exactly their names, in their order.
    for command in ("train", "tune", "select"):
        assert f"--preset <{'|'.join(PRESETS)}>" in _help(command, width=1000), command
    assert f"one of {', '.join(FORMATS)}. The named" in _words(_help("prepare", width=80))
    assert f"one of {', '.join(FORMATS)} (prepared:" in _words(_help("recommend", width=80))
    bad = runner.invoke(app, ["train", "d", "--out", "m", "--preset", "nope"])
    assert bad.exit_code == 2 and ", ".join(map(repr, PRESETS)) in _words(bad.output)


def test_fixed_choices_are_listed_and_match_the_library() -> None:
    assert [choice.value for choice in TieChoice] == list(TIE_MODES)
    assert [choice.value for choice in IndexKindChoice] == list(INDEX_KINDS)
    assert "--device <auto|cpu|cuda>" in _help("train", width=80)
    assert "--ties <standard|conservative|median>" in _help("evaluate", width=80)
    bad = runner.invoke(app, ["evaluate", "m", "d", "--ties", "loose"])
    assert bad.exit_code == 2 and "loose" in bad.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"gru4rec {__version__}"


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    # `gru4rec --help` and tab completion load the CLI: torch, Polars and MLflow are
    # imported by each command when it runs, not at start-up.
    import subprocess
    import sys

    code = (
        "import sys, gru4rec.cli; print(sorted({'torch', 'polars', 'mlflow'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
