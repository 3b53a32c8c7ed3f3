"""Candidate sets: for each session prefix, the few hundred items a ranker then orders.

Every source answers for a batch of prefixes with a (B, n_items) bool mask of its items:

    gru4rec    the top `n_gru` items of GRU4Rec's query vector (through a FAISS index where
               one is given: flat, HNSW or IVF as `gru4rec index` builds it; else exactly)
    session    the session's own items (repeat consumption)
    vsknn      the top `n_knn` items of V-SKNN (session neighbours)
    iknn       the top `n_knn` items co-occurring with the last item (item-kNN)
    popular    the `n_popular` most popular items of training

The candidate set is their union. `candidate_recall` measures, on a split, the share of the
next items (the protocol's targets) that each source and the union hold: a ranker over the
set cannot find a target outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import Baseline
from gru4rec.scoring.contract import SessionBatch
from gru4rec.scoring.evaluate import scored_steps
from gru4rec.scoring.neural import GRU4RecScorer, query_vectors

SOURCES = ("gru4rec", "session", "vsknn", "iknn", "popular")


@dataclass(frozen=True)
class CandidateSizes:
    """How many items each source adds (the union is at most their sum)."""

    n_gru: int = 100
    n_knn: int = 50
    n_popular: int = 20


class CandidateSets:
    """The candidate sources of a trained GRU4Rec and fitted kNN baselines."""

    def __init__(
        self,
        gru: GRU4RecScorer,
        vsknn: Baseline,
        iknn: Baseline,
        support: np.ndarray,
        sizes: CandidateSizes | None = None,
        index: Any | None = None,
    ) -> None:
        """support: (n_items,) training support (popularity); sizes: how many items each
        source adds (None: the defaults); index: an `ItemIndex` over the GRU4Rec's item
        vectors (`gru4rec.serving.retrieval`), or None to take its top items exactly."""
        sizes = sizes or CandidateSizes()
        self.gru, self.vsknn, self.iknn, self.sizes, self.index = gru, vsknn, iknn, sizes, index
        self.n_items = gru.n_items
        top = np.argsort(-np.asarray(support, dtype=np.float64), kind="stable")[: sizes.n_popular]
        self.popular = torch.as_tensor(top, dtype=torch.int64)

    def masks(
        self,
        batch: SessionBatch,
        *,
        knn: dict[str, Tensor] | None = None,
        gru: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Each source's (B, n_items) bool mask for the prefixes of `batch`. knn: the
        `vsknn` and `iknn` scores and gru: GRU4Rec's (B, n_items) scores, where the caller
        has them already (else they are computed)."""
        rows = batch.history.shape[0]

        def top(indices: Tensor | np.ndarray) -> Tensor:
            found = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
            mask = torch.zeros(rows, self.n_items, dtype=torch.bool)
            valid = found >= 0  # an approximate index may return fewer
            row_of = torch.arange(rows).unsqueeze(1).expand_as(found)
            mask[row_of[valid], found[valid]] = True
            return mask

        n_gru = min(self.sizes.n_gru, self.n_items)
        if self.index is not None:
            _scores, found = self.index.search(query_vectors(self.gru.query_vectors(batch)), n_gru)
            gru = top(found)
        else:
            scores = self.gru.score(batch) if gru is None else gru
            gru = top(torch.topk(scores, n_gru, dim=1).indices.cpu())
        n_knn = min(self.sizes.n_knn, self.n_items)

        def _knn(name: str, baseline: Baseline) -> Tensor:
            return knn[name] if knn is not None else baseline.score(batch).cpu()

        session = torch.zeros(rows, self.n_items + 1, dtype=torch.bool)
        session[torch.arange(rows).unsqueeze(1), batch.history.cpu()] = True
        popular = torch.zeros(rows, self.n_items, dtype=torch.bool)
        popular[:, self.popular] = True
        return {
            "gru4rec": gru,
            "session": session[:, 1:],  # column 0 is the empty slot
            "vsknn": _top_scored(_knn("vsknn", self.vsknn), n_knn),
            "iknn": _top_scored(_knn("iknn", self.iknn), n_knn),
            "popular": popular,
        }


def _top_scored(scores: Tensor, n: int) -> Tensor:
    """The mask of each row's `n` best items among those with a positive score."""
    values, indices = torch.topk(scores, n, dim=1)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, indices, values > 0)
    return mask


def candidate_recall(
    sets: CandidateSets,
    data: SessionData,
    *,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """On `data` (a split), the share of targets in each source and in their union, and the
    union's mean size: `recall_<source>`, `recall`, `mean_size`."""
    hits = dict.fromkeys([*SOURCES, "union"], 0)
    size, events = 0, 0
    for batch, targets, _sessions in scored_steps(sets.gru, data, batch_size):
        masks = sets.masks(batch)
        union = torch.zeros_like(masks["popular"])
        rows = torch.arange(len(targets))
        cpu_targets = targets.cpu()
        for name, mask in masks.items():
            hits[name] += int(mask[rows, cpu_targets].sum())
            union |= mask
        hits["union"] += int(union[rows, cpu_targets].sum())
        size += int(union.sum())
        events += len(targets)
        if progress is not None:
            progress(events)
    result = {f"recall_{name}": hits[name] / max(events, 1) for name in SOURCES}
    return {**result, "recall": hits["union"] / max(events, 1), "mean_size": size / max(events, 1)}


__all__ = ["SOURCES", "CandidateSets", "CandidateSizes", "candidate_recall"]
