"""Compare the runs of an MLflow experiment: a table and a plot.

The table holds one row per run that has the chosen metric, grouped by the data the run
was scored on (runs on different logs are never ranked against each other): the model
family, the parameters that differ between runs, the metrics at the metric's cutoff,
training time and throughput. The plot shows each metric against the cutoff and the
training curves (loss, where logged), one line per run.

An experiment of the nightly job is its history instead: one row per night (date, data
window, the family chosen, the new model's and the champion's metric, promoted or kept),
its stage and candidate runs folded under the night, and the metric night by night with
the promotions marked.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gru4rec.errors import ConfigError
from gru4rec.serving.tracking import metric_key

# Final metrics carry one of these prefixes: training runs (test_), nightly stages (new_).
METRIC_PREFIXES = ("test_", "new_", "valid_")


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    family: str  # gru4rec, hybrid, a baseline, or "?" for runs that do not say
    data: str  # the prepared data directory the run was scored on ("?" when not logged)
    params: dict[str, str]
    metrics: dict[str, float]  # final metrics, without prefix, MLflow names (recall_at_20)
    train_seconds: float | None
    events_per_s: float | None


def load_runs(experiment: str, metric: str, tracking_uri: str | None = None) -> list[RunSummary]:
    """Runs of `experiment` that report `metric` (e.g. 'mrr@20'), best first."""
    import mlflow

    from gru4rec.serving.tracking import resolve_tracking_uri

    if not re.fullmatch(r"(recall|mrr|ndcg|coverage|popularity)@\d+", metric):
        raise ConfigError(f"--metric must look like mrr@20 or recall@10; got {metric!r}.")
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(f"no MLflow experiment {experiment!r}; the store has {names}.")
    key = metric_key(metric)
    runs = []
    for run in client.search_runs([found.experiment_id], max_results=1000):
        final = _final_metrics(run.data.metrics)
        if key not in final:
            continue
        runs.append(
            RunSummary(
                run_id=run.info.run_id,
                name=run.data.tags.get("mlflow.runName", run.info.run_id[:8]),
                family=_family(run.data.tags, run.data.params),
                data=run.data.tags.get("data_dir", "?"),
                params=dict(run.data.params),
                metrics=final,
                train_seconds=run.data.metrics.get("train_seconds"),
                events_per_s=run.data.metrics.get("events_per_s"),
            )
        )
    if not runs:
        raise ConfigError(f"no run of experiment {experiment!r} reports {metric}.")
    # Runs on different data cannot be ranked against each other: grouped by data, then best first.
    return sorted(runs, key=lambda r: (r.data, -r.metrics[key]))


def by_data(runs: list[RunSummary]) -> dict[str, list[RunSummary]]:
    """The runs grouped by their data directory (each group keeps its order: best first)."""
    groups: dict[str, list[RunSummary]] = {}
    for run in runs:
        groups.setdefault(run.data, []).append(run)
    return groups


def _family(tags: dict[str, str], params: dict[str, str]) -> str:
    if "family" in tags:
        return tags["family"]
    if "model" in tags:  # `gru4rec baselines` tags each run with the baseline's name
        return tags["model"]
    return "gru4rec" if "preset" in tags or "layers" in params else "?"


def _final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    final: dict[str, float] = {}
    for prefix in reversed(METRIC_PREFIXES):  # test_ wins over new_ over valid_
        final.update({k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)})
    return final


def differing_params(runs: list[RunSummary]) -> list[str]:
    """Parameter names whose values are not the same in every run."""
    names = sorted({name for run in runs for name in run.params})
    return [n for n in names if len({run.params.get(n) for run in runs}) > 1]


def table_rows(runs: list[RunSummary], metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows: run, differing params, metrics at the cutoff, time, throughput."""
    cutoff = metric.partition("@")[2]
    params = differing_params(runs)
    names = [f"{m}@{cutoff}" for m in ("recall", "mrr", "ndcg", "coverage")]
    header = ["run", "family", *params, *names, "train s", "events/s"]
    rows = []
    for run in runs:
        values = [run.metrics.get(metric_key(n)) for n in names]
        rows.append(
            [
                run.name,
                run.family,
                *(run.params.get(p, "") for p in params),
                *("" if v is None else f"{v:.4f}" for v in values),
                "" if run.train_seconds is None else f"{run.train_seconds:,.1f}",
                "" if run.events_per_s is None else f"{run.events_per_s:,.0f}",
            ]
        )
    return header, rows


