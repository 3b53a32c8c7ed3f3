"""The hybrid as a family: GRU4Rec mixed with the session's items and V-SKNN votes, the
weights searched on valid (`gru4rec.scoring.hybrid`). It reuses the GRU4Rec and the V-SKNN
that the `gru4rec` and `vsknn` candidates fit, so it costs no extra training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import fit_baseline
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.hybrid import HybridScorer, MixtureWeights, WeightSearch, choose_weights
from gru4rec.scoring.neural import GRU4RecScorer
from gru4rec.serving.checkpoint import load_checkpoint, save_checkpoint
from gru4rec.serving.families.base import (
    GRU_DIR,
    Candidate,
    Family,
    Fitting,
    baseline_params,
    read_sessions,
    write_sessions,
)
from gru4rec.serving.families.networks import GRU4REC, network_config

logger = logging.getLogger(__name__)

HYBRID_KNN = "vsknn"  # the kNN component: the best baseline on both public logs


def weight_search(fitting: Fitting, preset: str) -> WeightSearch:
    """The hybrid's weights for GRU4Rec with `preset` (fitted on train_tr), searched on valid
    (shared: the ranker reads them too)."""

    def search() -> WeightSearch:
        mixture = HybridScorer(
            GRU4REC.network(fitting, preset, "train_tr"),
            MixtureWeights(),
            fitting.baseline(HYBRID_KNN, "train_tr"),
        )
        return choose_weights(
            mixture, fitting.split("valid"), metric=fitting.metric, ties=fitting.ties
        )

    return fitting.shared(("weights", preset), search)


class HybridFamily(Family):
    """Its validation metrics are the search's own for the best weights (exact at the
    cutoffs, no coverage)."""

    name = "hybrid"
    scorer_type = HybridScorer
    takes_preset = True
    chosen_on_valid = True

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        search = weight_search(fitting, candidate.preset_name)
        logger.info("%s: %d weightings tried on valid", candidate.name, len(search.trials))
        metrics = dict(search.trials)[search.best]
        return {**metrics, "weights": search.best.to_dict(), "n_weights_tried": len(search.trials)}

    def fit(
        self, candidate: Candidate, fitting: Fitting, split: str, chosen: Mapping[str, Any]
    ) -> SessionScorer:
        return HybridScorer(
            GRU4REC.network(fitting, candidate.preset_name, split),
            MixtureWeights(**chosen["weights"]),
            fitting.baseline(HYBRID_KNN, split),
        )

    def describe(self, scorer: SessionScorer) -> dict[str, Any]:
        assert isinstance(scorer, HybridScorer)
        knn = scorer.knn
        return {
            "weights": scorer.weights.to_dict(),
            "knn": None if knn is None else {"name": knn.name, "params": baseline_params(knn)},
        }

    def write(
        self,
        scorer: SessionScorer,
        staging: Path,
        items: pl.DataFrame,
        train_data: SessionData | None,
    ) -> None:
        assert isinstance(scorer, HybridScorer)
        gru = scorer.gru
        save_checkpoint(staging / GRU_DIR, gru.model, network_config(gru), items)
        if scorer.knn is not None:
            write_sessions(staging, train_data, self.name)

    def load(
        self, model_dir: Path, meta: Mapping[str, Any], items: pl.DataFrame, device: str
    ) -> SessionScorer:
        model, config, _items = load_checkpoint(model_dir / GRU_DIR, device=device)
        knn = None
        if meta.get("knn"):
            data = read_sessions(model_dir, self.name)
            knn = fit_baseline(meta["knn"]["name"], data, items.height, **meta["knn"]["params"])
        return HybridScorer(GRU4RecScorer(model, config), MixtureWeights(**meta["weights"]), knn)

    def network_dir(self, model_dir: Path) -> Path | None:
        return model_dir / GRU_DIR
