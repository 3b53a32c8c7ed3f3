"""Hybrids: GRU4Rec's next-item distribution mixed with the session's own items and with
session-kNN votes, the mixing weights chosen on a validation split.

    p(i) = (1 - repeat - knn) * softmax(GRU4Rec scores)(i)
           + repeat * S(i) + knn * K(i)

S is the distribution of the session's own items, an item k events back weighing
decay**k (decay 1: counts / length, the "session popularity" of S-POP); K is a kNN
baseline's scores (V-SKNN by default) divided by their row sum. Each weight runs from 0 up
to and including 1, so the mixture holds its parts: GRU4Rec alone (repeat = knn = 0), the
kNN baseline alone (knn = 1), and "the session's items first, by count, then GRU4Rec"
(repeat close to 1), the S-POP order with GRU4Rec instead of popularity after the session. Plain GRU4Rec cannot
copy an item of the session directly; repeat consumption is common (a third of
YOOCHOOSE 100k's test targets occur earlier in their session, a fifth of DIGINETICA's),
and S gives that mass explicitly, as the copy part of pointer-generator networks or
RepeatNet's repeat mode do. Scores are log p, so items outside the session with no kNN
vote keep exactly GRU4Rec's order; the score is not an inner product, so retrieval scores
all items (no FAISS index).

`choose_weights` searches the weights on a validation split over the whole simplex (every
repeat and kNN weight of the grid together, then the decays of the best few, then the grid
neighbours of the best). The expensive parts (GRU4Rec's scores, the kNN votes) are computed
in one pass over the split and kept, sparse, for all three stages; a point's ranks are
counted exactly from the few items it changes (`evaluate_weights`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from gru4rec.errors import ConfigError
from gru4rec.network.data import SessionData
from gru4rec.options import with_metric
from gru4rec.scoring.baselines import Baseline
from gru4rec.scoring.contract import SessionBatch, SessionScorer, repeat_targets
from gru4rec.scoring.evaluate import MetricAccumulator, TieMode, scored_steps
from gru4rec.scoring.neural import GRU4RecScorer

logger = logging.getLogger(__name__)

# Mixing weights searched by `choose_weights`. The best repeat weight differs by orders of
# magnitude between logs (0.001 on DIGINETICA, 0.1 on YOOCHOOSE 100k); on logs where most
# targets repeat, a peaked GRU4Rec needs 0.99 and more for every session item to pass its
# top items. The grid runs to 1 at both ends (a part alone).
MASS_GRID = (
    0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5,
    0.7, 0.9, 0.97, 0.99, 0.999, 0.9999, 1.0,
)  # fmt: skip
DECAY_GRID = (1.0, 0.8, 0.6, 0.4, 0.2)
N_DECAY_SEEDS = 5  # weightings of the first stage whose decays are all tried
_SUM_TOLERANCE = 1e-9  # repeat + knn may pass 1 by rounding (0.03 + 0.97)


@dataclass(frozen=True)
class MixtureWeights:
    """How much probability mass goes where (GRU4Rec keeps 1 - repeat - knn, which may be 0)."""

    repeat: float = 0.0  # mass on the session's own items
    decay: float = 1.0  # an item k events back weighs decay**k among the session's items
    knn: float = 0.0  # mass on the kNN component's normalised votes

    def __post_init__(self) -> None:
        if not (
            self.repeat >= 0 and self.knn >= 0 and self.repeat + self.knn <= 1 + _SUM_TOLERANCE
        ):
            raise ConfigError(
                f"mixture weights need repeat >= 0, knn >= 0 and repeat + knn <= 1; got "
                f"repeat={self.repeat}, knn={self.knn}."
            )
        if not 0 < self.decay <= 1:
            raise ConfigError(f"decay must be in (0, 1]; got {self.decay}.")

    @property
    def gru(self) -> float:
        return max(0.0, 1.0 - self.repeat - self.knn)

    @property
    def log_gru(self) -> float:
        """log of GRU4Rec's weight (-inf at 0)."""
        return math.log(self.gru) if self.gru > 0 else -math.inf

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class HybridScorer(SessionScorer):
    """GRU4Rec mixed with the session's items and a kNN baseline (see the module doc)."""

    family: ClassVar[str] = "hybrid"

    def __init__(
        self, gru: GRU4RecScorer, weights: MixtureWeights, knn: Baseline | None = None
    ) -> None:
        if weights.knn > 0 and knn is None:
            raise ConfigError("a knn weight above 0 needs a kNN component")
        if knn is not None and knn.n_items != gru.n_items:
            raise ConfigError(f"the kNN component ranks {knn.n_items} items, GRU4Rec {gru.n_items}")
        self.gru, self.weights, self.knn = gru, weights, knn
        self.device = gru.device

    @property
    def n_items(self) -> int:
        return self.gru.n_items

    def networks(self) -> list[torch.nn.Module]:
        return self.gru.networks()

    def init_state(self, batch_size: int) -> list[Tensor]:
        return self.gru.init_state(batch_size)

    def advance(self, state: list[Tensor], items: Tensor) -> list[Tensor]:
        return self.gru.advance(state, items)

    def parts(self, batch: SessionBatch, decay: float) -> MixtureParts:
        """The components of the mixture for a batch (GRU4Rec scores, S, K)."""
        scores = self.gru.score(batch).float()  # (B, N)
        knn = None
        if self.knn is not None:
            knn = _row_normalised(self.knn.score(batch).to(scores.device).float())
        return MixtureParts(
            scores=scores,
            log_normaliser=torch.logsumexp(scores, dim=1, keepdim=True),
            session=session_distribution(batch.history, self.n_items, decay),
            knn=knn,
        )

    def score(self, batch: SessionBatch) -> Tensor:
        """(B, n_items) log-probabilities of the mixture."""
        parts = self.parts(batch, self.weights.decay)
        log_softmax = parts.scores - parts.log_normaliser
        return mixture_log_prob(self.weights, log_softmax, parts.session, parts.knn)


