"""How a command fails on bad input: one paragraph on stderr (what, where, how to fix), exit
status 2, no traceback. Light to import: the CLI wraps every command with it at start-up."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer

from gru4rec.commands.consoles import errors
from gru4rec.errors import Gru4RecError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Report a Gru4RecError as one paragraph on stderr and exit 2, without a traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Gru4RecError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return run  # type: ignore[return-value]
