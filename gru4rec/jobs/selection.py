"""Model selection: the best model family for a log, chosen on its validation split only.

Every candidate is fitted on `train_tr` and scored on `valid`; the best one (by `metric`)
is fitted again on `train` (the whole training split), saved, and scored once on `test`.
What `gru4rec select` and the nightly job run.

Candidates (`parse_candidates`):
    gru4rec[:PRESET]   GRU4Rec with a preset (default: the `preset` argument)
    repeat[:PRESET]    the repeat-aware GRU4Rec (`gru4rec.network.repeat`) with that preset and
                       repeat_window 10 (or the `repeat_window` override)
    hybrid[:PRESET]    that GRU4Rec mixed with the session's items and V-SKNN votes, the
                       weights chosen on valid (`gru4rec.scoring.hybrid`); it reuses the GRU4Rec
                       trained for `gru4rec[:PRESET]`, so it costs no extra training
    ranker[:PRESET]    LambdaMART over the candidates of that GRU4Rec, the kNN baselines and
                       the session (`gru4rec.scoring.ranker`), learned out of fold on valid;
                       it reuses the GRU4Rec, the baselines and the hybrid's weights
    pop, spop, iknn, sknn, vsknn   the baselines with their defaults

Example:
    >>> result = select_model(Path("data/yc"), Path("models/best"), parse_candidates("spop,hybrid"))
    >>> result.chosen, result.test["mrr@20"]
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.jobs.train_evaluate import evaluate_split, train_model
from gru4rec.network.config import GRU4RecConfig, apply_overrides, get_preset
from gru4rec.network.data import SessionData, load_items, load_split
from gru4rec.network.train import Callback
from gru4rec.scoring.baselines import BASELINES, Baseline, fit_baseline
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.cutoffs import with_metric
from gru4rec.scoring.evaluate import TieMode
from gru4rec.scoring.hybrid import HybridScorer, MixtureWeights, WeightSearch, choose_weights
from gru4rec.scoring.neural import GRU4RecScorer, as_scorer
from gru4rec.scoring.ranker import (
    RankerFit,
    RankerParts,
    RankerScorer,
    fit_ranker,
    ranker_table,
)
from gru4rec.serving.saved_models import save_scorer

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES = "spop,sknn,vsknn,gru4rec,hybrid,ranker"
HYBRID_KNN = "vsknn"  # the kNN component of hybrids: the best baseline on both public logs
RANKER_BASELINES = ("vsknn", "sknn", "iknn")  # the ranker's neighbour features
DEFAULT_REPEAT_WINDOW = "10"  # items of the session the repeat-aware GRU4Rec looks back on


@dataclass(frozen=True)
class Candidate:
    """One entry of the candidate list: a family and, for the GRU4Rec families, a preset."""

    family: str
    preset: str | None = None

    @property
    def name(self) -> str:
        return self.family if self.preset is None else f"{self.family}:{self.preset}"

    @property
    def preset_name(self) -> str:
        """The preset of a GRU4Rec family (an error for a baseline, which has none)."""
        if self.preset is None:
            raise ConfigError(f"candidate {self.name} has no GRU4Rec preset")
        return self.preset


def parse_candidates(text: str, preset: str = "rsc15") -> list[Candidate]:
    """'spop,gru4rec,hybrid:diginetica' -> candidates; `preset` for GRU families without one."""
    candidates: list[Candidate] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        family, _, chosen = part.partition(":")
        if family in FAMILIES and FAMILIES[family].takes_preset:
            get_preset(chosen or preset)  # an unknown preset is an error now, not after training
            candidate = Candidate(family, chosen or preset)
        elif family in FAMILIES and not chosen:
            candidate = Candidate(family)
        else:
            raise ConfigError(
                f"unknown candidate {part!r}: use gru4rec[:PRESET], repeat[:PRESET], "
                f"hybrid[:PRESET], ranker[:PRESET] or one of "
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
    model_uri: str | None = None  # the chosen model as logged to MLflow (tracked runs)

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


class Fitting:
    """What the candidates of one selection share: the data, the protocol, and every fit
    made so far, each made once (the GRU4Rec trained for `gru4rec:P` serves `hybrid:P`, the
    V-SKNN candidate serves the hybrids' kNN part). A fit's cost in seconds is charged to
    every candidate that uses it."""

    def __init__(
        self,
        data_dir: Path,
        items: pl.DataFrame,
        scratch: Path,
        *,
        metric: str,
        ties: TieMode,
        overrides: Mapping[str, str] | None,
        device: str,
        num_threads: int | None,
        callbacks: Callable[[str], Sequence[Callback]] | None,
    ) -> None:
        self.data_dir, self.items, self.scratch = data_dir, items, scratch
        self.metric, self.ties, self.overrides = metric, ties, overrides
        self.device, self.num_threads, self.callbacks = device, num_threads, callbacks
        self.evaluation: dict[str, Any] = {"ties": ties, "cutoffs": with_metric(metric)}
        self._splits: dict[str, SessionData] = {}
        self._fits: dict[tuple[str, ...], Any] = {}
        self._cost: dict[tuple[str, ...], float] = {}
        self._used: set[tuple[str, ...]] = set()
        self._fitting_seconds = 0.0

    def split(self, name: str) -> SessionData:
        if name not in self._splits:
            self._splits[name], _ = load_split(self.data_dir, name, item_ids=self.items["item_id"])
        return self._splits[name]

    def baseline(self, name: str, split: str) -> Baseline:
        """The baseline `name` fitted on `split`."""
        return self._fit(
            ("baseline", name, split),
            lambda: fit_baseline(name, self.split(split), self.items.height),
        )

    def network(self, preset: str, split: str, *, repeat: bool = False) -> GRU4RecScorer:
        """GRU4Rec (or the repeat-aware one) with `preset` and the overrides, trained on `split`."""
        family = "repeat" if repeat else "gru4rec"
        config = _config(preset, self.overrides, repeat=repeat)
        out = self.scratch / f"{family}-{preset}-{split}"
        return self._fit((family, preset, split), lambda: self._train(config, out, split))

    def hybrid_search(self, preset: str) -> WeightSearch:
        """The hybrid's weights for GRU4Rec with `preset`, searched on valid."""

        def search() -> WeightSearch:
            mixture = HybridScorer(
                self.network(preset, "train_tr"),
                MixtureWeights(),
                self.baseline(HYBRID_KNN, "train_tr"),
            )
            return choose_weights(mixture, self.split("valid"), metric=self.metric, ties=self.ties)

        return self._fit(("weights", preset), search)

    def ranker_parts(self, preset: str, split: str, weights: MixtureWeights) -> RankerParts:
        """The ranker's components fitted on `split`."""
        baselines = {name: self.baseline(name, split) for name in RANKER_BASELINES}
        network = self.network(preset, split)
        return RankerParts.fit(network, baselines, self.split(split), weights)

    def ranker(self, preset: str) -> tuple[RankerFit, float]:
        """LambdaMART learned out of fold on valid over components fitted on train_tr, and
        its candidates' recall there."""

        def learn() -> tuple[RankerFit, float]:
            parts = self.ranker_parts(preset, "train_tr", self.hybrid_search(preset).best)
            table = ranker_table(parts, self.split("valid"), ties=self.ties)
            logger.info(
                "ranker: %d candidate rows for %d predictions on valid (recall %.4f)",
                len(table.labels),
                len(table.group_sizes),
                table.recall,
            )
            fit = fit_ranker(
                table,
                n_items=self.items.height,
                cutoffs=self.evaluation["cutoffs"],
                ties=self.ties,
                seed=int((self.overrides or {}).get("seed", 42)),
                num_threads=self.num_threads,
            )
            return fit, table.recall

        return self._fit(("ranker", preset), learn)

    def score_on_valid(self, scorer: SessionScorer) -> dict[str, Any]:
        return evaluate_split(scorer, self.items, self.data_dir, split="valid", **self.evaluation)

    def charged(
        self, work: Callable[[], Any], *, paid: Collection[tuple[str, ...]] = ()
    ) -> tuple[Any, float]:
        """`work()` and its seconds, counting the full cost of every fit it used except the
        `paid` ones (e.g. `made()` before it: what an earlier stage already spent)."""
        self._used, self._fitting_seconds = set(), 0.0
        started = time.perf_counter()
        result = work()
        own = time.perf_counter() - started - self._fitting_seconds
        return result, own + sum(self._cost[key] for key in self._used if key not in paid)

    def made(self) -> frozenset[tuple[str, ...]]:
        """The fits made so far (keys for `charged(paid=...)`)."""
        return frozenset(self._fits)

    def _fit(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        if key not in self._fits:
            started = time.perf_counter()
            self._fits[key] = make()
            self._cost[key] = time.perf_counter() - started
            self._fitting_seconds += self._cost[key]
        self._used.add(key)
        return self._fits[key]

    def _train(self, config: GRU4RecConfig, out: Path, split: str) -> GRU4RecScorer:
        callbacks = self.callbacks(f"GRU4Rec on {split}") if self.callbacks else ()
        model, _items, _result = train_model(
            self.data_dir,
            config,
            out,
            split=split,
            device=self.device,
            num_threads=self.num_threads,
            callbacks=callbacks,
        )
        scorer = as_scorer(model.eval(), config)
        assert isinstance(scorer, GRU4RecScorer)  # the neural families' scorers
        return scorer


class Family(Protocol):
    """How the candidates of one family are fitted and scored."""

    takes_preset: bool  # a GRU4Rec preset (`family:PRESET`)

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        """Fitted on train_tr, the metrics on valid (and what was chosen there)."""
        ...

    def fit_on_train(
        self, candidate: Candidate, fitting: Fitting, on_valid: dict[str, Any]
    ) -> SessionScorer:
        """Fitted again on the whole train split, with what was chosen on valid."""
        ...


class BaselineFamily:
    takes_preset = False

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        return fitting.score_on_valid(fitting.baseline(candidate.family, "train_tr"))

    def fit_on_train(
        self, candidate: Candidate, fitting: Fitting, on_valid: dict[str, Any]
    ) -> SessionScorer:
        return fitting.baseline(candidate.family, "train")


@dataclass(frozen=True)
class NetworkFamily:
    repeat: bool  # the repeat-aware GRU4Rec
    takes_preset = True

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        network = fitting.network(candidate.preset_name, "train_tr", repeat=self.repeat)
        return fitting.score_on_valid(network)

    def fit_on_train(
        self, candidate: Candidate, fitting: Fitting, on_valid: dict[str, Any]
    ) -> SessionScorer:
        return fitting.network(candidate.preset_name, "train", repeat=self.repeat)


class HybridFamily:
    """GRU4Rec with the session's items and V-SKNN votes, the weights searched on valid
    (the search's own metrics of the best weights: exact at the cutoffs, no coverage)."""

    takes_preset = True

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        search = fitting.hybrid_search(candidate.preset_name)
        logger.info("%s: %d weightings tried on valid", candidate.name, len(search.trials))
        metrics = dict(search.trials)[search.best]
        return {**metrics, "weights": search.best.to_dict(), "n_weights_tried": len(search.trials)}

    def fit_on_train(
        self, candidate: Candidate, fitting: Fitting, on_valid: dict[str, Any]
    ) -> SessionScorer:
        return HybridScorer(
            fitting.network(candidate.preset_name, "train"),
            MixtureWeights(**on_valid["weights"]),
            fitting.baseline(HYBRID_KNN, "train"),
        )


class RankerFamily:
    """LambdaMART over the candidates (`gru4rec.scoring.ranker`): its validation metrics are
    out of fold; refitted on train, the components change and the learned model does not."""

    takes_preset = True

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        fit, recall = fitting.ranker(candidate.preset_name)
        weights = fitting.hybrid_search(candidate.preset_name).best
        return {
            **fit.metrics,
            "weights": weights.to_dict(),
            "ranker_rounds": fit.rounds,
            "candidate_recall": recall,
        }

    def fit_on_train(
        self, candidate: Candidate, fitting: Fitting, on_valid: dict[str, Any]
    ) -> SessionScorer:
        fit, _recall = fitting.ranker(candidate.preset_name)
        weights = MixtureWeights(**on_valid["weights"])
        return RankerScorer(
            fitting.ranker_parts(candidate.preset_name, "train", weights), fit.booster
        )


# Every family a candidate can name; a new family registers here.
FAMILIES: dict[str, Family] = {
    **{name: BaselineFamily() for name in BASELINES},
    "gru4rec": NetworkFamily(repeat=False),
    "repeat": NetworkFamily(repeat=True),
    "hybrid": HybridFamily(),
    "ranker": RankerFamily(),
}
CHOSEN_ON_VALID = ("hybrid", "ranker")  # families whose fitting needs the validation split


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
    items = load_items(data_dir)
    on_valid: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".select-", dir=out_dir.parent) as scratch:
        fitting = Fitting(
            data_dir,
            items,
            Path(scratch),
            metric=metric,
            ties=ties,
            overrides=overrides,
            device=device,
            num_threads=num_threads,
            callbacks=callbacks,
        )
        for candidate in candidates:
            family = FAMILIES[candidate.family]
            metrics, seconds[candidate.name] = fitting.charged(
                functools.partial(family.score_on_valid, candidate, fitting)
            )
            on_valid[candidate.name] = metrics
            logger.info("candidate %s on valid: %s %.4f", candidate.name, metric, metrics[metric])
            if on_candidate is not None:
                on_candidate(candidate.name, metrics)
        # The first of equally good candidates wins (the order given: simpler ones first).
        chosen = max(candidates, key=lambda c: on_valid[c.name][metric])
        logger.info("chose %s; refitting it on train", chosen.name)
        final = FAMILIES[chosen.family].fit_on_train(chosen, fitting, on_valid[chosen.name])
        headline = (metric, "recall@20", "mrr@20")
        extra = {
            "data_dir": str(data_dir.resolve()),
            "train_split": "train",
            "selected": chosen.name,
            "metric": metric,
            "valid": {
                name: {key: m[key] for key in headline if key in m} for name, m in on_valid.items()
            },
        }
        save_scorer(out_dir, final, items, train_data=fitting.split("train"), extra=extra)
    test = evaluate_split(final, items, data_dir, split="test", **fitting.evaluation)
    return SelectionResult(
        metric=metric,
        candidates=on_valid,
        chosen=chosen.name,
        family=chosen.family,
        test={**test, "family": chosen.family},
        model_dir=out_dir,
        hybrid_weights={name: m["weights"] for name, m in on_valid.items() if "weights" in m},
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
    fitted on `split`; a hybrid or a ranker as `select_model` with it as the only candidate
    (chosen or learned on valid, refitted on train). Saves to `out_dir`; returns (scorer,
    item map)."""
    items = load_items(data_dir)
    if family in BASELINES:
        data, _ = load_split(data_dir, split, item_ids=items["item_id"])
        scorer = fit_baseline(family, data, items.height)
        save_scorer(
            out_dir,
            scorer,
            items,
            train_data=data,
            extra={"data_dir": str(Path(data_dir).resolve()), "train_split": split},
        )
        return scorer, items
    if family not in CHOSEN_ON_VALID:
        raise ConfigError(
            f"unknown model family {family!r}: use gru4rec, repeat, hybrid, ranker or one of "
            f"{', '.join(BASELINES)}."
        )
    if split != "train":
        raise ConfigError(
            f"--model {family} fits on train_tr, chooses on valid and refits on train; "
            "drop --train-split."
        )
    result = select_model(
        data_dir,
        out_dir,
        [Candidate(family, preset)],
        overrides=overrides,
        metric=metric,
        ties=ties,
        device=device,
        num_threads=num_threads,
        callbacks=callbacks,
    )
    from gru4rec.serving.saved_models import load_scorer

    return load_scorer(result.model_dir, device=device)


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