def mixture_log_prob(
    weights: MixtureWeights, gru_log_softmax: Tensor, session: Tensor, knn: Tensor | None
) -> Tensor:
    """log p of the mixture (the module doc's formula), elementwise over any shape: dense
    (B, n_items) scores or the (P,) values of chosen (row, item) pairs."""
    extra = weights.repeat * session
    if knn is not None and weights.knn > 0:
        extra = extra + weights.knn * knn
    # log 0 = -inf adds nothing; GRU4Rec's weight 0 gives -inf to its part likewise.
    return torch.logaddexp(gru_log_softmax + weights.log_gru, torch.log(extra))


@dataclass(frozen=True, eq=False)
class MixtureParts:
    """scores: (B, N) GRU4Rec scores; log_normaliser: (B, 1) their logsumexp;
    session: (B, N) S; knn: (B, N) K or None."""

    scores: Tensor
    log_normaliser: Tensor
    session: Tensor
    knn: Tensor | None


def session_distribution(history: Tensor, n_items: int, decay: float) -> Tensor:
    """(B, n_items) float32: each row's items weighted decay**(events back), summing to 1
    (all zeros for an empty row). history: (B, W) item index + 1, left-aligned, 0 = empty."""
    lengths = (history != 0).sum(dim=1, keepdim=True)  # (B, 1)
    back = lengths - 1 - torch.arange(history.shape[1], device=history.device)  # (B, W)
    filled = history != 0
    weights = torch.where(filled, decay ** back.clamp(min=0).float(), 0.0)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-30)
    out = torch.zeros(history.shape[0], n_items, dtype=torch.float32, device=history.device)
    return out.scatter_add_(1, (history - 1).clamp(min=0), weights)


def _row_normalised(scores: Tensor) -> Tensor:
    """Non-negative scores divided by their row sum (rows summing to 0 stay 0)."""
    scores = scores.clamp(min=0)
    return scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-30)


def simplex_grid(with_knn: bool) -> list[MixtureWeights]:
    """Stage one of the search: every pair of repeat and kNN weights of the grid whose sum
    is at most 1 (kNN 0 without a kNN component), decay 1."""
    knn_grid = MASS_GRID if with_knn else (0.0,)
    return [
        MixtureWeights(repeat=r, knn=k)
        for r in MASS_GRID
        for k in knn_grid
        if r + k <= 1 + _SUM_TOLERANCE
    ]


