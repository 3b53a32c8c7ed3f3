"""The `gru4rec` command line: thin Typer commands over the library and the pipelines."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from gru4rec.commands import data_commands, job_commands, model_commands, serve_commands
from gru4rec.errors import Gru4RecError

app = typer.Typer(
    help="Session-based recommendations with GRU4Rec: prepare click logs, train, evaluate, "
    "index and recommend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Report a Gru4RecError as one paragraph on stderr and exit 2, without a traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Gru4RecError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return run  # type: ignore[return-value]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Configure logging once, for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every import
    # MLflow draws a progress bar per artifact download, which floods logs and pipes.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Transparent huge pages for torch's large CPU tensors (read once, before torch's first
    # allocation, so here: no command has imported torch yet). Training reads and writes
    # scattered 2 KB rows of 100+ MB item tables every step; with 4 KB pages nearly every
    # row costs a TLB miss. Measured: 2% faster steps on the diginetica preset.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _add(name: str, command: Callable[..., Any], extra_args: bool = False) -> None:
    # extra_args: `--cutoffs 1 5 10 20` leaves "5 10 20" as extra arguments for the command.
    settings = {"allow_extra_args": True} if extra_args else {}
    app.command(name, context_settings=settings)(friendly_errors(command))


# The command modules import their heavy libraries (torch, mlflow) inside each command,
# so `gru4rec --help` stays fast.
_add("generate", data_commands.generate)
_add("prepare", data_commands.prepare)
_add("train", model_commands.train, extra_args=True)
_add("evaluate", model_commands.evaluate, extra_args=True)
_add("index", serve_commands.index)
_add("recommend", serve_commands.recommend)
_add("nightly", job_commands.nightly)
_add("compare", job_commands.compare)
_add("tune", job_commands.tune)
_add("baselines", job_commands.baselines)
_add("select", job_commands.select)
