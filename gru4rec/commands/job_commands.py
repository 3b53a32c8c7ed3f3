"""`gru4rec nightly`: the whole job, from a configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gru4rec.commands.consoles import errors, screen
from gru4rec.commands.options import (
    Device,
    DeviceChoice,
    Experiment,
    JsonOut,
    Metric,
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
    parse_sets,
    renamed,
)
from gru4rec.fileio import write_json

if TYPE_CHECKING:
    from rich.console import Console
from gru4rec.options import Compute, Evaluation, Tracking


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
    summary = run_nightly(settings, report=lambda line: errors.print(f"nightly: {line}"))
    champion = "none" if summary["champion"] is None else f"{summary['champion']:.4f}"
    verdict = "promoted" if summary["promote"] else "kept the champion"
    errors.print(
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

    from rich.table import Table

    from gru4rec.commands.compare import by_data, load_nights, load_runs, plot_runs, table_rows

    out_screen = screen(piped_width=200)
    nights = load_nights(experiment, metric, tracking_uri)
    if nights is not None:
        _compare_nights(experiment, metric, nights, plot, json_out, out_screen)
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
        out_screen.print(table)
    written = plot_runs(runs, plot or Path(f"compare-{experiment}.png"), tracking_uri)
    errors.print(f"wrote {written}")
    if json_out:
        write_json(json_out, {"experiment": experiment, "metric": metric, "runs": tables})


def _compare_nights(
    experiment: str,
    metric: str,
    nights: list[Any],
    plot: Path | None,
    json_out: Path | None,
    out_screen: Console,
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
    out_screen.print(table)
    written = plot_nights(nights, metric, plot or Path(f"compare-{experiment}.png"))
    errors.print(f"wrote {written}")
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
    set_: Settings = None,
    metric: Metric = "mrr@20",
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler (worker i: seed + i).")] = 0,
    device: Device = DeviceChoice.auto,
    experiment: Experiment = "gru4rec-tune",
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = None,
) -> None:
    """Optuna search (TPE, median pruning) on the validation split: one parent MLflow run, a
    nested run per trial; prints the trials best first and the command that trains the best.
    """
    from gru4rec.commands.display import trials_table
    from gru4rec.jobs.tracked_runs import tune_run
    from gru4rec.jobs.tuning import Study

    settings = parse_sets(set_ or [])
    done = tune_run(
        data_dir,
        preset=preset.value,
        settings=settings,
        space=space or (),
        study=Study(trials, jobs, storage, study, prune),
        evaluation=Evaluation(metric=metric),
        compute=Compute(device.value, seed=seed),
        tracking=Tracking(True, tracking_uri, experiment),
        report=errors.print,
    )
    screen(piped_width=200).print(trials_table(done, preset.value, metric))
    pruned = sum(t.state == "PRUNED" for t in done.trials)
    errors.print(f"tune: {len(done.trials)} trials ({pruned} pruned) in {done.seconds:.1f} s")
    best = {**settings, **done.trials[0].overrides}
    sets = " ".join(f"--set {k}={v}" for k, v in best.items())
    errors.print(f"best: gru4rec train {data_dir} --preset {preset} {sets}")
    if json_out:
        fields = ("number", "state", "epochs", "overrides", "metrics")
        found = [{k: getattr(t, k) for k in fields} for t in done.trials]
        record: dict[str, Any] = {"preset": preset.value, "metric": metric}
        write_json(json_out, {**record, "seconds": done.seconds, "trials": found})


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
    experiment: Experiment = "gru4rec-baselines",
    tracking_uri: TrackingUri = None,
    track: Track = True,
    old_models: Annotated[str | None, hidden_alias("--models")] = None,
) -> None:
    """GRU4Rec against the baselines (most popular, session popularity, item-kNN, SKNN,
    V-SKNN), trained and evaluated by the same harness: Recall@20, MRR@20, NDCG@20,
    coverage@20 and training time in one table.
    """
    from gru4rec.commands.display import (
        BASELINE_COLUMNS,
        baseline_lines,
        baselines_table,
        markdown_table,
    )
    from gru4rec.jobs.tracked_runs import baselines_run
    from gru4rec.scoring.baselines import BASELINES

    chosen = renamed("--models", old_models, "--candidates", candidates) or ",".join(BASELINES)
    rows = baselines_run(
        data_dir,
        [n.strip() for n in chosen.split(",") if n.strip()],
        models=gru4rec_model or (),
        evaluation=Evaluation(ties=ties.value),
        tracking=Tracking(track, tracking_uri, experiment),
        report=errors.print,
    )
    title = f"{data_dir}: {rows[0].metrics['n_events']:,} test events, {ties} ties"
    screen(piped_width=200).print(baselines_table(rows, title))
    if markdown:
        markdown.write_text(markdown_table(BASELINE_COLUMNS, baseline_lines(rows)))
        errors.print(f"wrote {markdown}")
    if json_out:
        write_json(json_out, {row.name: row.metrics for row in rows})
        errors.print(f"wrote {json_out}")


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
    set_: Settings = None,
    metric: Metric = "mrr@20",
    ties: Ties = TieChoice.conservative,
    device: Device = DeviceChoice.auto,
    threads: Threads = None,
    seed: Seed = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write every candidate's valid metrics, the choice and its test metrics here.",
        ),
    ] = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = "gru4rec-select",
    register: Register = None,
    track: Track = True,
) -> None:
    """The best model for this log: every candidate fitted on train_tr and scored on valid,
    the best refitted on train, saved to --out and scored once on test.
    """
    from gru4rec import api
    from gru4rec.commands.display import (
        EpochProgress,
        candidates_table,
        metrics_table,
        progress_bar,
    )

    with progress_bar(errors) as progress:
        result = api.select(
            data_dir,
            out,
            candidates=candidates,
            preset=preset.value,
            settings=parse_sets(set_ or []),
            evaluation=Evaluation(ties=ties.value, metric=metric),
            compute=Compute(device.value, threads, seed),
            tracking=Tracking(track, tracking_uri, experiment, register=register),
            callbacks=lambda label: [EpochProgress(progress)],
            report=errors.print,
        )
    if result.model_uri is not None:
        errors.print(f"logged to MLflow: {result.model_uri}")
    out_screen = screen(piped_width=200)
    out_screen.print(candidates_table(result, data_dir, ties.value))
    out_screen.print(metrics_table(result.test, title=f"test: {result.chosen} saved to {out}"))
    if json_out:
        write_json(json_out, result.to_json())
