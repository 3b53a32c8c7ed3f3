"""Where the commands print: `errors` (stderr: progress, messages, warnings) and `screen()`
(stdout: tables and results, as wide as the terminal, or `piped_width` columns when the
output goes to a file or a pipe, so that tables are not squeezed)."""

from __future__ import annotations

import sys

from rich.console import Console

errors = Console(stderr=True)


def screen(piped_width: int = 160) -> Console:
    """A console on stdout (made when printing: a test runner may have swapped stdout)."""
    return Console(width=None if sys.stdout.isatty() else piped_width)


__all__ = ["errors", "screen"]
