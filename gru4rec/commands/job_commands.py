"""`gru4rec nightly`: the whole job, from a configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def nightly(
    config: Annotated[
        Path, typer.Argument(help="A TOML or YAML file: see docs/nightly.example.toml.")
    ],
) -> None:
    """Prepare, train, evaluate against the registry's champion, index, recommend; move the
    alias only for a better model and publish the outputs only when every stage succeeded.
    """
    from pipelines.nightly import NightlyConfig, run_nightly

    settings = NightlyConfig.load(config)
    summary = run_nightly(settings, report=lambda line: console.print(f"nightly: {line}"))
    champion = "none" if summary["champion"] is None else f"{summary['champion']:.4f}"
    verdict = "promoted" if summary["promote"] else "kept the champion"
    console.print(
        f"nightly: {summary['metric']} new {summary['new']:.4f} vs champion {champion}: "
        f"{verdict}; recommendations in {settings.work_dir / 'current' / 'recommendations.parquet'}"
    )
