"""Fitting the ranker: cross-fitted LambdaMART on a `RankerTable` (out-of-fold metrics, then
the final model on every fold; see the package doc), and loading a saved model from
LightGBM's text format."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.options import CUTOFFS
from gru4rec.scoring.evaluate import TieMode
from gru4rec.scoring.ranker.features import FEATURES
from gru4rec.scoring.ranker.table import RankerTable, table_metrics

if TYPE_CHECKING:
    import lightgbm

logger = logging.getLogger(__name__)

N_FOLDS = 3
EARLY_STOPPING_SHARE = 0.2  # of a fold's training sessions, held out to stop early
MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 30

# LambdaMART's settings: LightGBM's defaults except a slower learning rate (early stopping
# picks the rounds), leaves that need 100 rows, and pairs counted to twice the cutoff (the
# steadiest of the variants tried out of fold on YOOCHOOSE 100k's validation split).
LGBM_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [20],
    "lambdarank_truncation_level": 40,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


@dataclass(frozen=True)
class RankerFit:
    """What `fit_ranker` learned: the final model, its rounds, and the out-of-fold metrics."""

    booster: lightgbm.Booster
    rounds: int
    metrics: dict[str, Any]
    fold_rounds: list[int]


def fit_ranker(
    table: RankerTable,
    *,
    n_items: int,
    cutoffs: Sequence[int] = CUTOFFS,
    ties: TieMode = "conservative",
    seed: int = 42,
    num_threads: int | None = None,
) -> RankerFit:
    """Cross-fitted LambdaMART on `table` (see the package doc): out-of-fold metrics and
    the final model trained on every fold."""
    import lightgbm

    if not (table.labels == 1).any():
        raise ConfigError("no validation target is among the candidates: nothing to learn from")
    params = {
        **LGBM_PARAMS,
        "seed": seed,
        "num_threads": num_threads or torch.get_num_threads(),
    }
    rng = np.random.default_rng(seed)
    unique_sessions = np.unique(table.sessions)
    fold_of_session = dict(
        zip(unique_sessions, rng.permutation(len(unique_sessions)) % N_FOLDS, strict=True)
    )
    fold = np.array([fold_of_session[s] for s in table.sessions], dtype=np.int64)
    held = dict(
        zip(unique_sessions, rng.random(len(unique_sessions)) < EARLY_STOPPING_SHARE, strict=True)
    )
    held_out = np.fromiter((held[s] for s in table.sessions), dtype=bool, count=len(table.sessions))
    group_of_row = np.repeat(np.arange(len(table.group_sizes)), table.group_sizes)
    useful = np.zeros(len(table.group_sizes), dtype=bool)  # groups with the target inside
    useful[group_of_row[table.labels == 1]] = True
    predicted = np.zeros(len(table.labels), dtype=np.float64)
    fold_rounds = []
    for f in range(N_FOLDS):
        train_groups = (fold != f) & useful & ~held_out
        stop_groups = (fold != f) & useful & held_out
        booster = _train(
            lightgbm, table, train_groups, stop_groups, group_of_row, params, MAX_ROUNDS
        )
        fold_rounds.append(booster.best_iteration or booster.current_iteration())
        scored = fold[group_of_row] == f
        predicted[scored] = booster.predict(
            table.features[scored], num_iteration=fold_rounds[-1], num_threads=params["num_threads"]
        )
        logger.info("ranker fold %d: %d rounds", f + 1, fold_rounds[-1])
    metrics = table_metrics(table, predicted, cutoffs=cutoffs, ties=ties, n_items=n_items)
    rounds = max(1, round(float(np.mean(fold_rounds))))
    final = _train(lightgbm, table, useful, None, group_of_row, params, rounds)
    return RankerFit(final, rounds, metrics, fold_rounds)


def _train(
    lightgbm: Any,
    table: RankerTable,
    groups: np.ndarray,
    stop_groups: np.ndarray | None,
    group_of_row: np.ndarray,
    params: dict[str, Any],
    rounds: int,
) -> lightgbm.Booster:
    def dataset(chosen: np.ndarray, reference: Any = None) -> Any:
        rows = chosen[group_of_row]
        return lightgbm.Dataset(
            table.features[rows],
            label=table.labels[rows],
            group=table.group_sizes[chosen],
            feature_name=list(FEATURES),
            reference=reference,
            free_raw_data=True,
        )

    train_set = dataset(groups)
    if stop_groups is None or not stop_groups.any():
        return lightgbm.train(params, train_set, num_boost_round=rounds)
    valid_set = dataset(stop_groups, reference=train_set)
    return lightgbm.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )


def load_booster(path: Path) -> lightgbm.Booster:
    """A LightGBM model from its text format (no pickles)."""
    import lightgbm

    try:
        return lightgbm.Booster(model_str=path.read_text())
    except (OSError, lightgbm.basic.LightGBMError) as error:
        raise CheckpointError(
            f"{path} is missing or corrupt ({error}); save the ranker again."
        ) from error
