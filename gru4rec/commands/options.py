"""Options that several commands share, declared once so that their `--help` reads the same."""

from __future__ import annotations

from typing import Annotated

import typer

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
