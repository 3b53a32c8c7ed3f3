"""`gru4rec nightly`: the whole job, from a configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gru4rec.commands.options import (
    Device,
    DeviceChoice,
    JsonOut,
    PresetChoice,
    Threads,
    TieChoice,
    Ties,
    TrackingUri,
    hidden_alias,
    renamed,
)
from gru4rec.fileio import write_json

console = Console(stderr=True)


def nightly(
    config: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG", help="A TOML or YAML file: see docs/nightly.example.toml."
        ),
    ],
    json_out: JsonOut = None,
) -> None:
    """Prepare, train, evaluate against the registry's champion, index, recommend; move the
    alias only for a better model and publish the outputs only when every stage succeeded.
    """
    from gru4rec.jobs.nightly import NightlyConfig, run_nightly

    settings = NightlyConfig.load(config)
    summary = run_nightly(settings, report=lambda line: console.print(f"nightly: {line}"))
    champion = "none" if summary["champion"] is None else f"{summary['champion']:.4f}"
    verdict = "promoted" if summary["promote"] else "kept the champion"
    console.print(
        f"nightly: {summary['metric']} new {summary['new']:.4f} vs champion {champion}: "
        f"{verdict}; recommendations in {settings.work_dir / 'current' / 'recommendations.parquet'}"
    )
    if json_out:
        write_json(json_out, summary)


def compare(
    experiment: Annotated[str, typer.Option(help="MLflow experiment whose runs to compare.")],
    metric: Annotated[
        str, typer.Option(help="Sort by this metric, e.g. mrr@20 or recall@20.")
    ] = "mrr@20",
    plot: Annotated[
        Path | None, typer.Option(help="PNG to write (default: compare-EXPERIMENT.png).")
    ] = None,
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = None,
) -> None:
    """Print a table of an experiment's runs per data directory (family, parameters that
    differ, metrics, training time, throughput), best first, and plot metric against cutoff
    and the training curves. A nightly job's experiment: one row per night and the metric
    night by night.
    """
    import sys

    from rich.table import Table

    from gru4rec.commands.compare import by_data, load_nights, load_runs, plot_runs, table_rows

    screen = Console(width=None if sys.stdout.isatty() else 200)
    nights = load_nights(experiment, metric, tracking_uri)
    if nights is not None:
        _compare_nights(experiment, metric, nights, plot, json_out, screen)
        return
    runs = load_runs(experiment, metric, tracking_uri)
    tables: dict[str, list[dict[str, str]]] = {}
    for data, group in by_data(runs).items():  # runs on different data are not ranked together
        header, rows = table_rows(group, metric)
        tables[data] = [dict(zip(header, row, strict=True)) for row in rows]
        table = Table(title=f"{experiment}: {len(group)} runs on {data}, by {metric}")
        for name in header:
            table.add_column(name, justify="left" if name in ("run", "family") else "right")
        for row in rows:
            table.add_row(*row)
        screen.print(table)
    written = plot_runs(runs, plot or Path(f"compare-{experiment}.png"), tracking_uri)
    console.print(f"wrote {written}")
    if json_out:
        write_json(json_out, {"experiment": experiment, "metric": metric, "runs": tables})


def _compare_nights(
    experiment: str,
    metric: str,
    nights: list[Any],
    plot: Path | None,
    json_out: Path | None,
    screen: Console,
) -> None:
    """`compare` on the nightly job's experiment: its history, one row per night."""
    from rich.table import Table

    from gru4rec.commands.compare import plot_nights

    rows = [night.as_row() for night in nights]
    table = Table(title=f"{experiment}: {len(nights)} nights, {metric}")
    columns = ("night", "data window", "family", "new", "champion", "decision", "version")
    for name in columns:
        table.add_column(name, justify="right" if name in ("new", "champion") else "left")
    for row in rows:
        table.add_row(
            *(
                ("" if row[name] is None else f"{row[name]:.4f}")
                if name in ("new", "champion")
                else str(row[name])
                for name in columns
            )
        )
    screen.print(table)
    written = plot_nights(nights, metric, plot or Path(f"compare-{experiment}.png"))
    console.print(f"wrote {written}")
    if json_out:
        write_json(json_out, {"experiment": experiment, "metric": metric, "nights": rows})


