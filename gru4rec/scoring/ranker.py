"""The learned ranker: LightGBM's LambdaMART orders each session's candidate items.

For each session prefix, the candidate sets of `gru4rec.scoring.candidates` (GRU4Rec's top
items, through the FAISS index where one is given; the session's items; V-SKNN and
item-kNN top items; the popular ones) are described by the features in `FEATURES`, and a
LightGBM model trained with the `lambdarank` objective scores them. Items outside the
candidates follow, in GRU4Rec's order.

    GRU4Rec      score, gap to the row's best candidate, log-probability among the
                 candidates, rank among the candidates
    session      occurrences of the item, their share of the session, events since its
                 last occurrence, whether it is the last item, the decayed share (S of the
                 hybrid), the session's length and distinct items
    neighbours   V-SKNN, SKNN and item-kNN votes (each row's votes divided by their sum)
                 and their ranks among the candidates
    popularity   log training support, overall and over the last `RECENT_SHARE` of the
                 training sessions (items on news sites live a day)
    hybrid       the mixture score of `gru4rec.scoring.hybrid` with the weights chosen on
                 validation (GRU4Rec's part normalised over the candidates)

Protocol (`fit_ranker`): the components are fitted on `train_tr`; the ranker learns from
the `valid` split's prefixes in folds of whole sessions: each fold is scored by a model
trained on the other folds, which stopped early on a held-out tenth of their sessions; the
out-of-fold ranks give the validation metrics that `select` compares. The final model is
trained on all of `valid` for the folds' mean number of rounds, and is applied unchanged
once the components are refitted on `train`.

The LightGBM model is saved in its text format (no pickles).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.network.data import SessionData
from gru4rec.scoring.baselines import Baseline
from gru4rec.scoring.candidates import CandidateSets, CandidateSizes
from gru4rec.scoring.contract import SessionBatch, SessionScorer, repeat_targets
from gru4rec.scoring.cutoffs import CUTOFFS
from gru4rec.scoring.evaluate import MetricAccumulator, TieMode, scored_steps
from gru4rec.scoring.hybrid import MixtureWeights, mixture_log_prob
from gru4rec.scoring.neural import GRU4RecScorer

if TYPE_CHECKING:
    import lightgbm

logger = logging.getLogger(__name__)

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
N_FOLDS = 3
EARLY_STOPPING_SHARE = 0.2  # of a fold's training sessions, held out to stop early
MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 30
# Rows of (B, n_items) matrices scored at once: about 64 MB of float32 per matrix.
_DENSE_FLOATS = 16 * 2**20

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
    """Candidates and their features for batches of prefixes (see the module doc)."""

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
        masks = self.sources.masks(batch, knn=knn, gru=gru_dense)
        union = torch.zeros_like(masks["popular"])
        for mask in masks.values():
            union |= mask
        rows, items = union.nonzero(as_tuple=True)  # row-major: sorted by row
        n_rows = batch.history.shape[0]
        counts = torch.bincount(rows, minlength=n_rows)
        columns: dict[str, Tensor] = {}

        # GRU4Rec: q . v at the pairs (the index's score), normalised over the candidates.
        queries = torch.cat(
            [parts.gru.query_vectors(batch).float().cpu(), torch.ones(n_rows, 1)], dim=1
        )
        gru = (queries[rows] * self._vectors[items]).sum(dim=1)
        row_max = torch.full((n_rows,), -math.inf).scatter_reduce(0, rows, gru, "amax")
        row_lse = _row_logsumexp(rows, gru, row_max, n_rows)
        columns["gru_score"] = gru
        columns["gru_gap"] = gru - row_max[rows]
        columns["gru_logp"] = gru - row_lse[rows]
        columns["gru_rank"] = _rank_in_rows(rows, gru, counts)

        # The session: occurrences, recency, the hybrid's decayed share.
        history = batch.history.cpu()
        lengths = (history != 0).sum(dim=1)
        width = history.shape[1]
        same = history[rows] == (items + 1).unsqueeze(1)  # (P, W)
        count = same.sum(dim=1)
        position = torch.arange(width).expand_as(same)
        last = torch.where(same, position, -1).amax(dim=1)
        back = (lengths.unsqueeze(1) - 1 - torch.arange(width)).clamp(min=0)  # (B, W)
        decayed = torch.where(history != 0, parts.weights.decay ** back.float(), 0.0)
        decayed = decayed / decayed.sum(dim=1, keepdim=True).clamp(min=1e-30)
        columns["session_count"] = count.float()
        columns["session_share"] = count.float() / lengths[rows].clamp(min=1).float()
        steps_since = (lengths[rows] - 1 - last).float()
        columns["steps_since"] = torch.where(count > 0, steps_since, math.nan)
        columns["is_last"] = (last == lengths[rows] - 1).float()
        session = (decayed[rows] * same).sum(dim=1)
        columns["session_decayed"] = session
        columns["session_length"] = lengths[rows].float()
        distinct = torch.tensor([len(set(row[row != 0].tolist())) for row in history])
        columns["session_distinct"] = distinct[rows].float()

        # Neighbours: each row's votes over their sum, and their rank among the candidates.
        normalised = {}
        for name, scores in knn.items():
            votes = scores.clamp(min=0)
            share = votes[rows, items] / votes.sum(dim=1).clamp(min=1e-30)[rows]
            normalised[name] = share
            columns[name] = share
            columns[f"{name}_rank"] = _rank_in_rows(rows, share, counts)
        columns["pop"] = self._log_pop[items]
        columns["pop_recent"] = self._log_recent[items]

        # The mixture normalised over the candidates (GRU4Rec's log-probability among them).
        columns["hybrid"] = mixture_log_prob(
            parts.weights, columns["gru_logp"], session, normalised["vsknn"]
        )
        features = torch.stack([columns[name].float() for name in FEATURES], dim=1)
        return CandidateRows(rows, items, features.numpy(), counts, gru_dense)


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


class RankerScorer(SessionScorer):
    """The candidates of `parts`, ordered by a trained LightGBM model (see the module doc).

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
        for _first, part in _row_chunks(batch, self.n_items):
            candidates = self.builder.build(part, dense_gru=True)
            assert candidates.gru_dense is not None
            out.append(_dense_scores(candidates, self.predict(candidates)))
        return torch.cat(out).to(batch.history.device)

    def top_k(self, batch: SessionBatch, k: int) -> tuple[Tensor, Tensor]:
        """(B, k) scores and item indices, best first: from the candidates alone where every
        row has k of them, else the candidates then the other items by GRU4Rec's order (as
        `score`, with the same candidates)."""
        values, indices = [], []
        for _first, part in _row_chunks(batch, self.n_items):
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


