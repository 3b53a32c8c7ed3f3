"""What the commands show: progress bars for long work (training epochs, evaluation), on
stderr, and metric tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from gru4rec.commands.consoles import errors
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.train import Callback, EpochStats

if TYPE_CHECKING:
    from gru4rec.jobs.selection import SelectionResult
    from gru4rec.jobs.tracked_runs import BaselineRow, TuneRun


def progress_bar(console: Console | None = None) -> Progress:
    """A bar with a description, count, free-text info and time remaining."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console or errors,
    )


class EpochProgress(Callback):
    """One bar per epoch, refreshed every `every` steps to keep the training loop cheap."""

    def __init__(self, progress: Progress, every: int = 50) -> None:
        self.progress, self.every = progress, every
        self.task: TaskID | None = None
        self.n_epochs = 0

    def on_train_start(self, config: GRU4RecConfig) -> None:
        self.n_epochs = config.n_epochs

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        description = f"epoch {epoch + 1}/{self.n_epochs}"
        self.task = self.progress.add_task(description, total=n_steps, info="")

    def on_step_end(self, epoch: int, step: int, loss: float) -> None:
        if self.task is not None and (step + 1) % self.every == 0:
            self.progress.update(self.task, completed=step + 1, info=f"loss {loss:.4f}")

    def on_epoch_end(self, epoch: int, stats: EpochStats) -> None:
        if self.task is not None:
            total = self.progress.tasks[self.task].total
            info = f"loss {stats.loss:.4f}, {stats.events_per_s:,.0f} events/s"
            self.progress.update(self.task, completed=total, info=info)


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


def candidates_table(result: SelectionResult, data_dir: Path, ties: str) -> Table:
    """`select`'s candidates on valid, the chosen one marked, with their seconds."""
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
    return table


def trials_table(done: TuneRun, preset: str, metric: str) -> Table:
    """`tune`'s trials, best first."""
    table = Table(title=f"tune {preset}: {len(done.trials)} trials on valid, best first")
    for name in ("trial", "state", "epochs", metric, *done.trials[0].overrides):
        table.add_column(name, justify="right")
    for trial in done.trials:
        table.add_row(
            str(trial.number + 1),
            trial.state,
            str(trial.epochs),
            f"{trial.metrics[metric]:.4f}",
            *trial.overrides.values(),
        )
    return table


BASELINE_COLUMNS = (
    "model",
    "recall@20",
    "mrr@20",
    "ndcg@20",
    "coverage@20",
    "repeat mrr@20",
    "new mrr@20",
    "train s",
)


def baseline_lines(rows: Sequence[BaselineRow]) -> list[list[str]]:
    """The cells of `baselines`' table, one line a model (BASELINE_COLUMNS)."""
    keys = [key.replace(" ", "_") for key in BASELINE_COLUMNS[1:7]]
    return [
        [
            row.name,
            *(f"{row.metrics.get(key, float('nan')):.4f}" for key in keys),
            "" if row.seconds is None else f"{row.seconds:,.1f}",
        ]
        for row in rows
    ]


def baselines_table(rows: Sequence[BaselineRow], title: str) -> Table:
    table = Table(title=title)
    for column in BASELINE_COLUMNS:
        table.add_column(column, justify="left" if column == "model" else "right")
    for line in baseline_lines(rows):
        table.add_row(*line)
    return table


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A Markdown table of `lines` under `header`."""
    text = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    return text + "".join("| " + " | ".join(line) + " |\n" for line in lines)
