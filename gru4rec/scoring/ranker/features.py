"""The ranker's features: the fitted components they read (`RankerParts`), and for a batch
of prefixes the candidate items with one row of `FEATURES` each (`FeatureBuilder`).

Also the row blocks that keep the batch's (rows, n_items) matrices small, shared by the
scorer and the training table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import Baseline
from gru4rec.scoring.candidates import CandidateSets, CandidateSizes
from gru4rec.scoring.contract import SessionBatch
from gru4rec.scoring.hybrid import MixtureWeights, mixture_log_prob
from gru4rec.scoring.neural import GRU4RecScorer

FEATURES = (
    "gru_score",
    "gru_gap",
    "gru_logp",
    "gru_rank",
    "session_count",
    "session_share",
    "steps_since",
    "is_last",
    "session_decayed",
    "session_length",
    "session_distinct",
    "vsknn",
    "vsknn_rank",
    "sknn",
    "sknn_rank",
    "iknn",
    "iknn_rank",
    "pop",
    "pop_recent",
    "hybrid",
)
RECENT_SHARE = 0.05  # the last share of training sessions whose popularity is "recent"
# Rows of (B, n_items) matrices scored at once: about 64 MB of float32 per matrix.
_DENSE_FLOATS = 16 * 2**20


@dataclass(frozen=True)
class RankerParts:
    """The fitted components the features read (all on the same split)."""

    gru: GRU4RecScorer
    vsknn: Baseline
    sknn: Baseline
    iknn: Baseline
    support: np.ndarray  # (n_items,) training events per item
    recent_support: np.ndarray  # (n_items,) the same over the last RECENT_SHARE of sessions
    weights: MixtureWeights  # the hybrid's, for the mixture feature
    sizes: CandidateSizes = field(default_factory=CandidateSizes)

    @classmethod
    def fit(
        cls,
        gru: GRU4RecScorer,
        baselines: dict[str, Baseline],
        train: SessionData,
        weights: MixtureWeights,
        sizes: CandidateSizes | None = None,
    ) -> RankerParts:
        """The parts from a trained GRU4Rec, fitted `vsknn`, `sknn` and `iknn` baselines,
        the sessions they were fitted on, and the hybrid's weights."""
        support, recent = popularity(train, gru.n_items)
        return cls(
            gru,
            baselines["vsknn"],
            baselines["sknn"],
            baselines["iknn"],
            support,
            recent,
            weights,
            sizes or CandidateSizes(),
        )