def _row_chunks(batch: SessionBatch, n_items: int) -> list[tuple[int, SessionBatch]]:
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


@dataclass(frozen=True, eq=False)
class RankerTable:
    """Every prediction of a split as candidate rows: what the ranker learns and is scored on.

    features (N, F) float32, labels (N,) int8: 1 for the target; group_sizes (G,): the
    candidates of each prediction, in order; per prediction (G,): its session, whether the
    target repeats an item of the session, and `outside` (the target's rank when it is not
    a candidate, by the tie mode: after every candidate, in GRU4Rec's order; 0 when it is).
    """

    features: np.ndarray
    labels: np.ndarray
    group_sizes: np.ndarray
    sessions: np.ndarray
    repeat: np.ndarray
    outside: np.ndarray

    @property
    def recall(self) -> float:
        """The share of predictions whose target is a candidate."""
        return float((self.outside == 0).mean()) if len(self.outside) else 0.0


def ranker_table(
    parts: RankerParts,
    data: SessionData,
    *,
    ties: TieMode = "conservative",
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> RankerTable:
    """The candidate rows of every prediction of `data` (the protocol of
    `gru4rec.scoring.evaluate`), with exact GRU4Rec candidates."""
    builder = FeatureBuilder(parts)
    features, labels, sizes, sessions, repeats, outside = [], [], [], [], [], []
    n_done = 0
    for batch, targets, batch_sessions in scored_steps(parts.gru, data, batch_size):
        targets = targets.cpu()
        for first, part in _row_chunks(batch, parts.gru.n_items):
            rows_targets = targets[first : first + part.history.shape[0]]
            candidates = builder.build(part, dense_gru=True)
            is_target = candidates.items == rows_targets[candidates.rows]
            features.append(candidates.features)
            labels.append(is_target.numpy().astype(np.int8))
            sizes.append(candidates.counts.numpy())
            sessions.append(batch_sessions[first : first + len(rows_targets)])
            repeats.append(repeat_targets(part.history.cpu(), rows_targets).numpy())
            outside.append(_outside_ranks(candidates, rows_targets, is_target, ties))
        n_done += len(targets)
        if progress is not None:
            progress(n_done)
    return RankerTable(
        np.concatenate(features) if features else np.zeros((0, len(FEATURES)), np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.int8),
        np.concatenate(sizes) if sizes else np.zeros(0, np.int64),
        np.concatenate(sessions) if sessions else np.zeros(0, np.int64),
        np.concatenate(repeats) if repeats else np.zeros(0, bool),
        np.concatenate(outside) if outside else np.zeros(0, np.float64),
    )


def _outside_ranks(
    candidates: CandidateRows, targets: Tensor, is_target: Tensor, ties: TieMode
) -> np.ndarray:
    """(B,) the rank of each target that is not a candidate (0 where it is one): after the
    row's candidates, by GRU4Rec's score among the other items."""
    gru = candidates.gru_dense
    assert gru is not None
    n_rows = gru.shape[0]
    inside = torch.zeros(n_rows, dtype=torch.bool)
    inside[candidates.rows[is_target]] = True
    outside_scores = gru.clone()
    outside_scores[candidates.rows, candidates.items] = math.inf  # ranked apart, first
    target_score = gru[torch.arange(n_rows), targets].unsqueeze(1)
    above = (outside_scores > target_score).sum(dim=1) - candidates.counts
    at_or_above = (outside_scores >= target_score).sum(dim=1) - candidates.counts
    rank = {
        "standard": above.double() + 1,
        "conservative": at_or_above.double(),
        "median": (above.double() + 1 + at_or_above.double()) / 2,
    }[ties]
    return torch.where(inside, 0.0, rank + candidates.counts.double()).numpy()


def table_metrics(
    table: RankerTable,
    predicted: np.ndarray,
    *,
    cutoffs: Sequence[int],
    ties: TieMode,
    n_items: int,
) -> dict[str, Any]:
    """The metrics of `gru4rec.scoring.evaluate` (without coverage) from the ranker's
    scores of every candidate row: a target among the candidates is ranked by the
    ranker, one outside keeps its `outside` rank."""
    ends = np.cumsum(table.group_sizes)
    starts = ends - table.group_sizes
    group_of_row = np.repeat(np.arange(len(table.group_sizes)), table.group_sizes)
    target_rows = np.flatnonzero(table.labels == 1)
    target_score = np.full(len(table.group_sizes), np.nan)
    target_score[group_of_row[target_rows]] = predicted[target_rows]
    row_target = target_score[group_of_row]
    above = np.bincount(group_of_row, weights=predicted > row_target, minlength=len(starts))
    at_or_above = np.bincount(group_of_row, weights=predicted >= row_target, minlength=len(starts))
    inside = {
        "standard": above + 1,
        "conservative": at_or_above,
        "median": (above + 1 + at_or_above) / 2,
    }[ties]
    ranks = np.where(table.outside > 0, table.outside, inside)
    accumulator = MetricAccumulator(cutoffs, ties, n_items, coverage=False)
    accumulator.update_ranks(
        torch.from_numpy(ranks.astype(np.float64)), torch.from_numpy(table.repeat)
    )
    return accumulator.result()


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
    """Cross-fitted LambdaMART on `table` (see the module doc): out-of-fold metrics and
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


__all__ = [
    "FEATURES",
    "CandidateRows",
    "FeatureBuilder",
    "RankerFit",
    "RankerParts",
    "RankerScorer",
    "RankerTable",
    "fit_ranker",
    "load_booster",
    "popularity",
    "ranker_table",
    "table_metrics",
]
