"""The neural families behind the scoring contract: GRU4Rec and the repeat-aware GRU4Rec.

`as_scorer` wraps a trained network in the scorer registered for its class in `SCORERS`; a
new network family registers its scorer there (and its network in
`gru4rec.network.families`), so shared code never asks which variant it holds.

GRU4Rec's score `h . W_i + b_i` is an inner product: `item_vectors` appends each item's
bias to its output vector and `query_vectors` a constant 1 to each session state, so the
exact FAISS index (`gru4rec.serving.retrieval`) returns exactly the model's top k.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.model import GRU4Rec
from gru4rec.network.repeat import RepeatGRU4Rec
from gru4rec.scoring.contract import SessionBatch, SessionScorer
from gru4rec.scoring.topk import exact_top_k


def item_vectors(model: GRU4Rec) -> np.ndarray:
    """(n_items, H + 1) float32: each item's output vector with its bias appended."""
    weight = model.item_weight.detach().float().cpu()
    bias = model.item_bias.detach().float().cpu().reshape(-1, 1)
    return np.ascontiguousarray(torch.cat([weight, bias], dim=1).numpy())


def query_vectors(states: Tensor) -> np.ndarray:
    """(S, H + 1) float32: session states with a constant 1 appended (to meet the bias)."""
    states = states.detach().float().cpu()
    ones = torch.ones((states.shape[0], 1))
    return np.ascontiguousarray(torch.cat([states, ones], dim=1).numpy())


class GRU4RecScorer(SessionScorer):
    """GRU4Rec behind the contract: the state is the hidden state of every layer, and the
    score of item i is `h . W_i + b_i` with h the last layer's output."""

    family: ClassVar[str] = "gru4rec"
    inner_product: ClassVar[bool] = True

    def __init__(self, model: GRU4Rec, config: GRU4RecConfig | None = None) -> None:
        self.model = model  # callers scoring with it put it in eval mode (no dropout)
        self.config = config  # what it was trained with (needed to save it)
        self.device = model.item_weight.device

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def networks(self) -> list[torch.nn.Module]:
        return [self.model]

    def init_state(self, batch_size: int) -> list[Tensor]:
        return self.model.init_hidden(batch_size, self.device)

    def advance(self, state: list[Tensor], items: Tensor) -> list[Tensor]:
        # In eval mode the output is the last layer's hidden state (no dropout).
        _output, hidden = self.model.forward_step(items, state)
        return hidden

    def score(self, batch: SessionBatch) -> Tensor:
        return self.model.score_all(batch.state[-1])

    def item_vectors(self) -> np.ndarray:
        return item_vectors(self.model)

    def query_vectors(self, batch: SessionBatch) -> Tensor:
        return batch.state[-1]

    def top_k(self, batch: SessionBatch, k: int) -> tuple[Tensor, Tensor]:
        # Blocked matmuls and a compiled top k: the full score matrix is never built.
        model = self.model
        return exact_top_k(batch.state[-1], model.item_weight, model.item_bias, k)


class RepeatGRU4RecScorer(GRU4RecScorer):
    """The repeat-aware GRU4Rec behind the scoring contract: its state is the GRU's and the
    window; its score, log p(i), is not an inner product (no FAISS index)."""

    family: ClassVar[str] = "repeat"
    inner_product: ClassVar[bool] = False

    def __init__(self, model: RepeatGRU4Rec, config: GRU4RecConfig | None = None) -> None:
        super().__init__(model, config)
        self.repeat_model = model  # the same network, typed as the repeat-aware one

    def score(self, batch: SessionBatch) -> Tensor:
        return self.repeat_model.score_mixture(batch.state[-2], batch.state[-1])

    def top_k(self, batch: SessionBatch, k: int) -> tuple[Tensor, Tensor]:
        return SessionScorer.top_k(self, batch, k)

    def item_vectors(self) -> Any:
        raise NotImplementedError("repeat-aware scores are not inner products")

    def query_vectors(self, batch: SessionBatch) -> Tensor:
        raise NotImplementedError("repeat-aware scores are not inner products")


# The scorer of each network class (exact class: a subclass registers its own).
SCORERS: dict[type[GRU4Rec], Any] = {GRU4Rec: GRU4RecScorer, RepeatGRU4Rec: RepeatGRU4RecScorer}


def as_scorer(model: SessionScorer | GRU4Rec, config: GRU4RecConfig | None = None) -> SessionScorer:
    """A scorer as it is; a bare network wrapped in the scorer registered for its class."""
    if isinstance(model, SessionScorer):
        return model
    scorer: SessionScorer = SCORERS[type(model)](model, config)
    return scorer


__all__ = [
    "SCORERS",
    "GRU4RecScorer",
    "RepeatGRU4RecScorer",
    "as_scorer",
    "item_vectors",
    "query_vectors",
]
