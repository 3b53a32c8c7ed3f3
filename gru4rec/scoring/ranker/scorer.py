"""The ranker as a `SessionScorer`: the candidates of `gru4rec.scoring.ranker.features`
ordered by a trained LightGBM model, then the other items in GRU4Rec's order, either as a
dense (B, n_items) matrix or as the top k of the candidates alone."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gru4rec.errors import ConfigError
from gru4rec.scoring.contract import SessionBatch, SessionScorer
from gru4rec.scoring.ranker.features import (
    FEATURES,
    CandidateRows,
    FeatureBuilder,
    RankerParts,
    row_chunks,
)

if TYPE_CHECKING:
    import lightgbm


class RankerScorer(SessionScorer):
    """The candidates of `parts`, ordered by a trained LightGBM model (see the package doc).

    With an index (`use_index`), GRU4Rec's candidates come from it; `top_k` then orders the
    candidates alone, without scoring every item.
    """

    family: ClassVar[str] = "ranker"
    index_candidates: ClassVar[bool] = True

    def __init__(self, parts: RankerParts, booster: lightgbm.Booster, index: Any = None) -> None:
        names = tuple(booster.feature_name())
        if names != FEATURES:
            raise ConfigError(
                f"the ranker was trained on the features {names}, this version computes "
                f"{FEATURES}; train it again."
            )
        self.parts, self.booster = parts, booster
        self.builder = FeatureBuilder(parts, index)
        self.device = parts.gru.device

    @property
    def n_items(self) -> int:
        return self.parts.gru.n_items

    def use_index(self, index: Any) -> None:
        """Take GRU4Rec's candidates from `index` (an `ItemIndex`), or exactly (None)."""
        self.builder = FeatureBuilder(self.parts, index)

    def networks(self) -> list[torch.nn.Module]:
        return self.parts.gru.networks()

    def init_state(self, batch_size: int) -> list[Tensor]:
        return self.parts.gru.init_state(batch_size)

    def advance(self, state: list[Tensor], items: Tensor) -> list[Tensor]:
        return self.parts.gru.advance(state, items)

    def item_vectors(self) -> np.ndarray:
        """GRU4Rec's item vectors: the index that produces the candidates is built on them."""
        return self.parts.gru.item_vectors()

    def query_vectors(self, batch: SessionBatch) -> Tensor:
        return self.parts.gru.query_vectors(batch)

    def predict(self, candidates: CandidateRows) -> Tensor:
        """(P,) float64 ranker scores of the candidate rows (ties broken, `tie_broken`)."""
        if len(candidates.features) == 0:
            return torch.zeros(0, dtype=torch.float64)
        values = self.booster.predict(candidates.features, num_threads=torch.get_num_threads())
        return torch.from_numpy(tie_broken(np.asarray(values, np.float64), candidates.features))

    def score(self, batch: SessionBatch) -> Tensor:
        """(B, n_items): the candidates by the ranker's score, then the other items by
        GRU4Rec's, each below every candidate of its row."""
        out = []
        for _first, part in row_chunks(batch, self.n_items):
            candidates = self.builder.build(part, dense_gru=True)
            assert candidates.gru_dense is not None
            out.append(_dense_scores(candidates, self.predict(candidates)))
        return torch.cat(out).to(batch.history.device)

    def top_k(self, batch: SessionBatch, k: int) -> tuple[Tensor, Tensor]:
        """(B, k) scores and item indices, best first: from the candidates alone where every
        row has k of them, else the candidates then the other items by GRU4Rec's order (as
        `score`, with the same candidates)."""
        values, indices = [], []
        for _first, part in row_chunks(batch, self.n_items):
            candidates = self.builder.build(part)
            predicted = self.predict(candidates)
            if int(candidates.counts.min()) < k:
                if candidates.gru_dense is None:  # candidates from the index: score the rest
                    gru = self.parts.gru.score(part).float().cpu()
                    candidates = replace(candidates, gru_dense=gru)
                found = torch.topk(_dense_scores(candidates, predicted), k, dim=1)
                values.append(found.values)
                indices.append(found.indices)
                continue
            width = int(candidates.counts.max())
            table = torch.full((part.history.shape[0], width), -math.inf, dtype=torch.float64)
            items = torch.zeros((part.history.shape[0], width), dtype=torch.int64)
            starts = torch.cumsum(candidates.counts, 0) - candidates.counts
            slot = torch.arange(len(candidates.rows)) - starts[candidates.rows]
            table[candidates.rows, slot] = predicted
            items[candidates.rows, slot] = candidates.items
            best = torch.topk(table, k, dim=1)
            values.append(best.values)
            indices.append(items.gather(1, best.indices))
        return torch.cat(values), torch.cat(indices)


_GRU_RANK = FEATURES.index("gru_rank")
_TIE_STEP = 1e-12  # far below the model's own differences, far above float64's rounding


def tie_broken(predicted: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The ranker's scores with ties broken by GRU4Rec's order among the candidates: trees
    give many candidates the same score, and a tie counts against the target."""
    return predicted - _TIE_STEP * features[:, _GRU_RANK].astype(np.float64)


def _dense_scores(candidates: CandidateRows, predicted: Tensor) -> Tensor:
    """(B, n_items) float64 scores of every item: a candidate's is the ranker's; the others
    keep GRU4Rec's order in (row's lowest candidate - 2, row's lowest candidate - 1]."""
    assert candidates.gru_dense is not None
    gru = candidates.gru_dense.double()
    n_rows = gru.shape[0]
    lowest = torch.full((n_rows,), math.inf, dtype=torch.float64).scatter_reduce(
        0, candidates.rows, predicted, "amin"
    )
    lowest = torch.where(torch.isfinite(lowest), lowest, 0.0)
    top = gru.amax(dim=1, keepdim=True)
    spread = top - gru.amin(dim=1, keepdim=True)
    out = (lowest.unsqueeze(1) - 1.0) + (gru - top) / (spread + 1.0)  # (lowest-2, lowest-1]
    out[candidates.rows, candidates.items] = predicted
    return out
