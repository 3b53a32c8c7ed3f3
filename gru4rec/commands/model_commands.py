"""`gru4rec train` and `gru4rec evaluate`: option parsing and printing over gru4rec.jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gru4rec.commands.options import Device, Threads, Ties, TrackingUri
from gru4rec.errors import ConfigError
from gru4rec.fileio import write_json

console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 160)
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


def _ties(ties: str) -> Any:
    if ties not in TIES:
        raise ConfigError(f"--ties must be one of {', '.join(TIES)}; got {ties!r}.")
    return ties


def train(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Argument(help="A directory written by `gru4rec prepare`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    preset: Annotated[
        str,
        typer.Option(
            help="Tuned settings to start from: rsc15, yoochoose, rees46, coveo, "
            "retailrocket or diginetica."
        ),
    ] = "rsc15",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting, key=value (repeatable), e.g. "
            "--set n_epochs=5 --set layers=200 --set loss=bpr-max.",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="Model family: gru4rec; repeat (GRU4Rec with a learned repeat gate over the "
            "session's last repeat_window items, default 10); hybrid (GRU4Rec mixed with the "
            "session's items and V-SKNN, weights chosen on valid: needs train_tr/valid); or a "
            "baseline: pop, spop, iknn, sknn, vsknn. `gru4rec select` chooses for you."
        ),
    ] = "gru4rec",
    device: Device = "auto",
    train_split: Annotated[
        str, typer.Option(help="Split to train on (train, or train_tr for tuning).")
    ] = "train",
    test_split: Annotated[
        str, typer.Option(help="Split evaluated after training (valid when tuning); 'none' skips.")
    ] = "test",
    valid_split: Annotated[
        str | None,
        typer.Option(help="Split evaluated after every epoch and logged as valid_* metrics."),
    ] = None,
    cutoffs: Annotated[
        str, typer.Option(help="Metric cutoffs: --cutoffs 1 5 10 20.")
    ] = "1,5,10,20",
    ties: Ties = "conservative",
    threads: Threads = None,
    tracking_uri: TrackingUri = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "gru4rec",
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    register: Annotated[
        str | None, typer.Option(help="Register the model under this name in the MLflow registry.")
    ] = None,
    track: Annotated[
        bool, typer.Option(help="Log to MLflow (--no-track: train without it).")
    ] = True,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the test metrics here.")
    ] = None,
    warm_start: Annotated[
        str | None,
        typer.Option(
            help="Start from this GRU4Rec model's weights (a model directory or an MLflow URI "
            "such as models:/NAME@champion): its settings are the base --set changes, items new "
            "to the data get fresh rows, its optimiser state carries over. E.g. --set n_epochs=3."
        ),
    ] = None,
    keep_missing_items: Annotated[
        bool,
        typer.Option(
            help="With --warm-start: keep the old model's items that the data no longer has "
            "(still recommended; support 0). Default: drop them."
        ),
    ] = False,
    window_days: Annotated[
        float | None,
        typer.Option(
            help="Train only on the sessions that start in the training split's last N days "
            "(a recent window; needs timestamps)."
        ),
    ] = None,
) -> None:
    """Train a model (GRU4Rec by default) on a prepared directory, save it, evaluate, log to
    MLflow."""
    from gru4rec.jobs.runs import train_run
    from gru4rec.progress import EpochProgress, progress_bar

    evaluation = {"cutoffs": parse_cutoffs(cutoffs, list(ctx.args)), "ties": _ties(ties)}
    with progress_bar(console) as progress:
        done = train_run(
            data_dir, out, family=model, preset=preset, overrides=parse_sets(set_ or []),
            split=train_split, test_split=test_split, valid_split=valid_split,
            evaluation=evaluation, device=device, threads=threads,
            callbacks=[EpochProgress(progress)], track=track, tracking_uri=tracking_uri,
            experiment=experiment, run_name=run_name, register=register,
            warm_start=warm_start, keep_missing=keep_missing_items, window_days=window_days,
        )  # fmt: skip
    if done.train_seconds is not None:
        console.print(f"saved the model to {out} ({done.train_seconds:.1f} s of training)")
    else:
        console.print(f"saved the {model} model to {out}")
    if done.metrics is not None:
        out_console.print(metrics_table(done.metrics, title=f"{test_split}: {out}"))
        if json_out:
            write_json(json_out, done.metrics)
    if done.model_uri is not None:
        console.print(f"logged to MLflow ({done.tracking_uri}): {done.model_uri}")


def evaluate(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            help="A model directory written by `gru4rec train`, or an MLflow URI of one "
            "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/checkpoint; tracking "
            "store from $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
        ),
    ],
    data: Annotated[Path, typer.Option(help="A directory written by `gru4rec prepare`.")],
    split: Annotated[str, typer.Option(help="Which split of DATA to evaluate.")] = "test",
    cutoffs: Annotated[
        str, typer.Option(help="Metric cutoffs, e.g. --cutoffs 1 5 10 20 (or 1,5,10,20).")
    ] = "1,5,10,20",
    ties: Annotated[
        str,
        typer.Option(
            help="Rank of a target tied with other items: standard (1 + #higher), "
            "conservative (#higher-or-equal) or median (their mean)."
        ),
    ] = "conservative",
    batch_size: Annotated[int, typer.Option(help="Sessions scored together.", min=1)] = 512,
    device: Device = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the metrics as JSON here.")
    ] = None,
) -> None:
    """Rank every next item of every test session against ALL items; print Recall, MRR, NDCG,
    coverage and popularity at each cutoff. Test items unknown to the model are counted, not fatal.
    """
    from gru4rec.jobs.workflow import evaluate_model_dir, n_test_events
    from gru4rec.progress import progress_bar
    from gru4rec.tracking import fetch_checkpoint

    options = {"cutoffs": parse_cutoffs(cutoffs, list(ctx.args)), "ties": _ties(ties)}
    model_dir = fetch_checkpoint(model)
    with progress_bar(console) as progress:
        task = progress.add_task(f"evaluating {split}", total=n_test_events(data, split), info="")
        metrics = evaluate_model_dir(
            model_dir, data, device=device, split=split, batch_size=batch_size,
            progress=lambda done: progress.update(task, completed=done), **options,
        )  # fmt: skip
    out_console.print(metrics_table(metrics, title=f"{split}: {model}"))
    if json_out:
        write_json(json_out, metrics)
        console.print(f"wrote {json_out}")


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """Recall/MRR/NDCG/coverage/popularity by cutoff, then the counts."""
    table = Table(title=f"{title} ({metrics['ties']} ties, {metrics['n_events']:,} events)")
    table.add_column("cutoff", justify="right")
    names = ("recall", "mrr", "ndcg", "coverage", "popularity", "repeat_recall", "new_recall")
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    for k in metrics["cutoffs"]:
        table.add_row(
            str(k), *(f"{metrics.get(f'{name}@{k}', float('nan')):.4f}" for name in names)
        )
    table.caption = (
        f"unknown test events dropped: {metrics.get('n_unknown_events', 0):,}; "
        f"sessions left too short: {metrics.get('n_short_sessions_dropped', 0):,}; "
        f"targets seen earlier in their session (repeat): {metrics.get('n_repeat_events', 0):,}"
    )
    return table
