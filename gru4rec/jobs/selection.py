"""Model selection: the best model family for a log, chosen on its validation split only.

Every candidate is fitted on `train_tr` and scored on `valid`; the best one (by `metric`)
is fitted again on `train` (the whole training split), saved, and scored once on `test`.
What `gru4rec select` and the nightly job run.

Candidates (`parse_candidates`):
    gru4rec[:PRESET]   GRU4Rec with a preset (default: the `preset` argument)
    repeat[:PRESET]    the repeat-aware GRU4Rec (`gru4rec.repeat`) with that preset and
                       repeat_window 10 (or the `repeat_window` override)
    hybrid[:PRESET]    that GRU4Rec mixed with the session's items and V-SKNN votes, the
                       weights chosen on valid (`gru4rec.hybrid`); it reuses the GRU4Rec
                       trained for `gru4rec[:PRESET]`, so it costs no extra training
    pop, spop, iknn, sknn, vsknn   the baselines with their defaults

Example:
    >>> result = select_model(Path("data/yc"), Path("models/best"), parse_candidates("spop,hybrid"))
    >>> result.chosen, result.test["mrr@20"]
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.baselines import BASELINES, Baseline, fit_baseline
from gru4rec.config import GRU4RecConfig, apply_overrides, get_preset
from gru4rec.data import SessionData, load_items, load_split
from gru4rec.errors import ConfigError, InputDataError
from gru4rec.evaluate import TieMode
from gru4rec.hybrid import HybridScorer, MixtureWeights, choose_weights
from gru4rec.jobs.workflow import evaluate_split, train_model
from gru4rec.saved_models import save_scorer
from gru4rec.scorers import GRU4RecScorer, SessionScorer, as_scorer
from gru4rec.train import Callback

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES = "spop,sknn,vsknn,gru4rec,hybrid"
HYBRID_KNN = "vsknn"  # the kNN component of hybrids: the best baseline on both public logs
GRU_FAMILIES = ("gru4rec", "repeat", "hybrid")
DEFAULT_REPEAT_WINDOW = "10"  # items of the session the repeat-aware GRU4Rec looks back on


@dataclass(frozen=True)
class Candidate:
    """One entry of the candidate list: a family and, for the GRU4Rec families, a preset."""

    family: str
    preset: str | None = None

    @property
    def name(self) -> str:
        return self.family if self.preset is None else f"{self.family}:{self.preset}"


def parse_candidates(text: str, preset: str = "rsc15") -> list[Candidate]:
    """'spop,gru4rec,hybrid:diginetica' -> candidates; `preset` for GRU families without one."""
    candidates: list[Candidate] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        family, _, chosen = part.partition(":")
        if family in GRU_FAMILIES:
            get_preset(chosen or preset)  # an unknown preset is an error now, not after training
            candidate = Candidate(family, chosen or preset)
        elif family in BASELINES and not chosen:
            candidate = Candidate(family)
        else:
            raise ConfigError(
                f"unknown candidate {part!r}: use gru4rec[:PRESET], repeat[:PRESET], "
                f"hybrid[:PRESET] or one of "
                f"{', '.join(BASELINES)}."
            )
        if candidate not in candidates:
            candidates.append(candidate)
    if not candidates:
        raise ConfigError(f"no candidates given; for example --candidates {DEFAULT_CANDIDATES}")
    return candidates


@dataclass
class SelectionResult:
    """What selection measured: every candidate's validation metrics, the choice, and the
    chosen model's test metrics."""

    metric: str
    candidates: dict[str, dict[str, Any]]
    chosen: str
    family: str
    test: dict[str, Any]
    model_dir: Path
    hybrid_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "chosen": self.chosen,
            "family": self.family,
            "model_dir": str(self.model_dir),
            "candidates": self.candidates,
            "hybrid_weights": self.hybrid_weights,
            "test": self.test,
            "seconds": self.seconds,
        }


