"""One scoring contract for every model family: GRU4Rec, the baselines and the hybrids.

A `SessionScorer` ranks ALL items for a batch of session prefixes. The caller keeps each
row's prefix as a history, a (B, W) int64 tensor of item index + 1, left-aligned, 0 =
empty (`SessionBatch.history`); scorers that summarise a session incrementally (GRU4Rec's
hidden state) also keep per-row tensors in `SessionBatch.state`, advanced one event at a
time by `advance`. Evaluation (`gru4rec.scoring.evaluate`), `recommend` and the pyfunc model
drive every family the same way:

    cursor = SessionCursor(scorer)
    batch = cursor.step(inputs, keep, reset)   # append one event per row
    scores = scorer.score(batch)               # (B, n_items), higher is better

Families: `gru4rec` and `repeat` (`gru4rec.scoring.neural`), the baselines
(`gru4rec.scoring.baselines`), and `hybrid` (`gru4rec.scoring.hybrid`). Saving and
loading every family: `gru4rec.serving.saved_models`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

_INITIAL_WIDTH = 8  # history columns before the first doubling; most sessions are shorter


@dataclass(frozen=True, eq=False)
class SessionBatch:
    """Session prefixes, one per row.

    history: (B, W) int64 item index + 1 of each row's events in order, left-aligned,
        0 = empty; a row of zeros is a session with no event yet.
    state: per-row tensors (first dimension B) that the scorer keeps between events, as
        returned by its `advance`; empty for scorers that read only the history.
    """

    history: Tensor
    state: list[Tensor]

    @property
    def lengths(self) -> Tensor:
        """(B,) int64 number of events in each row's prefix."""
        return (self.history != 0).sum(dim=1)


class SessionScorer(ABC):
    """Scores every item for session prefixes; see the module docstring.

    Subclasses set `family` (the name saved in a model directory and shown by `compare`)
    and implement `n_items` and `score`; stateful ones override `init_state`/`advance`.
    `inner_product` says whether the score is `query . item vector` (then `item_vectors`
    and `query_vectors` exist and a FAISS index can retrieve the top k exactly);
    `index_candidates` whether the scorer orders candidates that such an index retrieves
    (`use_index`); either way the scorer is `indexed`.
    """

    family: ClassVar[str]
    inner_product: ClassVar[bool] = False
    index_candidates: ClassVar[bool] = False
    device: torch.device = torch.device("cpu")

    @property
    def indexed(self) -> bool:
        """Whether a FAISS index over `item_vectors` serves it (its answers or candidates)."""
        return self.inner_product or self.index_candidates

    @property
    @abstractmethod
    def n_items(self) -> int: ...

    def networks(self) -> list[torch.nn.Module]:
        """The torch modules it scores with (put in eval mode while scoring)."""
        return []

    def init_state(self, batch_size: int) -> list[Tensor]:
        """The state of `batch_size` sessions with no event yet (rows of zeros)."""
        return []

    def advance(self, state: list[Tensor], items: Tensor) -> list[Tensor]:
        """The state after each row's session consumed `items` (B,) int64."""
        return state

    @abstractmethod
    def score(self, batch: SessionBatch) -> Tensor:
        """(B, n_items) scores of every item as the next event of each row's session."""

    def top_k(self, batch: SessionBatch, k: int) -> tuple[Tensor, Tensor]:
        """(B, k) best scores and their item indices, best first."""
        found = torch.topk(self.score(batch), k, dim=1)
        return found.values, found.indices

    def use_index(self, index: Any) -> None:
        """Take candidates from `index` (an `ItemIndex` over `item_vectors`; None: exactly)."""
        raise NotImplementedError(f"{self.family} takes no candidates from an index")

    def item_vectors(self) -> np.ndarray:
        """(n_items, D) float32 vectors whose inner product with `query_vectors` is the score."""
        raise NotImplementedError(f"{self.family} scores are not inner products")

    def query_vectors(self, batch: SessionBatch) -> Tensor:
        """(B, D) query vectors of the rows (see `item_vectors`)."""
        raise NotImplementedError(f"{self.family} scores are not inner products")


