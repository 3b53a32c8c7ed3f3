"""`gru4rec train` and `gru4rec evaluate`: option parsing and printing over gru4rec.jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gru4rec.commands.consoles import errors, screen
from gru4rec.commands.options import (
    Cutoffs,
    Device,
    DeviceChoice,
    Experiment,
    Family,
    JsonOut,
    Preset,
    PresetChoice,
    Register,
    Seed,
    Settings,
    Threads,
    TieChoice,
    Ties,
    Track,
    TrackingUri,
    hidden_alias,
    parse_cutoffs,
    parse_sets,
    renamed,
    required,
)
from gru4rec.fileio import write_json
from gru4rec.options import Compute, Evaluation, Tracking


def train(
    ctx: typer.Context,
    data_dir: Annotated[
        Path, typer.Argument(metavar="DATA", help="A directory written by `gru4rec prepare`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    preset: Preset = PresetChoice.rsc15,
    set_: Settings = None,
    model: Family = "gru4rec",
    device: Device = DeviceChoice.auto,
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
    cutoffs: Cutoffs = None,
    ties: Ties = TieChoice.conservative,
    threads: Threads = None,
    seed: Seed = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = "gru4rec",
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    register: Register = None,
    track: Track = True,
    json_out: JsonOut = None,
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
    from gru4rec import api
    from gru4rec.commands.display import EpochProgress, metrics_table, progress_bar

    evaluation = Evaluation(
        train_split, test_split, valid_split, parse_cutoffs(cutoffs, list(ctx.args)), ties.value
    )
    with progress_bar(errors) as progress:
        done = api.train(
            data_dir,
            out,
            model=model,
            preset=preset.value,
            settings=parse_sets(set_ or []),
            evaluation=evaluation,
            compute=Compute(device.value, threads, seed),
            tracking=Tracking(track, tracking_uri, experiment, run_name, register),
            warm_start=warm_start,
            keep_missing_items=keep_missing_items,
            window_days=window_days,
            callbacks=[EpochProgress(progress)],
        )
    if done.train_seconds is not None:
        errors.print(f"saved the model to {out} ({done.train_seconds:.1f} s of training)")
    else:
        errors.print(f"saved the {model} model to {out}")
    if done.metrics is not None:
        screen().print(metrics_table(done.metrics, title=f"{test_split}: {out}"))
        if json_out:
            write_json(json_out, done.metrics)
    if done.model_uri is not None:
        errors.print(f"logged to MLflow ({done.tracking_uri}): {done.model_uri}")


def evaluate(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A model directory written by `gru4rec train`, or an MLflow URI of one "
            "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/checkpoint; tracking "
            "store from $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Argument(
            metavar="DATA", help="A directory written by `gru4rec prepare`.", show_default=False
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Which split of DATA to evaluate.")] = "test",
    cutoffs: Cutoffs = None,
    ties: Ties = TieChoice.conservative,
    batch_size: Annotated[int, typer.Option(help="Sessions scored together.", min=1)] = 512,
    device: Device = DeviceChoice.auto,
    json_out: JsonOut = None,
    old_data: Annotated[Path | None, hidden_alias("--data")] = None,
) -> None:
    """Rank every next item of every test session against ALL items; print Recall, MRR, NDCG,
    coverage and popularity at each cutoff. Test items unknown to the model are counted, not fatal.
    """
    from gru4rec.commands.display import metrics_table, progress_bar
    from gru4rec.jobs.train_evaluate import evaluate_model_dir, n_test_events
    from gru4rec.serving.tracking import fetch_checkpoint

    data = required("DATA", renamed("--data", old_data, "DATA", data))
    options = {"cutoffs": parse_cutoffs(cutoffs, list(ctx.args)), "ties": ties.value}
    model_dir = fetch_checkpoint(model)
    with progress_bar(errors) as progress:
        task = progress.add_task(f"evaluating {split}", total=n_test_events(data, split), info="")
        metrics = evaluate_model_dir(
            model_dir,
            data,
            device=device.value,
            split=split,
            batch_size=batch_size,
            progress=lambda done: progress.update(task, completed=done),
            **options,
        )
    screen().print(metrics_table(metrics, title=f"{split}: {model}"))
    if json_out:
        write_json(json_out, metrics)
        errors.print(f"wrote {json_out}")