def plot_runs(runs: list[RunSummary], path: Path, tracking_uri: str | None = None) -> Path:
    """Metric vs cutoff (recall, MRR) and, where logged, the training curves, one line per
    run; PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import mlflow

    from gru4rec.serving.tracking import resolve_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    shown = runs[:12]  # beyond a dozen lines a plot stops being readable
    histories = {run.run_id: client.get_metric_history(run.run_id, "train_loss") for run in shown}
    panels = 3 if any(histories.values()) else 2  # no empty loss panel
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5))
    for run in shown:
        for axis, name in zip(axes[:2], ("recall", "mrr"), strict=True):
            cutoffs = sorted(
                int(k.rpartition("_")[2]) for k in run.metrics if k.startswith(f"{name}_at_")
            )
            axis.plot(
                cutoffs,
                [run.metrics[f"{name}_at_{c}"] for c in cutoffs],
                marker="o",
                label=run.name,
            )
        steps = sorted(histories[run.run_id], key=lambda m: m.step)
        if steps:
            axes[2].plot(
                [m.step + 1 for m in steps], [m.value for m in steps], marker=".", label=run.name
            )
    titles = ("Recall@k", "MRR@k", "training loss per epoch")
    for axis, title, label in zip(axes, titles, ("cutoff k", "cutoff k", "epoch"), strict=False):
        axis.set_title(title)
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(figure, path)


@dataclass(frozen=True)
class Night:
    """One run of the nightly job, as its parent MLflow run records it."""

    run_id: str
    started: dt.datetime  # UTC
    status: str  # FINISHED, FAILED, KILLED, RUNNING
    data_window: str  # first .. last click of the night's data ("?" when not recorded)
    family: str  # the family of the new model ("?" for a night that stopped before)
    chosen: str  # the candidate chosen (family:preset), or the family trained
    new: float | None  # the new model's metric on the night's test split
    champion: float | None  # the champion's, on the same split (None: no champion yet)
    decision: str  # promoted, kept, or the run's status for a night that did not finish
    version: str  # the registry version of the new model

    def as_row(self) -> dict[str, Any]:
        return {
            "night": self.started.strftime("%Y-%m-%d %H:%M"),
            "data window": self.data_window,
            "family": self.chosen if self.chosen != "?" else self.family,
            "new": self.new,
            "champion": self.champion,
            "decision": self.decision,
            "version": self.version,
            "run_id": self.run_id,
        }


def load_nights(
    experiment: str, metric: str, tracking_uri: str | None = None
) -> list[Night] | None:
    """The nightly job's nights in `experiment`, oldest first; None when it has none (not a
    nightly experiment). `metric` as the job was configured, e.g. mrr@20."""
    import mlflow

    from gru4rec.serving.tracking import resolve_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    parents = client.search_runs(
        [found.experiment_id],
        filter_string="tags.job = 'nightly'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    if not parents:
        return None
    key = metric_key(metric)
    nights = []
    for run in parents:
        tags, values = run.data.tags, run.data.metrics
        promoted = values.get("promoted")
        if run.info.status != "FINISHED" or promoted is None:
            decision = run.info.status.lower()
        else:
            decision = "promoted" if promoted else "kept"
        nights.append(
            Night(
                run_id=run.info.run_id,
                started=dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC),
                status=run.info.status,
                data_window=tags.get("data_window", "?"),
                family=tags.get("family", "?"),
                chosen=tags.get("chosen", "?"),
                new=values.get(f"new_{key}"),
                champion=values.get(f"champion_{key}"),
                decision=decision,
                version=tags.get("new_version", ""),
            )
        )
    return nights


def plot_nights(nights: list[Night], metric: str, path: Path) -> Path:
    """The new model's and the champion's metric night by night, promotions marked; PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    def when(night: Night) -> float:
        return float(date2num(night.started))

    figure, axis = plt.subplots(figsize=(9, 4.5))
    scored = [(when(n), n.new, n) for n in nights if n.new is not None]
    axis.plot(
        [x for x, _, _ in scored],
        [y for _, y, _ in scored],
        marker="o",
        label=f"new model's {metric}",
    )
    held = [(when(n), n.champion) for _, _, n in scored if n.champion is not None]
    axis.plot(
        [x for x, _ in held],
        [y for _, y in held],
        marker="s",
        linestyle="--",
        label=f"champion's {metric}",
    )
    promoted = [(x, y) for x, y, n in scored if n.decision == "promoted"]
    axis.scatter(
        [x for x, _ in promoted],
        [y for _, y in promoted],
        marker="*",
        s=220,
        color="tab:green",
        zorder=3,
        label="promoted",
    )
    for night in nights:
        if night.new is None:  # a night that failed: a mark on the axis
            axis.axvline(when(night), color="tab:red", alpha=0.3)
    locator = AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axis.set_title(f"nightly: {metric} on each night's test split")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    """Write `figure` to `path` atomically (a temporary sibling renamed into place)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    staging = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        figure.savefig(staging, dpi=110)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
        plt.close(figure)
    return path