class SessionCursor:
    """Feeds events to a scorer in session-parallel slots and keeps each slot's prefix.

    `step(inputs, keep, reset)` takes one `gru4rec.network.batching.Step`'s fields: rows are first
    selected by `keep` (finished slots dropped), rows starting a new session are emptied
    (`reset`), then every row consumes its input item.
    """

    def __init__(self, scorer: SessionScorer) -> None:
        self.scorer = scorer
        self.device = scorer.device
        self.history: Tensor | None = None
        self.state: list[Tensor] = []

    def step(
        self, inputs: np.ndarray | Tensor, keep: np.ndarray | None, reset: np.ndarray | Tensor
    ) -> SessionBatch:
        items = torch.as_tensor(inputs, device=self.device)
        if self.history is None:  # sized by the first step: there may be fewer sessions
            self.history = torch.zeros(
                len(items), _INITIAL_WIDTH, dtype=torch.int64, device=self.device
            )
            self.state = self.scorer.init_state(len(items))
        if keep is not None:
            rows = torch.as_tensor(keep, dtype=torch.int64, device=self.device)
            self.history = self.history.index_select(0, rows)
            self.state = [tensor.index_select(0, rows) for tensor in self.state]
        starts = torch.as_tensor(reset, dtype=torch.bool, device=self.device)
        self.history = self.history.masked_fill(starts.unsqueeze(1), 0)
        self.state = [
            tensor.masked_fill(starts.view(-1, *([1] * (tensor.ndim - 1))), 0)
            for tensor in self.state
        ]
        self.history = append_items(self.history, items)
        self.state = self.scorer.advance(self.state, items)
        return SessionBatch(self.history, self.state)


def append_items(history: Tensor, items: Tensor) -> Tensor:
    """Write item + 1 after the last filled column of each row, widening when full."""
    lengths = (history != 0).sum(dim=1)  # (B,)
    needed = int(lengths.max()) + 1 if len(lengths) else 0
    if needed > history.shape[1]:
        width = max(2 * history.shape[1], needed, _INITIAL_WIDTH)
        history = torch.nn.functional.pad(history, (0, width - history.shape[1]))
    return history.scatter(1, lengths.unsqueeze(1), (items.to(history.dtype) + 1).unsqueeze(1))


def session_batch(scorer: SessionScorer, sessions: Sequence[Sequence[int]]) -> SessionBatch:
    """The batch of whole sessions (lists of item indices, each non-empty), state included.

    Sessions are sorted longest first, so at step t the sessions still running are a prefix
    of the rows and a stateful scorer advances only those (total work = total length).
    """
    lengths = np.array([len(s) for s in sessions], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    longest = int(lengths.max()) if len(lengths) else 0
    padded = np.zeros((len(sessions), max(longest, 1)), dtype=np.int64)  # (S, T), sorted rows
    for row, position in enumerate(order):
        padded[row, : lengths[position]] = np.asarray(sessions[position], dtype=np.int64) + 1
    history = torch.from_numpy(padded).to(scorer.device)
    state = scorer.init_state(len(sessions))
    if state:
        running = np.searchsorted(-lengths[order], -np.arange(longest), side="left")  # len > t
        for step in range(longest):
            rows = int(running[step])
            new = scorer.advance([tensor[:rows] for tensor in state], history[:rows, step] - 1)
            for tensor, part in zip(state, new, strict=True):
                tensor[:rows] = part
    restore = torch.from_numpy(np.argsort(order, kind="stable")).to(scorer.device)
    return SessionBatch(history[restore], [tensor[restore] for tensor in state])


def repeat_targets(history: Tensor, targets: Tensor) -> Tensor:
    """(B,) bool: whether each row's target item already occurs in its prefix."""
    return (history == (targets.to(history.dtype) + 1).unsqueeze(1)).any(dim=1)


__all__ = [
    "SessionBatch",
    "SessionCursor",
    "SessionScorer",
    "append_items",
    "repeat_targets",
    "session_batch",
]