def select_model(
    data_dir: Path,
    out_dir: Path,
    candidates: Sequence[Candidate],
    *,
    overrides: Mapping[str, str] | None = None,
    metric: str = "mrr@20",
    ties: TieMode = "conservative",
    device: str = "auto",
    num_threads: int | None = None,
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
    on_candidate: Callable[[str, dict[str, Any]], None] | None = None,
) -> SelectionResult:
    """Choose among `candidates` on `valid`, refit the best on `train`, save it to `out_dir`
    and score it on `test` (see the module docstring).

    overrides: `--set` values applied to every GRU4Rec preset (e.g. the seed).
    callbacks: training callbacks for a GRU4Rec training, given its description.
    on_candidate: called with each candidate's name and validation metrics as they come.
    """
    data_dir = Path(data_dir)
    for split in ("train_tr", "valid", "train", "test"):
        if not (data_dir / f"{split}.parquet").is_file():
            raise InputDataError(
                f"{data_dir / f'{split}.parquet'} is missing: selection fits on train_tr, "
                "chooses on valid, refits on train and scores on test. Prepare the log with a "
                "validation split (`gru4rec prepare ... --valid-days N` or --valid-fraction F)."
            )
    _check_metric(metric)
    cutoff = int(metric.partition("@")[2])
    evaluation: dict[str, Any] = {"ties": ties, "cutoffs": sorted({1, 5, 10, 20, cutoff})}
    items = load_items(data_dir)
    fit_data, _ = load_split(data_dir, "train_tr", item_ids=items["item_id"])
    result_metrics: dict[str, dict[str, Any]] = {}
    weights: dict[str, MixtureWeights] = {}
    seconds: dict[str, float] = {}

    def record(name: str, metrics: dict[str, Any]) -> None:
        result_metrics[name] = metrics
        logger.info("candidate %s on valid: %s %.4f", name, metric, metrics[metric])
        if on_candidate is not None:
            on_candidate(name, metrics)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".select-", dir=out_dir.parent) as scratch:
        knn_cache: dict[str, Baseline] = {}
        for candidate in candidates:
            if candidate.family not in BASELINES:
                continue
            started = time.perf_counter()
            model = fit_baseline(candidate.family, fit_data, items.height)
            knn_cache[candidate.family] = model
            record(
                candidate.name, evaluate_split(model, items, data_dir, split="valid", **evaluation)
            )
            seconds[candidate.name] = time.perf_counter() - started
        for candidate in candidates:
            if candidate.family != "repeat":
                continue
            assert candidate.preset is not None
            started = time.perf_counter()
            repeat = _train_gru(data_dir, _config(candidate.preset, overrides, repeat=True),
                                Path(scratch) / f"repeat-{candidate.preset}", "train_tr", device,
                                num_threads, callbacks)  # fmt: skip
            record(
                candidate.name, evaluate_split(repeat, items, data_dir, split="valid", **evaluation)
            )
            seconds[candidate.name] = time.perf_counter() - started
        plain_presets = [c.preset for c in candidates if c.family in ("gru4rec", "hybrid")]
        for preset in dict.fromkeys(p for p in plain_presets if p is not None):
            assert preset is not None
            config = _config(preset, overrides)
            started = time.perf_counter()
            gru = _train_gru(data_dir, config, Path(scratch) / f"gru-{preset}", "train_tr",
                             device, num_threads, callbacks)  # fmt: skip
            trained = time.perf_counter() - started
            plain = Candidate("gru4rec", preset)
            if plain in candidates:
                record(
                    plain.name, evaluate_split(gru, items, data_dir, split="valid", **evaluation)
                )
                seconds[plain.name] = trained
            hybrid = Candidate("hybrid", preset)
            if hybrid in candidates:
                started = time.perf_counter()
                knn = knn_cache.get(HYBRID_KNN) or fit_baseline(HYBRID_KNN, fit_data, items.height)
                mixture = HybridScorer(gru, MixtureWeights(), knn)
                valid, _ = load_split(data_dir, "valid", item_ids=items["item_id"])
                search = choose_weights(mixture, valid, metric=metric, ties=ties)
                logger.info("%s: %d weightings tried on valid", hybrid.name, len(search.trials))
                weights[hybrid.name] = search.best
                # The search's own metrics of the best weights (exact at the cutoffs; no coverage).
                metrics = dict(search.trials)[search.best]
                record(hybrid.name, {**metrics, "weights": search.best.to_dict(),
                                     "n_weights_tried": len(search.trials)})  # fmt: skip
                seconds[hybrid.name] = trained + time.perf_counter() - started
        # The first of equally good candidates wins (the order given: simpler ones first).
        chosen = max(candidates, key=lambda c: result_metrics[c.name][metric])
        logger.info("chose %s; refitting it on train", chosen.name)
        final, train_data = _refit(chosen, data_dir, items, overrides, weights, device,
                                    num_threads, callbacks, Path(scratch))  # fmt: skip
        save_scorer(out_dir, final, items, train_data=train_data, extra={
            "data_dir": str(data_dir.resolve()), "train_split": "train", "selected": chosen.name,
            "metric": metric, "valid": {n: {k: m[k] for k in (metric, "recall@20", "mrr@20") if k in m}
                                        for n, m in result_metrics.items()},
        })  # fmt: skip
    test = evaluate_split(final, items, data_dir, split="test", **evaluation)
    return SelectionResult(
        metric=metric,
        candidates=result_metrics,
        chosen=chosen.name,
        family=chosen.family,
        test={**test, "family": chosen.family},
        model_dir=out_dir,
        hybrid_weights={name: w.to_dict() for name, w in weights.items()},
        seconds=seconds,
    )