def tune(
    data_dir: Annotated[
        Path, typer.Argument(metavar="DATA", help="Prepared data with train_tr and valid splits.")
    ],
    preset: Annotated[
        PresetChoice, typer.Option(help="Settings to start from (unsearched ones stay).")
    ] = PresetChoice.rsc15,
    trials: Annotated[
        int,
        typer.Option(help="Finished (completed or pruned) trials the study should hold.", min=1),
    ] = 20,
    jobs: Annotated[
        int, typer.Option(help="Worker processes sharing the study (one torch thread each).", min=1)
    ] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL (default: optuna.db beside an SQLite MLflow store, else in "
            "the working directory); a PostgreSQL URL lets workers on several machines share "
            "one study."
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(
            help="Study name (default: tune-PRESET-DATA); an existing study is continued."
        ),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(help="Stop trials whose per-epoch validation metric is below the median."),
    ] = True,
    space: Annotated[
        list[str] | None,
        typer.Option(
            help="A searched setting (repeatable): key=low:high, key=low:high:log or "
            "key=a|b|c. Default: the authors' space for the preset's loss (layers, batch, "
            "log-uniform lr, dropouts, momentum, alpha; bpreg and elu for BPR-max only)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Fixed overrides, key=value.")
    ] = None,
    metric: Annotated[str, typer.Option(help="Validation metric to maximise.")] = "mrr@20",
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler (worker i: seed + i).")] = 0,
    device: Device = DeviceChoice.auto,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "gru4rec-tune",
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = None,
) -> None:
    """Optuna search (TPE, median pruning) on the validation split: one parent MLflow run, a
    nested run per trial; prints the trials best first and the command that trains the best.
    """
    import sys

    from rich.table import Table

    from gru4rec.commands.options import parse_sets
    from gru4rec.jobs.tracked_runs import tune_run
    from gru4rec.jobs.tuning import authors_space, parse_dimension
    from gru4rec.network.config import apply_overrides, get_preset

    base = apply_overrides(get_preset(preset.value), parse_sets(set_ or []))
    dimensions = [parse_dimension(text) for text in space] if space else list(authors_space(base))
    unknown = [d.name for d in dimensions if d.name not in base.to_dict()]
    if unknown:
        apply_overrides(base, {unknown[0]: "0"})  # raises the usual unknown-key error
    done = tune_run(
        data_dir,
        base,
        dimensions,
        preset=preset.value,
        trials=trials,
        metric=metric,
        jobs=jobs,
        storage=storage,
        study=study,
        seed=seed,
        prune=prune,
        device=device.value,
        tracking_uri=tracking_uri,
        experiment=experiment,
        report=console.print,
    )
    results, seconds, best = done.trials, done.seconds, done.trials[0]
    table = Table(title=f"tune {preset}: {len(results)} trials on valid, best first")
    for name in ("trial", "state", "epochs", metric, *best.overrides):
        table.add_column(name, justify="right")
    for trial in results:
        table.add_row(
            str(trial.number + 1),
            trial.state,
            str(trial.epochs),
            f"{trial.metrics[metric]:.4f}",
            *trial.overrides.values(),
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    pruned = sum(t.state == "PRUNED" for t in results)
    console.print(f"tune: {len(results)} trials ({pruned} pruned) in {seconds:.1f} s")
    sets = " ".join(
        f"--set {k}={v}" for k, v in {**parse_sets(set_ or []), **best.overrides}.items()
    )
    console.print(f"best: gru4rec train {data_dir} --preset {preset} {sets}")
    if json_out:
        write_json(
            json_out,
            {
                "preset": preset.value,
                "metric": metric,
                "seconds": seconds,
                "trials": [
                    {
                        "number": trial.number,
                        "state": trial.state,
                        "epochs": trial.epochs,
                        "overrides": trial.overrides,
                        "metrics": trial.metrics,
                    }
                    for trial in results
                ],
            },
        )


def baselines(
    data_dir: Annotated[
        Path, typer.Argument(metavar="DATA", help="A directory written by `gru4rec prepare`.")
    ],
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Baselines to run, comma-separated: pop, spop, iknn, sknn, vsknn "
            "[default: all of them].",
            show_default=False,
        ),
    ] = None,
    gru4rec_model: Annotated[
        list[Path] | None,
        typer.Option(
            "--gru4rec",
            help="Trained GRU4Rec model directories to put in the same table "
            "(repeatable); evaluated here on the same test split.",
        ),
    ] = None,
    ties: Ties = TieChoice.conservative,
    markdown: Annotated[
        Path | None, typer.Option(help="Also write the table as Markdown here.")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write every model's full metrics here ({model: metrics})."),
    ] = None,
    experiment: Annotated[
        str, typer.Option(help="MLflow experiment for the baseline runs.")
    ] = "gru4rec-baselines",
    tracking_uri: TrackingUri = None,
    track: Annotated[bool, typer.Option(help="Log each baseline as an MLflow run.")] = True,
    old_models: Annotated[str | None, hidden_alias("--models")] = None,
) -> None:
    """GRU4Rec against the baselines (most popular, session popularity, item-kNN, SKNN,
    V-SKNN), trained and evaluated by the same harness: Recall@20, MRR@20, NDCG@20,
    coverage@20 and training time in one table.
    """
    import contextlib
    import json
    import sys

    from rich.table import Table

    from gru4rec.errors import ConfigError
    from gru4rec.jobs.train_evaluate import evaluate_baseline, evaluate_model_dir
    from gru4rec.scoring.baselines import BASELINES
    from gru4rec.serving import tracking

    chosen = renamed("--models", old_models, "--candidates", candidates) or ",".join(BASELINES)
    names = [n.strip() for n in chosen.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}: choose from {', '.join(BASELINES)}.")
    rows: list[tuple[str, dict[str, Any], float | None]] = []
    for name in names:
        console.print(f"baselines: fitting and evaluating {name}")
        run = (
            tracking.start_run(tracking_uri, experiment, name)
            if track
            else contextlib.nullcontext()
        )
        with run:
            metrics = evaluate_baseline(name, data_dir, ties=ties.value)
            if track:
                tracking.log_inputs(data_dir, {"model": name, "command": "baselines"})
                tracking.log_test_metrics(metrics)
                import mlflow

                mlflow.log_metric("train_seconds", metrics["fit_seconds"])
        rows.append((name, metrics, metrics["fit_seconds"]))
    for model_dir in gru4rec_model or []:
        metrics = evaluate_model_dir(model_dir, data_dir, ties=ties.value)
        extra = json.loads((model_dir / "config.json").read_text()).get("extra", {})
        seconds = sum(epoch["seconds"] for epoch in extra.get("epochs", [])) or None
        rows.append((f"GRU4Rec ({model_dir.name})", metrics, seconds))
    header = [
        "model",
        "recall@20",
        "mrr@20",
        "ndcg@20",
        "coverage@20",
        "repeat mrr@20",
        "new mrr@20",
        "train s",
    ]
    keys = [key.replace(" ", "_") for key in header[1:7]]
    lines = [
        [
            name,
            *(f"{m.get(key, float('nan')):.4f}" for key in keys),
            "" if s is None else f"{s:,.1f}",
        ]
        for name, m, s in rows
    ]
    table = Table(title=f"{data_dir}: {rows[0][1]['n_events']:,} test events, {ties} ties")
    for column in header:
        table.add_column(column, justify="left" if column == "model" else "right")
    for line in lines:
        table.add_row(*line)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if markdown:
        text = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
        text += "".join("| " + " | ".join(line) + " |\n" for line in lines)
        markdown.write_text(text)
        console.print(f"wrote {markdown}")
    if json_out:
        write_json(json_out, {name: metrics for name, metrics, _seconds in rows})
        console.print(f"wrote {json_out}")


