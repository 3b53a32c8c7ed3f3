"""Build a model's FAISS index with its recall check: what `gru4rec index` and the nightly
job's index stage run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from gru4rec.errors import ConfigError
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.neural import query_vectors
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.retrieval import IndexOptions, ItemIndex, weights_fingerprint
from gru4rec.serving.saved_models import load_scorer

RECALL_QUERIES = 2000
RECALL_CUTOFF = 20


def build_index(
    model_dir: Path, options: IndexOptions, *, data: Path | None = None
) -> tuple[ItemIndex, Path]:
    """Index the item vectors of the model in `model_dir` beside it, and measure the index's
    recall@20 against exact search (1.0 for a flat index, which is exact).

    data: prepared data whose test sessions are the recall queries (default: the model's
        training data directory; without one, the items' own vectors stand in).
    Returns the index (its `meta` holds `recall_at_20`, `recall_queries`) and its folder.
    Raises ConfigError for a model whose scores are not inner products (nothing to index).
    """
    scorer, items = load_scorer(model_dir, device="cpu")
    if not scorer.indexed:
        raise ConfigError(
            f"{model_dir} holds a {scorer.family} model, whose scores are not inner products of "
            "item vectors: there is nothing to index. `gru4rec recommend` scores every item "
            "of it exactly (--index none)."
        )
    vectors = scorer.item_vectors()
    index = ItemIndex.build(vectors, options)
    queries = _recall_queries(scorer, items, data or _training_data_dir(model_dir), vectors)
    cutoff = min(RECALL_CUTOFF, len(vectors))
    exact = options.kind == "flat"
    index.meta["recall_at_20"] = (
        1.0 if exact else index.recall_against_exact(vectors, queries, cutoff)
    )
    index.meta["recall_queries"] = len(queries)
    return index, index.save(model_dir, weights_fingerprint(model_dir))


def _recall_queries(
    scorer: SessionScorer, items: pl.DataFrame, data: Path | None, vectors: np.ndarray
) -> np.ndarray:
    """Query vectors for measuring recall: test-session states, else the items' own vectors."""
    if data is not None and (data / "test.parquet").exists():
        sessions = (
            pl.read_parquet(data / "test.parquet")
            .group_by("session_id", maintain_order=True)
            .agg("item_id")
            .head(RECALL_QUERIES)["item_id"]
            .to_list()
        )
        recommender = Recommender(scorer, items)
        mapped = [s for s in recommender.to_indices(sessions)[0] if s]
        if mapped:
            return query_vectors(recommender.encode_indices(mapped))
    rng = np.random.default_rng(0)
    sample = rng.choice(len(vectors), min(RECALL_QUERIES, len(vectors)), replace=False)
    queries = vectors[sample].copy()
    queries[:, -1] = 1.0  # an item's own vector stands in for a session state
    return queries


def _training_data_dir(model_dir: Path) -> Path | None:
    extra = json.loads((model_dir / "config.json").read_text()).get("extra", {})
    path = extra.get("data_dir")
    return Path(path) if path and Path(path).exists() else None
