"""Full-ranking, event-by-event evaluation; the protocol (cutoffs, tie mode) is in the signature.

Every event after the first of a test session is a prediction: the session's items are
fed one by one from a zero hidden state, and the true next item is ranked against ALL
items (never sampled negatives, which inflate accuracy). Ties are counted by an explicit
mode that the result reports:
    standard     rank = 1 + #(score > target score)
    conservative rank = #(score >= target score)   (the target counts itself)
    median       the average of the two

Every metric is also reported on two disjoint groups of events: `repeat_*` where the
target already occurs earlier in its session, `new_*` where it does not (with
`n_repeat_events` and `n_new_events`): a model can be strong on one and weak on the other.

Any model family is evaluated through the scoring contract (`gru4rec.scoring.contract`).

Example:
    >>> metrics = evaluate(model, test_data, cutoffs=(5, 20), ties="conservative")
    >>> metrics["recall@20"], metrics["mrr@20"], metrics["repeat_recall@20"]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import torch
from torch import Tensor

from gru4rec.errors import ConfigError, Gru4RecError, InputDataError
from gru4rec.network.batching import session_parallel_steps
from gru4rec.network.model import GRU4Rec
from gru4rec.options import CUTOFFS, TieMode
from gru4rec.scoring.contract import SessionBatch, SessionCursor, SessionScorer, repeat_targets
from gru4rec.scoring.neural import as_scorer

if TYPE_CHECKING:
    from gru4rec.network.data import SessionData

TIE_MODES: tuple[str, ...] = get_args(TieMode)
_CPU_COLUMN_CHUNK = 1024


class NaNScoresError(Gru4RecError):
    """The model scored some items NaN, so no rank can be trusted."""


def target_ranks(scores: Tensor, targets: Tensor, ties: TieMode) -> Tensor:
    """Rank of each row's target among all of the row's items (1 = best).

    Args:
        scores: (B, N) scores of every item.
        targets: (B,) int64 item index of each row's target.
        ties: how items scoring exactly the target's score count (see the module doc).

    Returns:
        (B,) float64 ranks; `median` can give halves.

    Raises:
        NaNScoresError: any score is NaN (a NaN compares false and would rank silently).
    """
    _check_ties(ties)
    has_nan = torch.isnan(scores.amax(dim=1))  # (B,); a max over a NaN is NaN
    if has_nan.any():
        raise NaNScoresError(
            f"{int(has_nan.sum())} of {scores.shape[0]} rows of scores contain NaN; the "
            "model's weights or inputs are broken (a diverged training run?). Retrain with "
            "a lower learning rate, or check the checkpoint."
        )
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    if ties == "standard":
        return (count_per_row(scores, target_scores, torch.gt) + 1).to(torch.float64)
    n_at_or_above = count_per_row(scores, target_scores, torch.ge)  # the target included
    if ties == "conservative":
        return n_at_or_above.to(torch.float64)
    n_above = count_per_row(scores, target_scores, torch.gt)
    return (n_above + 1 + n_at_or_above).to(torch.float64) / 2.0


def count_per_row(
    scores: Tensor, thresholds: Tensor, compare: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """(B,) int64 number of items per row with `compare(score, threshold)` true."""
    # On CPU, a (B, 1024) mask stays in cache: counting a block of columns at a time is
    # several times faster than summing one (B, n_items) mask.
    chunk = _CPU_COLUMN_CHUNK if scores.device.type == "cpu" else scores.shape[1]
    counts = torch.zeros(scores.shape[0], dtype=torch.int64, device=scores.device)
    for start in range(0, scores.shape[1], chunk):
        block = scores[:, start : start + chunk]
        counts += compare(block, thresholds).sum(dim=1, dtype=torch.int32)
    return counts


GROUPS = ("", "repeat_", "new_")  # all events; target seen earlier in the session; not seen


class MetricAccumulator:
    """Ranking metrics summed batch by batch (score matrices are not kept).

    Args:
        cutoffs: list lengths k, e.g. (1, 5, 10, 20).
        ties: tie mode of the ranks.
        n_items: number of items scored (the width of every score matrix).
        item_support: (n_items,) training support of each item for popularity@k, or None
            to leave popularity out.
        coverage: whether to compute coverage@k and popularity@k (a top-k per row; model
            selection, which compares many scorers, turns it off).

    Per prediction event with target rank r, at each cutoff k: recall = [r <= k],
    MRR = 1/r if r <= k, NDCG = 1/log2(r + 1) if r <= k; averaged over events, and over
    the repeat and new events separately when `update` is told which are which.
    coverage@k is the fraction of all items in at least one top-k list; popularity@k the
    mean of support / max support over all top-k recommendations.
    """

    def __init__(
        self,
        cutoffs: Sequence[int],
        ties: TieMode,
        n_items: int,
        item_support: np.ndarray | None = None,
        *,
        coverage: bool = True,
    ) -> None:
        _check_ties(ties)
        if not cutoffs or any(int(k) != k or k < 1 for k in cutoffs):
            raise ConfigError(f"cutoffs must be positive integers, got {list(cutoffs)}")
        if n_items < 1:
            raise ConfigError(f"n_items must be >= 1, got {n_items}")
        self.cutoffs = sorted({int(k) for k in cutoffs})
        self.ties: TieMode = ties
        self.n_items = n_items
        self.coverage = coverage
        self.counts = dict.fromkeys(GROUPS, 0)
        self._popularity: Tensor | None = None  # (n_items,) support / max support
        if item_support is not None and coverage:
            self._popularity = _normalised_support(item_support, n_items)
        # Python floats in float64: a sum over millions of events must not lose the tail.
        self._sums = {
            f"{group}{m}@{k}": 0.0
            for group in GROUPS
            for m in ("recall", "mrr", "ndcg")
            for k in self.cutoffs
        }
        self._popularity_sums = dict.fromkeys(self.cutoffs, 0.0)
        self._covered = {k: torch.zeros(n_items, dtype=torch.bool) for k in self.cutoffs}

    @property
    def n_events(self) -> int:
        return self.counts[""]

    def update(self, scores: Tensor, targets: Tensor, repeat: Tensor | None = None) -> None:
        """Add one batch: `scores` (B, n_items), `targets` (B,) int64 item indices, and
        `repeat` (B,) bool, whether each target already occurs earlier in its session."""
        if scores.ndim != 2 or scores.shape[1] != self.n_items:
            raise ValueError(f"scores must be (B, {self.n_items}), got {tuple(scores.shape)}")
        if targets.shape != (scores.shape[0],):
            raise ValueError(f"targets must be ({scores.shape[0]},), got {tuple(targets.shape)}")
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.n_items):
            raise InputDataError(
                f"target item indices must lie in 0..{self.n_items - 1}; unknown items must be "
                "dropped before evaluation (gru4rec.network.data.load_split does it)."
            )
        self.update_ranks(target_ranks(scores, targets, self.ties), repeat)
        if self.coverage:
            self._update_top_k(scores)

    def update_ranks(self, ranks: Tensor, repeat: Tensor | None = None) -> None:
        """Add one batch of target ranks (B,) float64 (coverage is not updated)."""
        masks: dict[str, Tensor | None] = {"": None}
        if repeat is not None:
            masks.update({"repeat_": repeat, "new_": ~repeat})
        for k in self.cutoffs:
            hit = ranks <= k
            values = {
                "recall": hit.to(torch.float64),
                "mrr": torch.where(hit, 1.0 / ranks, 0.0),
                "ndcg": torch.where(hit, 1.0 / torch.log2(ranks + 1.0), 0.0),
            }
            for group, mask in masks.items():
                for metric, value in values.items():
                    chosen = value if mask is None else value[mask]
                    self._sums[f"{group}{metric}@{k}"] += chosen.sum().item()
        for group, mask in masks.items():
            self.counts[group] += int(ranks.shape[0] if mask is None else mask.sum())

    def _update_top_k(self, scores: Tensor) -> None:
        # Which items get recommended; ties at the k-th place are broken by topk's order.
        top_k = torch.topk(scores, min(self.cutoffs[-1], self.n_items), dim=1).indices.cpu()
        for k in self.cutoffs:
            recommended = top_k[:, :k]  # (B, min(k, n_items))
            self._covered[k][recommended.reshape(-1)] = True
            if self._popularity is not None:
                self._popularity_sums[k] += self._popularity[recommended].sum().item()

    def result(self) -> dict[str, Any]:
        """Averages over all events so far: `recall@k`, `mrr@k`, `ndcg@k`, `coverage@k`,
        `popularity@k` (when supports were given) as floats, the same over repeat and new
        events (`repeat_recall@k`, `new_mrr@k`, ...; absent for a group with no event),
        plus `n_events`, `n_repeat_events`, `n_new_events`, `ties`, `cutoffs`.

        Raises:
            InputDataError: no event was added (no test session has two or more events).
        """
        if self.n_events == 0:
            raise InputDataError(
                "nothing to evaluate: there are no prediction events (every test session "
                "has fewer than 2 events after dropping items unknown to the model). "
                "Check that the test split and the model's item map match."
            )
        metrics: dict[str, Any] = {}
        for name, total in self._sums.items():
            group = next(g for g in reversed(GROUPS) if name.startswith(g))
            if self.counts[group]:
                metrics[name] = total / self.counts[group]
        for k in self.cutoffs if self.coverage else ():
            metrics[f"coverage@{k}"] = self._covered[k].sum().item() / self.n_items
            if self._popularity is not None:
                n_recommended = self.n_events * min(k, self.n_items)
                metrics[f"popularity@{k}"] = self._popularity_sums[k] / n_recommended
        metrics.update(
            n_events=self.n_events,
            n_repeat_events=self.counts["repeat_"],
            n_new_events=self.counts["new_"],
            ties=self.ties,
            cutoffs=list(self.cutoffs),
        )
        return metrics


def evaluate(
    model: SessionScorer | GRU4Rec,
    data: SessionData,
    *,
    cutoffs: Sequence[int] = CUTOFFS,
    ties: TieMode = "conservative",
    batch_size: int = 512,
    item_support: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Rank every next item of every test session against all items; see `MetricAccumulator`.

    Sessions run in parallel slots as in training (any batch size works, including more
    slots than sessions); each slot's state is emptied when it starts a session.

    Args:
        model: any `SessionScorer`, or a GRU4Rec network (scored in eval mode, its mode
            restored afterwards); it runs where its tensors live.
        data: test sessions, items already mapped to the model's indices.
        cutoffs, ties: the protocol; reported back in the result.
        batch_size: session slots scored together (memory: batch_size x n_items scores).
        item_support: (n_items,) training support per item, for popularity@k.
        progress: called with the number of events evaluated so far after each batch.

    Returns:
        The dict of `MetricAccumulator.result`.
    """
    scorer = as_scorer(model)
    accumulator = MetricAccumulator(cutoffs, ties, scorer.n_items, item_support)
    for batch, targets, _sessions in scored_steps(scorer, data, batch_size):
        accumulator.update(scorer.score(batch), targets, repeat_targets(batch.history, targets))
        if progress is not None:
            progress(accumulator.n_events)
    return accumulator.result()


