"""`--help` shows every command's summary and every option's whole help text.

Typer's default "rich" markup reads `[...]` in a help string as a style tag and drops it
(it once hid prepare's `[default: the format's, ...]`), and keeps the docstrings' hard line
breaks in the command list; the app uses markdown markup, which does neither.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gru4rec.cli import app

runner = CliRunner()


def _words(text: str) -> str:
    """Text without box drawing, markdown code marks and line breaks: one space between words."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text.replace("`", "")).split())


def _commands() -> dict[str, Any]:
    group: Any = typer.main.get_command(app)  # a click-style group (Typer may vendor click)
    return dict(group.commands)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_help_is_shown_whole(name: str) -> None:
    command = _commands()[name]
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "1000"}, terminal_width=1000)
    assert result.exit_code == 0, result.output
    shown = _words(result.output)
    helps = [param.help for param in command.params if getattr(param, "help", None)]
    assert helps, f"{name} has no documented option"
    for text in helps:
        assert _words(text) in shown, f"{name} --help lost part of: {text!r}"


def test_command_list_reflows_docstrings() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "1000"}, terminal_width=1000)
    assert result.exit_code == 0, result.output
    # One line per command: the docstring's own line breaks are not kept.
    lines = [line for line in result.output.splitlines() if "prepare" in line and "Clean" in line]
    assert len(lines) == 1 and "map items; writes Parquet" in lines[0], result.output
