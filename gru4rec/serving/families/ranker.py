"""The ranker as a family: LambdaMART over the candidates of GRU4Rec, the kNN baselines and
the session (`gru4rec.scoring.ranker`), learned out of fold on valid over components fitted
on train_tr; refitted on train, the components change and the learned model does not. It
reuses the GRU4Rec, the baselines and the hybrid's weights. Saved with LightGBM's text
format (ranker.txt), the GRU4Rec checkpoint and the sessions its counts are refitted from."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from gru4rec.errors import CheckpointError
from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import fit_baseline
from gru4rec.scoring.candidates import CandidateSizes
from gru4rec.scoring.contract import SessionScorer
from gru4rec.scoring.hybrid import MixtureWeights
from gru4rec.scoring.neural import GRU4RecScorer
from gru4rec.scoring.ranker import (
    FEATURES,
    RankerFit,
    RankerParts,
    RankerScorer,
    fit_ranker,
    load_booster,
    ranker_table,
)
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
from gru4rec.serving.families.hybrid import weight_search
from gru4rec.serving.families.networks import GRU4REC, network_config

logger = logging.getLogger(__name__)

RANKER_BASELINES = ("vsknn", "sknn", "iknn")  # the neighbour features
RANKER_FILE = "ranker.txt"


def ranker_parts(fitting: Fitting, preset: str, split: str, weights: MixtureWeights) -> RankerParts:
    """The ranker's components fitted on `split`."""
    baselines = {name: fitting.baseline(name, split) for name in RANKER_BASELINES}
    network = GRU4REC.network(fitting, preset, split)
    return RankerParts.fit(network, baselines, fitting.split(split), weights)


def learned_ranker(fitting: Fitting, preset: str) -> tuple[RankerFit, float]:
    """LambdaMART learned out of fold on valid over components fitted on train_tr, and its
    candidates' recall there (shared by the validation and the refitting stage)."""

    def learn() -> tuple[RankerFit, float]:
        parts = ranker_parts(fitting, preset, "train_tr", weight_search(fitting, preset).best)
        table = ranker_table(parts, fitting.split("valid"), ties=fitting.ties)
        logger.info(
            "ranker: %d candidate rows for %d predictions on valid (recall %.4f)",
            len(table.labels),
            len(table.group_sizes),
            table.recall,
        )
        fit = fit_ranker(
            table,
            n_items=fitting.n_items,
            cutoffs=fitting.cutoffs,
            ties=fitting.ties,
            seed=fitting.seed,
            num_threads=fitting.threads,
        )
        return fit, table.recall

    return fitting.shared(("ranker", preset), learn)


class RankerFamily(Family):
    """Its validation metrics are out of fold."""

    name = "ranker"
    scorer_type = RankerScorer
    takes_preset = True
    chosen_on_valid = True

    def score_on_valid(self, candidate: Candidate, fitting: Fitting) -> dict[str, Any]:
        fit, recall = learned_ranker(fitting, candidate.preset_name)
        weights = weight_search(fitting, candidate.preset_name).best
        return {
            **fit.metrics,
            "weights": weights.to_dict(),
            "ranker_rounds": fit.rounds,
            "candidate_recall": recall,
        }

    def fit(
        self, candidate: Candidate, fitting: Fitting, split: str, chosen: Mapping[str, Any]
    ) -> SessionScorer:
        fit, _recall = learned_ranker(fitting, candidate.preset_name)
        weights = MixtureWeights(**chosen["weights"])
        return RankerScorer(
            ranker_parts(fitting, candidate.preset_name, split, weights), fit.booster
        )

    def describe(self, scorer: SessionScorer) -> dict[str, Any]:
        assert isinstance(scorer, RankerScorer)
        parts = scorer.parts
        return {
            "weights": parts.weights.to_dict(),
            "sizes": dataclasses.asdict(parts.sizes),
            "baselines": {
                b.name: baseline_params(b) for b in (parts.vsknn, parts.sknn, parts.iknn)
            },
            "features": list(FEATURES),
        }

    def write(
        self,
        scorer: SessionScorer,
        staging: Path,
        items: pl.DataFrame,
        train_data: SessionData | None,
    ) -> None:
        assert isinstance(scorer, RankerScorer)
        gru = scorer.parts.gru
        save_checkpoint(staging / GRU_DIR, gru.model, network_config(gru), items)
        (staging / RANKER_FILE).write_text(scorer.booster.model_to_string())
        write_sessions(staging, train_data, self.name)

    def load(
        self, model_dir: Path, meta: Mapping[str, Any], items: pl.DataFrame, device: str
    ) -> SessionScorer:
        if tuple(meta["features"]) != FEATURES:
            raise CheckpointError(
                f"{model_dir} holds a ranker trained on other features than this version "
                "computes; train it again (`gru4rec select` or `gru4rec train --model ranker`)."
            )
        model, config, _items = load_checkpoint(model_dir / GRU_DIR, device=device)
        data = read_sessions(model_dir, self.name)
        baselines = {
            name: fit_baseline(name, data, items.height, **params)
            for name, params in meta["baselines"].items()
        }
        parts = RankerParts.fit(
            GRU4RecScorer(model, config),
            baselines,
            data,
            MixtureWeights(**meta["weights"]),
            CandidateSizes(**meta["sizes"]),
        )
        return RankerScorer(parts, load_booster(model_dir / RANKER_FILE))

    def network_dir(self, model_dir: Path) -> Path | None:
        return model_dir / GRU_DIR