def scored_steps(
    scorer: SessionScorer, data: SessionData, batch_size: int
) -> Iterator[tuple[SessionBatch, Tensor, np.ndarray]]:
    """Every prediction of the protocol: (prefixes, (B,) int64 targets, (B,) int64 each
    row's session in `data`) step by step, under inference mode, with networks in eval mode
    (restored afterwards)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    networks = scorer.networks()
    modes = [network.training for network in networks]
    for network in networks:
        network.train(False)
    try:
        with torch.inference_mode():
            cursor = SessionCursor(scorer)
            for step in session_parallel_steps(data, batch_size, with_sessions=True):
                batch = cursor.step(step.inputs, step.keep, step.reset)
                assert step.sessions is not None
                yield batch, torch.as_tensor(step.targets, device=scorer.device), step.sessions
    finally:
        for network, mode in zip(networks, modes, strict=True):
            network.train(mode)


def _normalised_support(item_support: np.ndarray, n_items: int) -> Tensor:
    support = torch.as_tensor(np.asarray(item_support, dtype=np.float64))
    if support.shape != (n_items,):
        raise ValueError(f"item_support must be ({n_items},), got {tuple(support.shape)}")
    top = support.max().item()
    if not top > 0 or not math.isfinite(top) or (support < 0).any():
        raise InputDataError("item_support must be finite, >= 0, and positive for some item")
    return support / top


def _check_ties(ties: str) -> None:
    if ties not in TIE_MODES:
        raise ConfigError(f"unknown tie mode {ties!r}; use one of {', '.join(TIE_MODES)}")