def decay_grid(seeds: Sequence[MixtureWeights]) -> list[MixtureWeights]:
    """Stage two: every decay for each seed that puts mass on the session's items."""
    return [replace(seed, decay=d) for seed in seeds if seed.repeat > 0 for d in DECAY_GRID]


def neighbour_grid(best: MixtureWeights) -> list[MixtureWeights]:
    """Stage three: the grid neighbours of the best weights, each weight and decay moved by
    one grid step, alone and together."""
    repeats = sorted({best.repeat, *_neighbours(MASS_GRID, best.repeat)})
    knns = sorted({best.knn, *_neighbours(MASS_GRID, best.knn)}) if best.knn > 0 else [0.0]
    decays = sorted({best.decay, *_neighbours(DECAY_GRID, best.decay)})
    return [
        MixtureWeights(repeat=r, decay=d, knn=k)
        for r in repeats
        for d in decays
        for k in knns
        if r + k <= 1 + _SUM_TOLERANCE and (r > 0 or d == 1.0)  # no decay without repeat mass
    ]


def _neighbours(grid: Sequence[float], value: float) -> list[float]:
    index = grid.index(value) if value in grid else 0
    return [grid[i] for i in (index - 1, index + 1) if 0 <= i < len(grid)]


def evaluate_weights(
    scorer: HybridScorer,
    data: SessionData,
    candidates: Sequence[MixtureWeights],
    *,
    cutoffs: Sequence[int] = (20,),
    ties: TieMode = "conservative",
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """The metrics at `cutoffs` (as `evaluate`, without coverage) of the hybrid with each
    candidate's weights, from one pass over `data`.

    The mixture leaves most items untouched (outside the session, no kNN vote): they keep
    GRU4Rec's score plus a constant, so their order is GRU4Rec's. Per batch, the
    max(cutoffs) + 1 best untouched items by GRU4Rec's score are found once; per candidate,
    the items beating the target are those of that short list above a threshold, plus the
    touched items beating it, compared one by one. Ranks are exact up to max(cutoffs) + 1
    (beyond, a lower bound that is still past every cutoff, so every metric is exact).
    """
    if not candidates:
        return []
    passes = _SparsePasses(scorer, data, {c.decay for c in candidates}, cutoffs, ties, batch_size)
    return passes.evaluate(candidates, progress)


# The search's stages replay the first pass's touched pairs from memory (about 37 bytes a
# pair at five decays: 0.45 GB for DIGINETICA's validation split); a split with more
# pairs than this is scored again for each stage instead.
MAX_KEPT_PAIRS = 50_000_000


@dataclass(frozen=True, eq=False)
class _SparseBatch:
    """One batch of a pass: the touched pairs' rows (P,), which targets repeat (B,), and
    the sparse parts for each decay."""

    rows: Tensor
    repeat: Tensor
    by_decay: dict[float, _SparseParts]


class _SparsePasses:
    """The sparse parts of every batch of `data`, for every decay in `decays`: the expensive
    components (GRU4Rec's scores, the kNN votes) are computed on the first pass and kept
    for the next ones while they hold at most `max_kept_pairs` touched pairs."""

    def __init__(
        self,
        scorer: HybridScorer,
        data: SessionData,
        decays: Iterable[float],
        cutoffs: Sequence[int],
        ties: TieMode,
        batch_size: int,
        max_kept_pairs: int = MAX_KEPT_PAIRS,
    ) -> None:
        self.scorer, self.data, self.batch_size = scorer, data, batch_size
        self.max_kept_pairs = max_kept_pairs
        self.cutoffs, self.ties = cutoffs, ties
        self.decays = sorted(set(decays))
        self._kept: list[_SparseBatch] | None = None

    def __iter__(self) -> Iterator[_SparseBatch]:
        if self._kept is not None:
            yield from self._kept
            return
        kept: list[_SparseBatch] | None = []
        n_pairs = 0
        for sparse in self._compute():
            n_pairs += len(sparse.rows)
            if kept is not None and n_pairs > self.max_kept_pairs:
                kept = None  # too many to keep: every pass computes them again
            if kept is not None:
                kept.append(sparse)
            yield sparse
        self._kept = kept

    def evaluate(
        self,
        candidates: Sequence[MixtureWeights],
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Each candidate's metrics (see evaluate_weights)."""
        missing = {c.decay for c in candidates} - set(self.decays)
        if missing:
            raise ValueError(f"decays {sorted(missing)} were not computed: {self.decays}")
        accumulators = [
            MetricAccumulator(self.cutoffs, self.ties, self.scorer.n_items, coverage=False)
            for _ in candidates
        ]
        n_done = 0
        for sparse in self:
            for weights, accumulator in zip(candidates, accumulators, strict=True):
                ranks = _mixture_ranks(
                    sparse.by_decay[weights.decay], weights, sparse.rows, self.ties
                )
                accumulator.update_ranks(ranks, sparse.repeat)
            n_done += len(sparse.repeat)
            if progress is not None:
                progress(n_done)
        return [accumulator.result() for accumulator in accumulators]

    def _compute(self) -> Iterator[_SparseBatch]:
        scorer = self.scorer
        depth = min(max(self.cutoffs) + 1, scorer.n_items)
        for batch, targets, _sessions in scored_steps(scorer, self.data, self.batch_size):
            # The touched pairs come from the largest decay: a small one underflows to 0
            # for items far back in a long session, which must still count as touched.
            parts = scorer.parts(batch, self.decays[-1])
            touched = parts.session > 0
            if parts.knn is not None:
                touched |= parts.knn > 0
            rows, columns = touched.nonzero(as_tuple=True)
            batch_rows = torch.arange(len(targets), device=targets.device)
            untouched_best = torch.topk(
                parts.scores.masked_fill(touched, -math.inf), depth, dim=1
            ).values  # (B, depth), best first; -inf where a row has fewer untouched items
            # Only S depends on the decay: the largest decay's parts serve the others.
            base = _SparseParts.gather(parts, rows, columns, batch_rows, targets, untouched_best)
            by_decay = {self.decays[-1]: base}
            for decay in self.decays[:-1]:
                session = session_distribution(batch.history, scorer.n_items, decay)
                by_decay[decay] = replace(
                    base,
                    session=session[rows, columns],
                    target_session=session[batch_rows, targets],
                )
            yield _SparseBatch(rows, repeat_targets(batch.history, targets), by_decay)


@dataclass(frozen=True, eq=False)
class _SparseParts:
    """What a candidate's ranks need, at the touched (row, item) pairs (P,) and at each
    row's target (B,): GRU4Rec's log-softmax, S and K; and the best untouched GRU4Rec
    scores (B, depth) with the row's normaliser (B,)."""

    log_softmax: Tensor
    session: Tensor
    knn: Tensor | None
    is_target: Tensor  # (P,) bool: the pair is its row's target
    target_log_softmax: Tensor
    target_session: Tensor
    target_knn: Tensor | None
    target_touched: Tensor  # (B,) bool
    target_score: Tensor  # (B,) GRU4Rec's raw score of the target
    log_normaliser: Tensor  # (B,)
    untouched_best: Tensor  # (B, depth)
    n_untouched: Tensor  # (B,) int64 items neither in the session nor voted for

    @classmethod
    def gather(
        cls,
        parts: MixtureParts,
        rows: Tensor,
        columns: Tensor,
        batch_rows: Tensor,
        targets: Tensor,
        untouched_best: Tensor,
    ) -> _SparseParts:
        session = parts.session
        lse = parts.log_normaliser.squeeze(1)
        target_session = session[batch_rows, targets]
        target_knn = None if parts.knn is None else parts.knn[batch_rows, targets]
        target_touched = target_session > 0
        if target_knn is not None:
            target_touched |= target_knn > 0
        target_score = parts.scores[batch_rows, targets]
        return cls(
            log_softmax=parts.scores[rows, columns] - lse[rows],
            session=session[rows, columns],
            knn=None if parts.knn is None else parts.knn[rows, columns],
            is_target=columns == targets[rows],
            target_log_softmax=target_score - lse,
            target_session=target_session,
            target_knn=target_knn,
            target_touched=target_touched,
            target_score=target_score,
            log_normaliser=lse,
            untouched_best=untouched_best,
            n_untouched=parts.scores.shape[1] - torch.bincount(rows, minlength=len(targets)),
        )


def _mixture_ranks(
    parts: _SparseParts, weights: MixtureWeights, rows: Tensor, ties: TieMode
) -> Tensor:
    """(B,) float64 ranks of the targets under the mixture `weights` (see evaluate_weights)."""
    log_gru_weight = weights.log_gru
    target_mixed = mixture_log_prob(
        weights, parts.target_log_softmax, parts.target_session, parts.target_knn
    )
    touched_mixed = mixture_log_prob(weights, parts.log_softmax, parts.session, parts.knn)  # (P,)
    # An untouched item beats the target when its GRU4Rec score reaches this threshold;
    # an untouched target is its own threshold (exact, no rounding).
    threshold = torch.where(
        parts.target_touched,
        target_mixed - log_gru_weight + parts.log_normaliser,
        parts.target_score,
    )
    counts = []
    for compare in _comparisons(ties):
        if weights.gru > 0:
            untouched = compare(parts.untouched_best, threshold.unsqueeze(1)).sum(dim=1)
        else:  # every untouched item scores -inf: all of them tie with an untouched target
            at_minus_inf = compare(torch.full_like(target_mixed, -math.inf), target_mixed)
            untouched = at_minus_inf.to(torch.int64) * parts.n_untouched
        beats = compare(touched_mixed, target_mixed[rows])
        # The target against itself: computed twice, its mixed score may differ in the last
        # bit (vectorised differently), so the tie rule decides, not the rounding.
        beats = torch.where(parts.is_target, compare is torch.ge, beats).to(torch.int64)
        counts.append((untouched + torch.zeros_like(untouched).index_add_(0, rows, beats)).double())
    if ties == "standard":
        return counts[0] + 1.0
    if ties == "conservative":
        return counts[0]
    return (counts[0] + 1.0 + counts[1]) / 2.0  # median: (above + 1 + at_or_above) / 2


def _comparisons(ties: TieMode) -> list[Callable[[Tensor, Tensor], Tensor]]:
    if ties == "standard":
        return [torch.gt]
    if ties == "conservative":
        return [torch.ge]
    return [torch.gt, torch.ge]


@dataclass(frozen=True)
class WeightSearch:
    """What `choose_weights` found: the best weights and every candidate's metrics."""

    best: MixtureWeights
    metric: str
    trials: list[tuple[MixtureWeights, dict[str, Any]]]


def choose_weights(
    scorer: HybridScorer,
    data: SessionData,
    *,
    metric: str = "mrr@20",
    ties: TieMode = "conservative",
    batch_size: int = 512,
    max_kept_pairs: int = MAX_KEPT_PAIRS,
) -> WeightSearch:
    """Search the mixture weights on `data` (a validation split): stage one tries every
    repeat and kNN weight of the grid together (decay 1), stage two every decay of the best
    `N_DECAY_SEEDS` of stage one, stage three the grid neighbours of the best so far.
    Ties in the metric go to the earlier (simpler) candidate. Sets and returns the best
    weights. max_kept_pairs: the most touched pairs the stages replay from memory (above
    it, each stage computes them again)."""
    cutoffs = with_metric(metric)
    trials: list[tuple[MixtureWeights, dict[str, Any]]] = []
    # GRU4Rec's scores and the kNN votes of valid are computed once for the three stages.
    passes = _SparsePasses(scorer, data, DECAY_GRID, cutoffs, ties, batch_size, max_kept_pairs)

    def run(candidates: list[MixtureWeights]) -> list[MixtureWeights]:
        """Score the untried candidates; every trial so far, best first."""
        tried = {t[0] for t in trials}
        fresh = list(dict.fromkeys(c for c in candidates if c not in tried))
        results = passes.evaluate(fresh) if fresh else []
        trials.extend(zip(fresh, results, strict=True))
        order = sorted(range(len(trials)), key=lambda i: (-trials[i][1][metric], i))
        return [trials[i][0] for i in order]  # first of equals wins

    ranking = run(simplex_grid(with_knn=scorer.knn is not None))
    ranking = run(decay_grid(ranking[:N_DECAY_SEEDS]))
    best = run(neighbour_grid(ranking[0]))[0]
    logger.info("hybrid weights chosen on validation: %s (%s)", best, metric)
    scorer.weights = best
    return WeightSearch(best, metric, trials)


__all__ = [
    "HybridScorer",
    "MixtureWeights",
    "WeightSearch",
    "choose_weights",
    "evaluate_weights",
    "mixture_log_prob",
    "session_distribution",
]
