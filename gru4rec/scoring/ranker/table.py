"""The ranker's training table: every prediction of a split as candidate rows with their
labels (`ranker_table`), and the evaluation's metrics computed from a model's scores of
those rows (`table_metrics`), without ranking every item again."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gru4rec.network.data import SessionData
from gru4rec.scoring.contract import repeat_targets
from gru4rec.scoring.evaluate import MetricAccumulator, TieMode, scored_steps
from gru4rec.scoring.ranker.features import (
    FEATURES,
    CandidateRows,
    FeatureBuilder,
    RankerParts,
    row_chunks,
)


@dataclass(frozen=True, eq=False)
class RankerTable:
    """Every prediction of a split as candidate rows: what the ranker learns and is scored on.

    features (N, F) float32, labels (N,) int8: 1 for the target; group_sizes (G,): the
    candidates of each prediction, in order; per prediction (G,): its session, whether the
    target repeats an item of the session, and `outside` (the target's rank when it is not
    a candidate, by the tie mode: after every candidate, in GRU4Rec's order; 0 when it is).
    """

    features: np.ndarray
    labels: np.ndarray
    group_sizes: np.ndarray
    sessions: np.ndarray
    repeat: np.ndarray
    outside: np.ndarray

    @property
    def recall(self) -> float:
        """The share of predictions whose target is a candidate."""
        return float((self.outside == 0).mean()) if len(self.outside) else 0.0


def ranker_table(
    parts: RankerParts,
    data: SessionData,
    *,
    ties: TieMode = "conservative",
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> RankerTable:
    """The candidate rows of every prediction of `data` (the protocol of
    `gru4rec.scoring.evaluate`), with exact GRU4Rec candidates."""
    builder = FeatureBuilder(parts)
    features, labels, sizes, sessions, repeats, outside = [], [], [], [], [], []
    n_done = 0
    for batch, targets, batch_sessions in scored_steps(parts.gru, data, batch_size):
        targets = targets.cpu()
        for first, part in row_chunks(batch, parts.gru.n_items):
            rows_targets = targets[first : first + part.history.shape[0]]
            candidates = builder.build(part, dense_gru=True)
            is_target = candidates.items == rows_targets[candidates.rows]
            features.append(candidates.features)
            labels.append(is_target.numpy().astype(np.int8))
            sizes.append(candidates.counts.numpy())
            sessions.append(batch_sessions[first : first + len(rows_targets)])
            repeats.append(repeat_targets(part.history.cpu(), rows_targets).numpy())
            outside.append(_outside_ranks(candidates, rows_targets, is_target, ties))
        n_done += len(targets)
        if progress is not None:
            progress(n_done)
    return RankerTable(
        np.concatenate(features) if features else np.zeros((0, len(FEATURES)), np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.int8),
        np.concatenate(sizes) if sizes else np.zeros(0, np.int64),
        np.concatenate(sessions) if sessions else np.zeros(0, np.int64),
        np.concatenate(repeats) if repeats else np.zeros(0, bool),
        np.concatenate(outside) if outside else np.zeros(0, np.float64),
    )


def _outside_ranks(
    candidates: CandidateRows, targets: Tensor, is_target: Tensor, ties: TieMode
) -> np.ndarray:
    """(B,) the rank of each target that is not a candidate (0 where it is one): after the
    row's candidates, by GRU4Rec's score among the other items."""
    gru = candidates.gru_dense
    assert gru is not None
    n_rows = gru.shape[0]
    inside = torch.zeros(n_rows, dtype=torch.bool)
    inside[candidates.rows[is_target]] = True
    outside_scores = gru.clone()
    outside_scores[candidates.rows, candidates.items] = math.inf  # ranked apart, first
    target_score = gru[torch.arange(n_rows), targets].unsqueeze(1)
    above = (outside_scores > target_score).sum(dim=1) - candidates.counts
    at_or_above = (outside_scores >= target_score).sum(dim=1) - candidates.counts
    rank = {
        "standard": above.double() + 1,
        "conservative": at_or_above.double(),
        "median": (above.double() + 1 + at_or_above.double()) / 2,
    }[ties]
    return torch.where(inside, 0.0, rank + candidates.counts.double()).numpy()


def table_metrics(
    table: RankerTable,
    predicted: np.ndarray,
    *,
    cutoffs: Sequence[int],
    ties: TieMode,
    n_items: int,
) -> dict[str, Any]:
    """The metrics of `gru4rec.scoring.evaluate` (without coverage) from the ranker's
    scores of every candidate row: a target among the candidates is ranked by the
    ranker, one outside keeps its `outside` rank."""
    ends = np.cumsum(table.group_sizes)
    starts = ends - table.group_sizes
    group_of_row = np.repeat(np.arange(len(table.group_sizes)), table.group_sizes)
    target_rows = np.flatnonzero(table.labels == 1)
    target_score = np.full(len(table.group_sizes), np.nan)
    target_score[group_of_row[target_rows]] = predicted[target_rows]
    row_target = target_score[group_of_row]
    above = np.bincount(group_of_row, weights=predicted > row_target, minlength=len(starts))
    at_or_above = np.bincount(group_of_row, weights=predicted >= row_target, minlength=len(starts))
    inside = {
        "standard": above + 1,
        "conservative": at_or_above,
        "median": (above + 1 + at_or_above) / 2,
    }[ties]
    ranks = np.where(table.outside > 0, table.outside, inside)
    accumulator = MetricAccumulator(cutoffs, ties, n_items, coverage=False)
    accumulator.update_ranks(
        torch.from_numpy(ranks.astype(np.float64)), torch.from_numpy(table.repeat)
    )
    return accumulator.result()
