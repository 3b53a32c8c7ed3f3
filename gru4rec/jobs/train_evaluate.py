"""Train and evaluate from a prepared-data directory: what `gru4rec train/evaluate` and the
nightly job run. Tracking (`gru4rec.jobs.tracked_training`) and progress display attach as
callbacks: nothing here imports MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import ConfigError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import load_items, load_split
from gru4rec.network.families import build_network
from gru4rec.network.model import GRU4Rec
from gru4rec.network.train import Callback, EpochStats, FitResult, fit
from gru4rec.network.warm_start import (
    check_structure,
    warm_items,
    warm_optimizer_state,
    warm_start_model,
)
from gru4rec.options import CUTOFFS
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.evaluate import TieMode, evaluate
from gru4rec.serving import families
from gru4rec.serving.checkpoint import (
    CONFIG_FILE,
    load_checkpoint,
    read_optimizer_state,
    resolve_device,
    save_checkpoint,
)
from gru4rec.serving.saved_models import model_family

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStart:
    """A model to continue training from (`--warm-start`).

    model: a model directory or an MLflow URI such as `models:/NAME@champion`.
    keep_missing: keep its items that the new data lacks (support 0); else drop them.
    """

    model: str
    keep_missing: bool = False


@dataclass(frozen=True, eq=False)
class WarmStartSource:
    """A trained GRU4Rec to start from (`gru4rec.network.warm_start`), loaded on the CPU."""

    source: str  # as the user named it: a directory or an MLflow URI
    model: GRU4Rec
    config: GRU4RecConfig
    items: pl.DataFrame
    keep_missing: bool = False  # keep the old items the new data lacks
    optimizer: dict[str, tuple[Any, Any]] | None = None  # its optimiser's state, if saved
    chain: int = 0  # warm starts in a row that led to this model (0: trained from scratch)


def load_warm_start(source: str, keep_missing: bool = False) -> WarmStartSource:
    """The GRU4Rec model at `source` (a model directory or an MLflow URI such as
    `models:/NAME@champion`; of a hybrid, its GRU4Rec part)."""
    from gru4rec.serving.tracking import fetch_checkpoint

    fetched = fetch_checkpoint(source)
    family = model_family(fetched)
    model_dir = families.get(family).network_dir(fetched)
    if model_dir is None:
        holders = [n for n, f in families.REGISTRY.items() if f.network_dir(fetched) is not None]
        raise ConfigError(
            f"warm start from {source}: it holds a {family} model, which has no weights to "
            f"start from; name a model of one of {', '.join(holders)}."
        )
    model, config, items = load_checkpoint(model_dir, device="cpu")
    extra = json.loads((model_dir / CONFIG_FILE).read_text()).get("extra", {})
    chain = int((extra.get("warm_start") or {}).get("chain", 0))
    return WarmStartSource(
        source, model, config, items, keep_missing, read_optimizer_state(model_dir), chain
    )


def train_model(
    data_dir: Path,
    config: GRU4RecConfig,
    out_dir: Path,
    *,
    split: str = "train",
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    num_threads: int | None = None,
    valid_split: str | None = None,
    on_validation: Callable[[int, dict[str, Any]], None] | None = None,
    warm_start: WarmStartSource | None = None,
    window_days: float | None = None,
    **evaluation: Any,
) -> tuple[GRU4Rec, pl.DataFrame, FitResult]:
    """Train on `<data_dir>/<split>.parquet` and save the checkpoint to `out_dir`.

    valid_split: evaluated after every epoch (outside the epoch's timing); the metrics go
        to `on_validation(epoch, metrics)`. `evaluation` holds `evaluate_split` options.
    warm_start: start from that model's weights (`gru4rec.network.warm_start`), else from scratch.
    window_days: train on the sessions of the split's last `window_days` days only.
    Returns (model, item map, fit result).
    """
    items = load_items(data_dir)
    extra: dict[str, Any] = {}
    optimizer = None
    if warm_start is None:
        model = build_network(items.height, config)
    else:
        check_structure(warm_start.config, config, warm_start.source)
        items = warm_items(warm_start.items, items, warm_start.keep_missing)
        model, carried = warm_start_model(warm_start.model, warm_start.items, items, config)
        if warm_start.optimizer is not None:
            optimizer = warm_optimizer_state(warm_start.optimizer, model, warm_start.items, items)
        logger.info(
            "warm start from %s: %s; optimiser %s",
            warm_start.source,
            carried.describe(),
            "carried over" if optimizer else "fresh",
        )
        extra["warm_start"] = {
            "source": warm_start.source,
            **dataclasses.asdict(carried),
            "optimizer": "carried" if optimizer else "fresh",
            "chain": warm_start.chain + 1,
        }
    item_ids = items["item_id"] if warm_start is not None and warm_start.keep_missing else None
    data, report = load_split(data_dir, split, item_ids=item_ids, window_days=window_days)
    logger.info("training on %s: %s", split, report)
    if valid_split is not None:
        callbacks = [
            *callbacks,
            _Validation(model, items, data_dir, valid_split, on_validation, evaluation),
        ]
    result = fit(
        model,
        data,
        config,
        item_support=items["support"].to_numpy(),
        callbacks=callbacks,
        device=resolve_device(device),
        num_threads=num_threads,
        optimizer_state=optimizer,
    )
    extra.update(
        {
            "data_dir": str(Path(data_dir).resolve()),
            "train_split": split,
            "train_events": report.n_events,
            "window_days": window_days,
            "epochs": [dataclasses.asdict(epoch) for epoch in result.epochs],
        }
    )
    save_checkpoint(
        out_dir, model, config, items, extra=extra, optimizer_state=result.optimizer_state
    )
    return model, items, result


class _Validation(Callback):
    """Evaluates a split after every epoch and hands the metrics on."""

    def __init__(
        self,
        model: GRU4Rec,
        items: pl.DataFrame,
        data_dir: Path,
        split: str,
        report: Callable[[int, dict[str, Any]], None] | None,
        options: dict[str, Any],
    ) -> None:
        self.model, self.items, self.data_dir, self.split = model, items, data_dir, split
        self.report, self.options = report, options

    def on_epoch_end(self, epoch: int, stats: EpochStats) -> None:
        metrics = evaluate_split(
            self.model, self.items, self.data_dir, split=self.split, **self.options
        )
        logger.info("epoch %d %s: %s", epoch + 1, self.split, _headline(metrics))
        if self.report is not None:
            self.report(epoch, metrics)


def _headline(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("recall@", "mrr@"))
    )


def evaluate_split(
    model: SessionScorer | GRU4Rec,
    items: pl.DataFrame,
    data_dir: Path,
    *,
    split: str = "test",
    cutoffs: Sequence[int] = CUTOFFS,
    ties: TieMode = "conservative",
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Full-ranking metrics of `model` on a split, with what loading had to drop.

    Items are matched by their original ids, so any prepared directory works: events of
    items the model does not know are dropped and counted (`n_unknown_events`), as are the
    sessions left shorter than 2 (`n_short_sessions_dropped`).
    """
    data, report = load_split(data_dir, split, item_ids=items["item_id"])
    metrics = evaluate(
        model,
        data,
        cutoffs=cutoffs,
        ties=ties,
        batch_size=batch_size,
        item_support=items["support"].to_numpy(),
        progress=progress,
    )
    return {
        **metrics,
        "split": split,
        "n_unknown_events": report.n_unknown_events,
        "n_short_sessions_dropped": report.n_short_sessions_dropped,
        "n_sessions": report.n_sessions,
    }


def evaluate_model_dir(
    model_dir: Path, data_dir: Path, *, device: str = "auto", **options: Any
) -> dict[str, Any]:
    """Load a model directory of any family and evaluate it on a prepared directory (see
    `evaluate_split`); the result names the model's `family`."""
    from gru4rec.serving.saved_models import load_scorer

    scorer, items = load_scorer(model_dir, device=device)
    return {**evaluate_split(scorer, items, data_dir, **options), "family": scorer.family}


def n_test_events(data_dir: Path, split: str) -> int:
    """Prediction events of a split (events minus sessions), for sizing a progress bar."""
    frame = pl.scan_parquet(Path(data_dir) / f"{split}.parquet")
    row = frame.select(pl.len(), pl.col("session_id").n_unique()).collect().row(0)
    return int(row[0] - row[1])


def evaluate_baseline(
    name: str,
    data_dir: Path,
    *,
    split: str = "train",
    test_split: str = "test",
    params: dict[str, Any] | None = None,
    **evaluation: Any,
) -> dict[str, Any]:
    """Fit a baseline (gru4rec.scoring.baselines) on a split and evaluate it exactly as GRU4Rec is
    evaluated (same harness, same tie mode); `fit_seconds` is added to the metrics."""
    import time

    from gru4rec.scoring.baselines import fit_baseline

    items = load_items(data_dir)
    data, _report = load_split(data_dir, split)
    started = time.perf_counter()
    model = fit_baseline(name, data, items.height, **(params or {}))
    fit_seconds = time.perf_counter() - started
    metrics = evaluate_split(model, items, data_dir, split=test_split, **evaluation)
    return {**metrics, "fit_seconds": fit_seconds}