def select(
    data_dir: Annotated[
        Path,
        typer.Argument(
            metavar="DATA", help="A directory written by `gru4rec prepare`, with a valid split."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    candidates: Annotated[
        str,
        typer.Option(
            help="Comma-separated candidates: gru4rec[:PRESET], repeat[:PRESET] (GRU4Rec with a "
            "learned repeat gate), hybrid[:PRESET] (GRU4Rec mixed with the session's items and "
            "V-SKNN, weights chosen on valid), ranker[:PRESET] (LambdaMART over candidates, "
            "learned on valid), pop, spop, iknn, sknn, vsknn."
        ),
    ] = "spop,sknn,vsknn,gru4rec,hybrid,ranker",
    preset: Annotated[
        PresetChoice,
        typer.Option(help="Preset of gru4rec, repeat and hybrid candidates named without one."),
    ] = PresetChoice.rsc15,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a GRU4Rec setting, key=value (repeatable), e.g. --set seed=1."
        ),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Choose by this validation metric: recall@k, mrr@k or ndcg@k.")
    ] = "mrr@20",
    ties: Ties = TieChoice.conservative,
    device: Device = DeviceChoice.auto,
    threads: Threads = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write every candidate's valid metrics, the choice and its test metrics here.",
        ),
    ] = None,
    tracking_uri: TrackingUri = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "gru4rec-select",
    register: Annotated[
        str | None, typer.Option(help="Register the chosen model under this name in MLflow.")
    ] = None,
    track: Annotated[
        bool, typer.Option(help="Log to MLflow: a parent run and a nested run per candidate.")
    ] = True,
) -> None:
    """The best model for this log: every candidate fitted on train_tr and scored on valid,
    the best refitted on train, saved to --out and scored once on test.
    """
    import sys

    from rich.table import Table

    from gru4rec import api
    from gru4rec.commands.display import EpochProgress, metrics_table, progress_bar
    from gru4rec.commands.options import parse_sets

    with progress_bar(console) as progress:
        result = api.select(
            data_dir,
            out,
            candidates=candidates,
            preset=preset.value,
            settings=parse_sets(set_ or []),
            metric=metric,
            ties=ties.value,
            device=device.value,
            threads=threads,
            callbacks=lambda label: [EpochProgress(progress)],
            report=console.print,
            track=track,
            tracking_uri=tracking_uri,
            experiment=experiment,
            register=register,
        )
    if result.model_uri is not None:
        console.print(f"logged to MLflow: {result.model_uri}")
    table = Table(title=f"{data_dir}: candidates on valid, {ties} ties")
    for column in ("candidate", "recall@20", "mrr@20", "repeat mrr@20", "new mrr@20", "seconds"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for name, values in result.candidates.items():
        mark = " (chosen)" if name == result.chosen else ""
        table.add_row(
            name + mark,
            *(
                f"{values.get(k, float('nan')):.4f}"
                for k in ("recall@20", "mrr@20", "repeat_mrr@20", "new_mrr@20")
            ),
            f"{result.seconds.get(name, 0.0):,.1f}",
        )
    screen = Console(width=None if sys.stdout.isatty() else 200)
    screen.print(table)
    screen.print(metrics_table(result.test, title=f"test: {result.chosen} saved to {out}"))
    if json_out:
        write_json(json_out, result.to_json())
