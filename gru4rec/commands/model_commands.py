"""`gru4rec train` and `gru4rec evaluate`: option parsing and printing over gru4rec.jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gru4rec.commands.display import metrics_table
from gru4rec.commands.options import (
    Device,
    Threads,
    Ties,
    TrackingUri,
    parse_cutoffs,
    parse_sets,
    tie_mode,
)
from gru4rec.fileio import write_json

console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 160)


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
    from gru4rec.commands.display import EpochProgress, progress_bar
    from gru4rec.jobs.tracked_runs import train_run

    evaluation = {"cutoffs": parse_cutoffs(cutoffs, list(ctx.args)), "ties": tie_mode(ties)}
    with progress_bar(console) as progress:
        done = train_run(
            data_dir,
            out,
            family=model,
            preset=preset,
            overrides=parse_sets(set_ or []),
            split=train_split,
            test_split=test_split,
            valid_split=valid_split,
            evaluation=evaluation,
            device=device,
            threads=threads,
            callbacks=[EpochProgress(progress)],
            track=track,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            register=register,
            warm_start=warm_start,
            keep_missing=keep_missing_items,
            window_days=window_days,
        )
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
    from gru4rec.commands.display import progress_bar
    from gru4rec.jobs.train_evaluate import evaluate_model_dir, n_test_events
    from gru4rec.serving.tracking import fetch_checkpoint

    options = {"cutoffs": parse_cutoffs(cutoffs, list(ctx.args)), "ties": tie_mode(ties)}
    model_dir = fetch_checkpoint(model)
    with progress_bar(console) as progress:
        task = progress.add_task(f"evaluating {split}", total=n_test_events(data, split), info="")
        metrics = evaluate_model_dir(
            model_dir,
            data,
            device=device,
            split=split,
            batch_size=batch_size,
            progress=lambda done: progress.update(task, completed=done),
            **options,
        )
    out_console.print(metrics_table(metrics, title=f"{split}: {model}"))
    if json_out:
        write_json(json_out, metrics)
        console.print(f"wrote {json_out}")
