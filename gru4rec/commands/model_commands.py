"""`gru4rec train` and `gru4rec evaluate`: thin wrappers over gru4rec.jobs.workflow."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gru4rec.commands.options import Device, Threads, Ties, TrackingUri
from gru4rec.errors import ConfigError

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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a temporary file in the same directory, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)


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
) -> None:
    """Train a model (GRU4Rec by default) on a prepared directory, save it, evaluate, log to
    MLflow."""
    import contextlib

    from gru4rec.config import apply_overrides, get_preset
    from gru4rec.jobs.workflow import evaluate_split, train_tracked
    from gru4rec.progress import EpochProgress, progress_bar

    evaluation = {"cutoffs": parse_cutoffs(cutoffs, list(ctx.args)), "ties": _ties(ties)}
    config = apply_overrides(get_preset(preset), parse_sets(set_ or []))
    run: Any = contextlib.nullcontext()
    if track:
        from gru4rec import tracking

        run = tracking.start_run(tracking_uri, experiment, run_name)
    with run:
        tags = {"command": "train", "family": model}
        if model in ("gru4rec", "repeat", "hybrid"):
            tags["preset"] = preset
        scorer: Any
        with progress_bar(console) as progress:
            if model in ("gru4rec", "repeat"):
                if model == "repeat" and config.repeat_window == 0:
                    config = apply_overrides(config, {"repeat_window": "10"})
                scorer, items, result = train_tracked(
                    data_dir, config, out, track=track, tags=tags, split=train_split,
                    device=device, num_threads=threads, callbacks=[EpochProgress(progress)],
                    valid_split=valid_split, **evaluation,
                )  # fmt: skip
                console.print(f"saved the model to {out} ({result.seconds:.1f} s of training)")
            else:
                from gru4rec.jobs.selection import fit_family

                if track:
                    tracking.log_inputs(data_dir, tags)
                scorer, items = fit_family(
                    model, data_dir, out, preset=preset, overrides=parse_sets(set_ or []),
                    split=train_split, ties=evaluation["ties"], device=device, num_threads=threads,
                    callbacks=lambda label: [EpochProgress(progress)],
                )  # fmt: skip
                console.print(f"saved the {model} model to {out}")
        metrics = None
        if test_split != "none":
            metrics = evaluate_split(scorer, items, data_dir, split=test_split, **evaluation)
            out_console.print(metrics_table(metrics, title=f"{test_split}: {out}"))
            if json_out:
                write_json(json_out, metrics)
        if track:
            import mlflow

            run_info = {"run_id": mlflow.active_run().info.run_id,  # type: ignore[union-attr]
                        "tracking_uri": mlflow.get_tracking_uri(), "experiment": experiment}  # fmt: skip
            write_json(out / "mlflow_run.json", run_info)  # lets `gru4rec index` log to this run
            if metrics is not None:
                tracking.log_test_metrics(metrics, prefix=f"{test_split}_")
            uri = tracking.log_model(out, registered_name=register).model_uri
            console.print(
                f"logged to MLflow ({tracking.resolve_tracking_uri(tracking_uri)}): {uri}"
            )


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
