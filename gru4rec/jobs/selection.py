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
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import polars as pl

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.jobs.train_evaluate import evaluate_split, train_model
from gru4rec.network.config import GRU4RecConfig, get_preset
from gru4rec.network.data import SessionData, load_items, load_split
from gru4rec.network.train import Callback
from gru4rec.options import Compute, Evaluation, with_metric
from gru4rec.scoring.baselines import Baseline, fit_baseline
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.neural import GRU4RecScorer, as_scorer
from gru4rec.serving import families
from gru4rec.serving.families import Candidate
from gru4rec.serving.saved_models import load_scorer, save_scorer

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES = "spop,sknn,vsknn,gru4rec,hybrid,ranker"
T = TypeVar("T")


def parse_candidates(text: str, preset: str = "rsc15") -> list[Candidate]:
    """'spop,gru4rec,hybrid:diginetica' -> candidates; `preset` for GRU families without one."""
    candidates: list[Candidate] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, chosen = part.partition(":")
        family = families.REGISTRY.get(name)
        if family is not None and family.takes_preset:
            get_preset(chosen or preset)  # an unknown preset is an error now, not after training
            candidate = Candidate(name, chosen or preset)
        elif family is not None and not chosen:
            candidate = Candidate(name)
        else:
            with_preset = [n for n, f in families.REGISTRY.items() if f.takes_preset]
            others = [n for n, f in families.REGISTRY.items() if not f.takes_preset]
            raise ConfigError(
                f"unknown candidate {part!r}: use "
                f"{', '.join(f'{n}[:PRESET]' for n in with_preset)} or one of "
                f"{', '.join(others)}."
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
    """What the candidates of one selection share (`gru4rec.serving.families.base.Fitting`):
    the data, the protocol, and every fit made so far, each made once (the GRU4Rec trained
    for `gru4rec:P` serves `hybrid:P`, the V-SKNN candidate serves the hybrids' kNN part). A
    fit's cost in seconds is charged to every candidate that uses it."""

    def __init__(
        self,
        data_dir: Path,
        items: pl.DataFrame,
        scratch: Path,
        *,
        settings: Mapping[str, str] | None = None,
        evaluation: Evaluation = Evaluation(),
        compute: Compute = Compute(),
        callbacks: Callable[[str], Sequence[Callback]] | None = None,
    ) -> None:
        self.data_dir, self.items, self.scratch = data_dir, items, scratch
        self.settings = compute.seeded(settings or {})
        self.metric, self.ties = evaluation.metric, evaluation.ties
        self.cutoffs = with_metric(evaluation.metric, evaluation.cutoffs)
        self.compute, self.threads, self.callbacks = compute, compute.threads, callbacks
        self.seed = int(self.settings.get("seed", 42))
        self.n_items = items.height
        self._splits: dict[str, SessionData] = {}
        self._fits: dict[tuple[str, ...], Any] = {}
        self._cost: dict[tuple[str, ...], float] = {}
        self._used: set[tuple[str, ...]] = set()
        self._fitting_seconds = 0.0

    @property
    def evaluation(self) -> dict[str, Any]:
        """The keyword arguments of every evaluation: ties and cutoffs."""
        return {"ties": self.ties, "cutoffs": self.cutoffs}

    def split(self, name: str) -> SessionData:
        if name not in self._splits:
            self._splits[name], _ = load_split(self.data_dir, name, item_ids=self.items["item_id"])
        return self._splits[name]

    def baseline(self, name: str, split: str) -> Baseline:
        """The baseline `name` fitted on `split`."""
        return self.shared(
            ("baseline", name, split),
            lambda: fit_baseline(name, self.split(split), self.items.height),
        )

    def trained(self, config: GRU4RecConfig, split: str, key: tuple[str, ...]) -> GRU4RecScorer:
        """GRU4Rec with `config` trained on `split` (made once per `key`)."""
        return self.shared(key, lambda: self._train(config, self.scratch / "-".join(key), split))

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

    def shared(self, key: tuple[str, ...], make: Callable[[], T]) -> T:
        if key not in self._fits:
            started = time.perf_counter()
            self._fits[key] = make()
            self._cost[key] = time.perf_counter() - started
            self._fitting_seconds += self._cost[key]
        self._used.add(key)
        return cast(T, self._fits[key])

    def _train(self, config: GRU4RecConfig, out: Path, split: str) -> GRU4RecScorer:
        callbacks = self.callbacks(f"GRU4Rec on {split}") if self.callbacks else ()
        model, _items, _result = train_model(
            self.data_dir,
            config,
            out,
            split=split,
            device=self.compute.device,
            num_threads=self.threads,
            callbacks=callbacks,
        )
        scorer = as_scorer(model.eval(), config)
        assert isinstance(scorer, GRU4RecScorer)  # the neural families' scorers
        return scorer


def select_model(
    data_dir: Path,
    out_dir: Path,
    candidates: Sequence[Candidate],
    *,
    settings: Mapping[str, str] | None = None,
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
    on_candidate: Callable[[str, dict[str, Any]], None] | None = None,
) -> SelectionResult:
    """Choose among `candidates` on `valid` by `evaluation.metric`, refit the best on
    `train`, save it to `out_dir` and score it on `test` (see the module docstring).

    settings: `--set` values applied to every GRU4Rec preset.
    callbacks: training callbacks for a GRU4Rec training, given its description.
    on_candidate: called with each candidate's name and validation metrics as they come.
    """
    data_dir = Path(data_dir)
    _check_splits(data_dir)
    with _fitting_beside(
        out_dir,
        data_dir,
        settings=settings,
        evaluation=evaluation,
        compute=compute,
        callbacks=callbacks,
    ) as fitting:
        items = fitting.items
        on_valid, seconds = _score_candidates(candidates, fitting, on_candidate)
        metric = evaluation.metric
        # The first of equally good candidates wins (the order given: simpler ones first).
        chosen = max(candidates, key=lambda c: on_valid[c.name][metric])
        logger.info("chose %s; refitting it on train", chosen.name)
        final = families.get(chosen.family).fit(chosen, fitting, "train", on_valid[chosen.name])
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


def _check_splits(data_dir: Path) -> None:
    for split in ("train_tr", "valid", "train", "test"):
        if not (data_dir / f"{split}.parquet").is_file():
            raise InputDataError(
                f"{data_dir / f'{split}.parquet'} is missing: selection fits on train_tr, "
                "chooses on valid, refits on train and scores on test. Prepare the log with a "
                "validation split (`gru4rec prepare ... --valid-days N` or --valid-fraction F)."
            )


def _score_candidates(
    candidates: Sequence[Candidate],
    fitting: Fitting,
    on_candidate: Callable[[str, dict[str, Any]], None] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Every candidate fitted on train_tr and scored on valid: (metrics, seconds) by name."""
    on_valid: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for candidate in candidates:
        family = families.get(candidate.family)
        metrics, seconds[candidate.name] = fitting.charged(
            functools.partial(family.score_on_valid, candidate, fitting)
        )
        on_valid[candidate.name] = metrics
        logger.info(
            "candidate %s on valid: %s %.4f",
            candidate.name,
            fitting.metric,
            metrics[fitting.metric],
        )
        if on_candidate is not None:
            on_candidate(candidate.name, metrics)
    return on_valid, seconds


def fit_family(
    model: str,
    data_dir: Path,
    out_dir: Path,
    *,
    preset: str = "rsc15",
    settings: Mapping[str, str] | None = None,
    evaluation: Evaluation = Evaluation(),
    compute: Compute = Compute(),
    callbacks: Callable[[str], Sequence[Callback]] | None = None,
) -> tuple[SessionScorer, pl.DataFrame]:
    """`gru4rec train --model FAMILY`: a family that chooses nothing on valid (a baseline)
    fitted on `evaluation.train_split`; one that does (a hybrid, the ranker) as
    `select_model` with it as the only candidate (chosen or learned on valid, refitted on
    train). Saves to `out_dir`; returns (scorer, item map)."""
    family = families.get(model)
    candidate = Candidate(model, preset if family.takes_preset else None)
    split = evaluation.train_split
    if family.chosen_on_valid:
        if split != "train":
            raise ConfigError(
                f"--model {model} fits on train_tr, chooses on valid and refits on train; "
                "drop --train-split."
            )
        result = select_model(
            data_dir,
            out_dir,
            [candidate],
            settings=settings,
            evaluation=evaluation,
            compute=compute,
            callbacks=callbacks,
        )
        return load_scorer(result.model_dir, device=compute.device)
    with _fitting_beside(
        out_dir,
        data_dir,
        settings=settings,
        evaluation=evaluation,
        compute=compute,
        callbacks=callbacks,
    ) as fitting:
        scorer = family.fit(candidate, fitting, split, {})
        extra = {"data_dir": str(Path(data_dir).resolve()), "train_split": split}
        save_scorer(out_dir, scorer, fitting.items, train_data=fitting.split(split), extra=extra)
    return scorer, fitting.items


@contextmanager
def _fitting_beside(
    out_dir: Path,
    data_dir: Path,
    *,
    settings: Mapping[str, str] | None,
    evaluation: Evaluation,
    compute: Compute,
    callbacks: Callable[[str], Sequence[Callback]] | None,
) -> Iterator[Fitting]:
    """A `Fitting` over `data_dir` whose trainings write into a temporary folder beside
    `out_dir` (the same file system as the model it makes), removed afterwards."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fitting-", dir=out_dir.parent) as scratch:
        yield Fitting(
            data_dir,
            load_items(data_dir),
            Path(scratch),
            settings=settings,
            evaluation=evaluation,
            compute=compute,
            callbacks=callbacks,
        )


__all__ = [
    "DEFAULT_CANDIDATES",
    "SelectionResult",
    "fit_family",
    "parse_candidates",
    "select_model",
]