def popularity(data: SessionData, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(support, recent support): events per item over all sessions and over the last
    RECENT_SHARE of them (sessions are stored in time order)."""
    support = np.bincount(data.item_idx, minlength=n_items)
    n_sessions = len(data.session_offsets) - 1
    first_recent = int(data.session_offsets[n_sessions - max(1, int(n_sessions * RECENT_SHARE))])
    recent = np.bincount(data.item_idx[first_recent:], minlength=n_items)
    return support, recent


@dataclass(frozen=True, eq=False)
class CandidateRows:
    """The candidates of a batch of prefixes: pair p is item `items[p]` for row `rows[p]`
    (sorted by row), described by `features[p]` (len(FEATURES) columns)."""

    rows: Tensor  # (P,) int64
    items: Tensor  # (P,) int64
    features: np.ndarray  # (P, F) float32
    counts: Tensor  # (B,) int64 candidates per row
    gru_dense: Tensor | None  # (B, n_items) GRU4Rec's scores, where they were computed


class FeatureBuilder:
    """Candidates and their features for batches of prefixes (see the package doc)."""

    def __init__(self, parts: RankerParts, index: Any | None = None) -> None:
        self.parts = parts
        self.sources = CandidateSets(
            parts.gru, parts.vsknn, parts.iknn, parts.support, parts.sizes, index=index
        )
        vectors = parts.gru.item_vectors()  # (N, D + 1): each item's vector, then its bias
        self._vectors = torch.from_numpy(vectors)
        self._log_pop = torch.from_numpy(np.log1p(parts.support).astype(np.float32))
        self._log_recent = torch.from_numpy(np.log1p(parts.recent_support).astype(np.float32))

    @property
    def n_items(self) -> int:
        return self.parts.gru.n_items

    @property
    def index(self) -> Any | None:
        return self.sources.index

    def build(self, batch: SessionBatch, *, dense_gru: bool = False) -> CandidateRows:
        """The candidate rows of `batch`; `dense_gru`: also keep GRU4Rec's (B, n_items)
        scores (computed anyway without an index)."""
        parts = self.parts
        knn = {
            "vsknn": parts.vsknn.score(batch).cpu().float(),
            "sknn": parts.sknn.score(batch).cpu().float(),
            "iknn": parts.iknn.score(batch).cpu().float(),
        }
        gru_dense = None
        if dense_gru or self.index is None:
            gru_dense = parts.gru.score(batch).float().cpu()
        rows, items = self._candidate_pairs(batch, knn, gru_dense)
        counts = torch.bincount(rows, minlength=batch.history.shape[0])
        columns = {
            **self._gru_columns(batch, rows, items, counts),
            **_session_columns(batch.history.cpu(), rows, items, parts.weights.decay),
            **_neighbour_columns(knn, rows, items, counts),
            "pop": self._log_pop[items],
            "pop_recent": self._log_recent[items],
        }
        # The mixture normalised over the candidates (GRU4Rec's log-probability among them).
        columns["hybrid"] = mixture_log_prob(
            parts.weights, columns["gru_logp"], columns["session_decayed"], columns["vsknn"]
        )
        features = torch.stack([columns[name].float() for name in FEATURES], dim=1)
        return CandidateRows(rows, items, features.numpy(), counts, gru_dense)

    def _candidate_pairs(
        self, batch: SessionBatch, knn: dict[str, Tensor], gru_dense: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """(rows, items) of every candidate of every row: the union of the candidate sets,
        row-major (sorted by row)."""
        masks = self.sources.masks(batch, knn=knn, gru=gru_dense)
        union = torch.zeros_like(masks["popular"])
        for mask in masks.values():
            union |= mask
        rows, items = union.nonzero(as_tuple=True)
        return rows, items

    def _gru_columns(
        self, batch: SessionBatch, rows: Tensor, items: Tensor, counts: Tensor
    ) -> dict[str, Tensor]:
        """GRU4Rec: q . v at the pairs (the index's score), normalised over the candidates."""
        n_rows = batch.history.shape[0]
        queries = torch.cat(
            [self.parts.gru.query_vectors(batch).float().cpu(), torch.ones(n_rows, 1)], dim=1
        )
        gru = (queries[rows] * self._vectors[items]).sum(dim=1)
        row_max = torch.full((n_rows,), -math.inf).scatter_reduce(0, rows, gru, "amax")
        row_lse = _row_logsumexp(rows, gru, row_max, n_rows)
        return {
            "gru_score": gru,
            "gru_gap": gru - row_max[rows],
            "gru_logp": gru - row_lse[rows],
            "gru_rank": _rank_in_rows(rows, gru, counts),
        }


def _session_columns(
    history: Tensor, rows: Tensor, items: Tensor, decay: float
) -> dict[str, Tensor]:
    """The session: occurrences, recency, the hybrid's decayed share (`history` (B, W) on
    the CPU, 0 for padding, item + 1 otherwise)."""
    lengths = (history != 0).sum(dim=1)
    width = history.shape[1]
    same = history[rows] == (items + 1).unsqueeze(1)  # (P, W)
    count = same.sum(dim=1)
    position = torch.arange(width).expand_as(same)
    last = torch.where(same, position, -1).amax(dim=1)
    back = (lengths.unsqueeze(1) - 1 - torch.arange(width)).clamp(min=0)  # (B, W)
    decayed = torch.where(history != 0, decay ** back.float(), 0.0)
    decayed = decayed / decayed.sum(dim=1, keepdim=True).clamp(min=1e-30)
    steps_since = (lengths[rows] - 1 - last).float()
    distinct = torch.tensor([len(set(row[row != 0].tolist())) for row in history])
    return {
        "session_count": count.float(),
        "session_share": count.float() / lengths[rows].clamp(min=1).float(),
        "steps_since": torch.where(count > 0, steps_since, math.nan),
        "is_last": (last == lengths[rows] - 1).float(),
        "session_decayed": (decayed[rows] * same).sum(dim=1),
        "session_length": lengths[rows].float(),
        "session_distinct": distinct[rows].float(),
    }


def _neighbour_columns(
    knn: dict[str, Tensor], rows: Tensor, items: Tensor, counts: Tensor
) -> dict[str, Tensor]:
    """Neighbours: each row's votes over their sum, and their rank among the candidates."""
    columns = {}
    for name, scores in knn.items():
        votes = scores.clamp(min=0)
        share = votes[rows, items] / votes.sum(dim=1).clamp(min=1e-30)[rows]
        columns[name] = share
        columns[f"{name}_rank"] = _rank_in_rows(rows, share, counts)
    return columns


def _row_logsumexp(rows: Tensor, values: Tensor, row_max: Tensor, n_rows: int) -> Tensor:
    shifted = torch.exp(values - row_max[rows])
    sums = torch.zeros(n_rows).index_add_(0, rows, shifted)
    return row_max + torch.log(sums.clamp(min=1e-30))


def _rank_in_rows(rows: Tensor, values: Tensor, counts: Tensor) -> Tensor:
    """(P,) float32 0-based rank of each pair's value within its row, best first (ties in
    pair order); `rows` sorted, `counts` the pairs per row."""
    order = torch.argsort(values, descending=True, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then by value
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(values)
    rank[order] = (torch.arange(len(values)) - starts[rows[order]]).float()
    return rank


def row_chunks(batch: SessionBatch, n_items: int) -> list[tuple[int, SessionBatch]]:
    """`batch` cut into row blocks whose (rows, n_items) matrices stay near _DENSE_FLOATS,
    each with its first row."""
    step = max(1, _DENSE_FLOATS // max(n_items, 1))
    n_rows = batch.history.shape[0]
    if n_rows <= step:
        return [(0, batch)]
    return [
        (i, SessionBatch(batch.history[i : i + step], [s[i : i + step] for s in batch.state]))
        for i in range(0, n_rows, step)
    ]
