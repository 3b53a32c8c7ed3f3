"""Options that several commands share, declared once so that their `--help` reads the same,
and the parsing of their values."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gru4rec.errors import ConfigError

Device = Annotated[str, typer.Option(help="auto (GPU if present), cpu or cuda.")]

TrackingUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
    ),
]

Ties = Annotated[
    str,
    typer.Option(help="Tie mode of ranks: standard, conservative (the reference's), median."),
]

Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")]

TIES = ("standard", "conservative", "median")


def parse_cutoffs(first: str, extra: list[str]) -> tuple[int, ...]:
    """`--cutoffs 1 5 10 20` (values after the first arrive as extra arguments) or `1,5,10,20`."""
    values = [v for text in [first, *extra] for v in text.replace(",", " ").split()]
    try:
        cutoffs = tuple(sorted({int(v) for v in values}))
    except ValueError:
        raise ConfigError(
            f"--cutoffs takes positive integers, e.g. --cutoffs 1 5 10 20; got {values}."
        ) from None
    if not cutoffs or cutoffs[0] < 1:
        raise ConfigError(f"--cutoffs must be positive integers; got {values}.")
    return cutoffs


def parse_sets(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value (e.g. --set n_epochs=5); got {pair!r}.")
        overrides[key.strip()] = value.strip()
    return overrides


def tie_mode(ties: str) -> Any:
    """`--ties`, checked."""
    if ties not in TIES:
        raise ConfigError(f"--ties must be one of {', '.join(TIES)}; got {ties!r}.")
    return ties