def fit_family(
    family: str,
    data_dir: Path,
    out_dir: Path,
    *,
    preset: str = "rsc15",
    overrides: Mapping[str, str] | None = None,
    split: str = "train",
    metric: str = "mrr@20",
    ties: TieMode = "conservative",
    device: str = "auto",
    num_threads: int | None = None,
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
) -> tuple[SessionScorer, pl.DataFrame]:
    """`gru4rec train --model FAMILY` for the families other than plain GRU4Rec: a baseline
    fitted on `split`; a hybrid as `select_model` with it as the only candidate (weights
    chosen on valid, refitted on train). Saves to `out_dir`; returns (scorer, item map)."""
    items = load_items(data_dir)
    if family in BASELINES:
        data, _ = load_split(data_dir, split, item_ids=items["item_id"])
        scorer = fit_baseline(family, data, items.height)
        save_scorer(out_dir, scorer, items, train_data=data,
                    extra={"data_dir": str(Path(data_dir).resolve()), "train_split": split})  # fmt: skip
        return scorer, items
    if family != "hybrid":
        raise ConfigError(
            f"unknown model family {family!r}: use gru4rec, repeat, hybrid or one of "
            f"{', '.join(BASELINES)}."
        )
    if split != "train":
        raise ConfigError("--model hybrid fits on train_tr, chooses on valid and refits on train; "
                          "drop --train-split.")  # fmt: skip
    result = select_model(data_dir, out_dir, [Candidate("hybrid", preset)], overrides=overrides,
                          metric=metric, ties=ties, device=device, num_threads=num_threads,
                          callbacks=callbacks)  # fmt: skip
    from gru4rec.saved_models import load_scorer

    return load_scorer(result.model_dir, device=device)


def _refit(
    chosen: Candidate,
    data_dir: Path,
    items: pl.DataFrame,
    overrides: Mapping[str, str] | None,
    weights: Mapping[str, MixtureWeights],
    device: str,
    num_threads: int | None,
    callbacks: Callable[[str], Sequence[Callback]] | None,
    scratch: Path,
) -> tuple[SessionScorer, SessionData]:
    """The chosen candidate fitted on the whole `train` split, with its training sessions."""
    train, _ = load_split(data_dir, "train", item_ids=items["item_id"])
    if chosen.family in BASELINES:
        return fit_baseline(chosen.family, train, items.height), train
    assert chosen.preset is not None
    config = _config(chosen.preset, overrides, repeat=chosen.family == "repeat")
    gru = _train_gru(data_dir, config, scratch / "final", "train", device, num_threads, callbacks)
    if chosen.family in ("gru4rec", "repeat"):
        return gru, train
    knn = fit_baseline(HYBRID_KNN, train, items.height)
    return HybridScorer(gru, weights[chosen.name], knn), train


def _train_gru(
    data_dir: Path,
    config: GRU4RecConfig,
    out: Path,
    split: str,
    device: str,
    num_threads: int | None,
    callbacks: Callable[[str], Sequence[Callback]] | None,
) -> GRU4RecScorer:
    label = f"GRU4Rec on {split}"
    model, _items, _result = train_model(
        data_dir, config, out, split=split, device=device, num_threads=num_threads,
        callbacks=callbacks(label) if callbacks else (),
    )  # fmt: skip
    scorer = as_scorer(model.eval(), config)
    assert isinstance(scorer, GRU4RecScorer)
    return scorer


def _config(
    preset: str, overrides: Mapping[str, str] | None, *, repeat: bool = False
) -> GRU4RecConfig:
    """The preset with the overrides; `repeat`: the repeat-aware model (repeat_window > 0)."""
    values = dict(overrides or {})
    if repeat:
        values.setdefault("repeat_window", DEFAULT_REPEAT_WINDOW)
    else:
        values.pop("repeat_window", None)  # the plain families stay plain
    return apply_overrides(get_preset(preset), values)


def _check_metric(metric: str) -> None:
    name, _, cutoff = metric.partition("@")
    if name not in ("recall", "mrr", "ndcg") or not cutoff.isdigit() or int(cutoff) < 1:
        raise ConfigError(
            f"--metric must be recall@k, mrr@k or ndcg@k (e.g. mrr@20); got {metric!r}."
        )


__all__ = [
    "DEFAULT_CANDIDATES",
    "Candidate",
    "SelectionResult",
    "fit_family",
    "parse_candidates",
    "select_model",
]
