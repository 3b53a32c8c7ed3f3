"""Sessions in, ranked recommendations out: the session encoder and exact top-k scoring.

`Recommender.from_path(model_dir).recommend(sessions, k)` takes sessions as sequences of
ORIGINAL item ids (as users have them), skips and counts unknown items, and returns the
top-k items by the model's score over all items (`h . W + b` for GRU4Rec); any model
family is served through the scoring contract (`gru4rec.scoring.contract`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.network.model import GRU4Rec
from gru4rec.scoring.contract import SessionScorer, session_batch
from gru4rec.scoring.neural import as_scorer, query_vectors
from gru4rec.serving.retrieval import INDEX_DIR, INDEX_KINDS, IndexOptions, ItemIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeReport:
    """What encoding skipped: unknown items, and sessions with no known item at all."""

    n_sessions: int
    n_unknown_items: int  # events whose item the model does not know (skipped)
    empty_sessions: tuple[int, ...]  # positions of sessions with no known item (no output)


class Recommender:
    """A trained model of any family plus its item map, ready to score sessions.

    index: a FAISS `ItemIndex` over the model's item vectors (for families whose score is
        an inner product it answers; for the ranker it gives GRU4Rec's candidates); None
        scores all items through the scorer's `top_k` (exact: the reference for the index).
    """

    def __init__(
        self,
        scorer: SessionScorer | GRU4Rec,
        items: pl.DataFrame,
        index: ItemIndex | None = None,
    ) -> None:
        self.scorer = as_scorer(scorer)
        for network in self.scorer.networks():
            network.eval()
        self.device = self.scorer.device
        self.item_ids = items.sort("item_idx")["item_id"]
        self.index = index
        if self.scorer.index_candidates:
            self.scorer.use_index(index)
        self._position = {item: i for i, item in enumerate(self.item_ids.to_list())}

    @classmethod
    def from_path(
        cls, model_dir: str | Path, device: str = "auto", index: str = "none"
    ) -> Recommender:
        """Load a model directory of any family (no arbitrary unpickling) and, unless `index`
        is "none", its saved FAISS index, which must be of that kind (flat, hnsw or ivf);
        "auto" is flat for inner-product families, the saved index (else none) for the
        ranker, and none for the others."""
        from gru4rec.serving.saved_models import load_scorer

        scorer, items = load_scorer(Path(model_dir), device=device)
        item_index = None
        if index not in ("none", "auto", *INDEX_KINDS):
            raise ConfigError(
                f"--index must be auto, none or one of {', '.join(INDEX_KINDS)}; got {index!r}."
            )
        saved = Path(model_dir) / INDEX_DIR
        if index == "auto" and scorer.index_candidates:  # the candidates `index` was built for
            index = ItemIndex.load(Path(model_dir)).options.kind if saved.exists() else "none"
        elif index == "auto":  # exact either way: FAISS where the score is an inner product
            index = "flat" if scorer.inner_product else "none"
        if index != "none" and not scorer.indexed:
            raise ConfigError(
                f"{model_dir} holds a {scorer.family} model, whose scores are not inner "
                "products of item vectors, so no FAISS index can retrieve them: use --index none "
                "(every item is scored exactly)."
            )
        if index == "flat" and not saved.exists():
            # The exact index is cheap to build and answers exactly as a saved one would.
            logger.warning(
                "%s has no saved index: building the exact (flat) index in memory", model_dir
            )
            item_index = ItemIndex.build(scorer.item_vectors(), IndexOptions("flat"))
        elif index != "none":
            item_index = ItemIndex.load(Path(model_dir))
            if item_index.options.kind != index:
                raise CheckpointError(
                    f"{model_dir} holds a {item_index.options.kind} index, not {index}; rebuild "
                    f"with `gru4rec index {model_dir} --kind {index}` or pass --index "
                    f"{item_index.options.kind}."
                )
        return cls(scorer, items, item_index)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to_indices(self, sessions: Sequence[Sequence[Any]]) -> tuple[list[list[int]], int]:
        """Map original ids to indices, skipping unknown ones; returns (sessions, n_unknown)."""
        mapped, unknown = [], 0
        for session in sessions:
            known = [self._position[item] for item in session if item in self._position]
            unknown += len(session) - len(known)
            mapped.append(known)
        return mapped, unknown

    def similar(self, item: Any, k: int = 20) -> pl.DataFrame:
        """The k items nearest to `item` ("people also viewed"): the largest inner products
        of the items' output vectors with its vector, through the index (the exact one
        where none is loaded); the item itself left out. Columns rank, item_id, score."""
        if not self.scorer.indexed:
            raise ConfigError(
                f"a {self.scorer.family} model has no item vectors to compare; `similar` "
                "needs a GRU4Rec model."
            )
        if item not in self._position:
            raise ConfigError(f"item {item!r} is not in the model's catalogue.")
        if not 1 <= k < self.n_items:
            raise ConfigError(f"k must be between 1 and {self.n_items - 1}; got {k}.")
        vectors = self.scorer.item_vectors()  # (N, D + 1): each item's vector, then its bias
        position = self._position[item]
        query = vectors[[position]].copy()
        query[:, -1] = 0.0  # the query's bias slot: the other items' biases do not count
        index = self.index or ItemIndex.build(vectors, IndexOptions("flat"))
        scores, found = index.search(query, k + 1)
        keep = (found[0] >= 0) & (found[0] != position)
        chosen, values = found[0][keep][:k], scores[0][keep][:k]
        return pl.DataFrame(
            {
                "rank": np.arange(1, len(chosen) + 1, dtype=np.int32),
                "item_id": self.item_ids.gather(chosen),
                "score": values.astype(np.float32),
            }
        )

    @torch.inference_mode()
    def encode_indices(self, sessions: Sequence[Sequence[int]]) -> Tensor:
        """Query vectors (S, D) of (non-empty) sessions, for families scored by inner products."""
        return self.scorer.query_vectors(session_batch(self.scorer, sessions))

    @torch.inference_mode()
    def _top_k(
        self, sessions: list[list[int]], k: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices), each (S, k), best first; index -1 where nothing was found."""
        batch = session_batch(self.scorer, sessions)
        # Excluding seen items: ask for more, then drop them (a session has at most len() items).
        extra = max(len(set(s)) for s in sessions) if exclude_seen else 0
        wanted = min(k + extra, self.n_items)
        if self.index is not None and self.scorer.inner_product:
            scores, indices = self.index.search(
                query_vectors(self.scorer.query_vectors(batch)), wanted
            )
        else:
            values, positions = self.scorer.top_k(batch, wanted)
            scores, indices = values.float().cpu().numpy(), positions.cpu().numpy()
        if exclude_seen:
            seen = np.zeros_like(indices, dtype=bool)
            for row, session in enumerate(sessions):
                seen[row] = np.isin(indices[row], session)
            indices = np.where(seen, -1, indices)
        # Move the found items to the front of each row, keeping their order, and cut at k.
        order = np.argsort(indices < 0, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)

    def recommend(
        self,
        sessions: Sequence[Sequence[Any]],
        k: int = 20,
        *,
        exclude_seen: bool = False,
        batch_size: int = 512,
    ) -> tuple[pl.DataFrame, EncodeReport]:
        """Top-k items for every session that has at least one known item.

        Returns a long table (`session`: position in `sessions`, `rank` 1..k, `item_id`,
        `score`), ordered by session then rank, and what was skipped.
        """
        if not 1 <= k <= self.n_items:
            raise ConfigError(
                f"k must be between 1 and the number of items ({self.n_items}); got {k}."
            )
        mapped, unknown = self.to_indices(sessions)
        served = [i for i, session in enumerate(mapped) if session]
        parts = []
        for start in range(0, len(served), batch_size):
            rows = served[start : start + batch_size]
            batch = [mapped[i] for i in rows]
            scores, indices = self._top_k(batch, k, exclude_seen)
            found = indices >= 0  # an approximate index may return fewer than k
            parts.append(
                pl.DataFrame(
                    {
                        "session": np.repeat(np.array(rows, dtype=np.int64), k)[found.ravel()],
                        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))[
                            found.ravel()
                        ],
                        "item_idx": indices[found],
                        "score": scores[found].astype(np.float32),
                    }
                )
            )
        empty = tuple(i for i, session in enumerate(mapped) if not session)
        report = EncodeReport(len(sessions), unknown, empty)
        if not parts:
            schema: dict[str, Any] = {
                "session": pl.Int64,
                "rank": pl.Int32,
                "item_id": self.item_ids.dtype,
                "score": pl.Float32,
            }
            return pl.DataFrame(schema=schema), report
        table = pl.concat(parts)
        item_id = self.item_ids.gather(table["item_idx"].to_numpy())
        return table.with_columns(item_id.alias("item_id")).select(
            "session", "rank", "item_id", "score"
        ), report
