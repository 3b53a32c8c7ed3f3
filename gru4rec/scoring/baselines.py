"""Non-neural baselines, ranked by the same harness as GRU4Rec
(`gru4rec.scoring.evaluate.evaluate`).

Each baseline is fitted on training sessions and then scores like any model (the contract
of `gru4rec.scoring.contract`): the harness feeds a session's items one by one and ranks
the true next item against ALL items, with the same tie modes, so the comparison with
GRU4Rec is like for like.

    pop    MostPopular     training support of the item
    spop   SessionPopular  count in the current session, then training support (S-POP)
    iknn   ItemKNN         co-occurrence similarity to the current (last) item
    sknn   SKNN            session-based kNN over item sets
    vsknn  VSKNN           session-based kNN with position-decayed weights (V-SKNN)

Each baseline scores from the session's history alone, a (B, W) int64 tensor of item
index + 1, left-aligned, 0 = empty (`gru4rec.scoring.contract.SessionBatch`).

Sources: Hidasi et al., "Session-based recommendations with recurrent neural networks"
(ICLR 2016), item-kNN baseline; Ludewig & Jannach, "Evaluation of session-based
recommendation algorithms" (UMUAI 28, 2018), S-POP, SKNN and V-SKNN; their public
session-rec framework (github.com/rn5l/session-rec), whose defaults and tuned settings
are cited field by field below. Differences from session-rec are listed per class.

Example:
    >>> train, _ = load_split("data/diginetica", "train")
    >>> test, _ = load_split("data/diginetica", "test")
    >>> model = fit_baseline("sknn", train, n_items=len(load_items("data/diginetica")), k=100)
    >>> evaluate(model, test, cutoffs=(20,), ties="conservative")["recall@20"]
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

import numpy as np
import torch
from torch import Tensor

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.network.data import SessionData
from gru4rec.scoring.contract import SessionBatch, SessionScorer

logger = logging.getLogger(__name__)

PositionWeighting = Literal["linear", "same", "div", "quadratic", "log"]
StepWeighting = Literal["div", "same", "linear", "quadratic", "log"]

_PAIR_CHUNK = 20_000_000  # item pairs materialised at once while counting co-occurrences

_BaselineT = TypeVar("_BaselineT", bound="Baseline")


class Baseline(SessionScorer):
    """What every baseline shares: fitting, and the scoring contract (`gru4rec.scoring.contract`),
    reading only each session's history.

    Subclasses are dataclasses whose fields are the hyperparameters; they implement
    `_fit(data)` (precompute from training sessions) and `_score(history)` -> (B, n_items).
    """

    name: ClassVar[str]
    _n_items: int | None = None

    @property
    def family(self) -> str:  # type: ignore[override]
        return self.name

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        """Raise ConfigError for out-of-range hyperparameters (nothing to check by default)."""

    def fit(self: _BaselineT, data: SessionData, n_items: int) -> _BaselineT:
        """Precompute what scoring needs from the training sessions; returns self.

        Args:
            data: training sessions, item indices in 0..n_items-1, in time order (the
                kNN baselines take later sessions as more recent).
            n_items: number of items ranked (the item map's size).
        """
        if n_items < 1:
            raise ConfigError(f"n_items must be >= 1, got {n_items}")
        if data.n_events == 0:
            raise InputDataError(f"{self.name}: no training events to fit on")
        low, high = int(data.item_idx.min()), int(data.item_idx.max())
        if low < 0 or high >= n_items:
            raise InputDataError(
                f"{self.name}: training item indices span {low}..{high}, outside 0..{n_items - 1}; "
                "load the split with the same item map as n_items."
            )
        self._n_items = n_items
        self._fit(data)
        return self

    def _fit(self, data: SessionData) -> None:
        raise NotImplementedError

    def _score(self, history: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        if self._n_items is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(data, n_items)")
        return self._n_items

    def score(self, batch: SessionBatch) -> Tensor:
        """(B, n_items) scores of every item after the sessions' histories."""
        return self._score(batch.history.cpu()).to(batch.history.device)


@dataclass(eq=False)
class MostPopular(Baseline):
    """POP: every session gets the items with the most training events, most first."""

    name: ClassVar[str] = "pop"

    def _fit(self, data: SessionData) -> None:
        support = np.bincount(data.item_idx, minlength=self.n_items)
        self._support = torch.as_tensor(support, dtype=_exact_dtype(int(support.max())))

    def _score(self, history: Tensor) -> Tensor:
        return self._support.expand(history.shape[0], -1)  # a view: no (B, n_items) copy


@dataclass(eq=False)
class SessionPopular(Baseline):
    """S-POP (Ludewig & Jannach 2018): items of the current session first, by how often they
    occur in it; ties and all other items by training support.

    session-rec scores `count + support / (support + 1)`. Here the score is
    `count * (n_levels + 1) + level`, `level` the rank of the item's support among the
    distinct supports: the same order and the same ties, in exact integers (float32 while
    they fit, which halves the harness's work against float64). session-rec also zeroes the
    support of items outside the 100 most popular (`top_n`), which cannot change a top-20.
    """

    name: ClassVar[str] = "spop"

    def _fit(self, data: SessionData) -> None:
        support = np.bincount(data.item_idx, minlength=self.n_items)
        levels, level = np.unique(support, return_inverse=True)
        self._count_scale = len(levels) + 1
        self._level = torch.as_tensor(level)  # (n_items,) int64

    def _score(self, history: Tensor) -> Tensor:
        batch_size, width = history.shape
        dtype = _exact_dtype((width + 1) * self._count_scale)
        scores = self._level.to(dtype).expand(batch_size, -1).clone()  # (B, n_items)
        # One count_scale per occurrence; padding (0) adds nothing, to column 0.
        occurrences = (history != 0).to(dtype) * self._count_scale
        return scores.scatter_add_(1, (history - 1).clamp(min=0), occurrences)


@dataclass(eq=False)
class ItemKNN(Baseline):
    """Item-kNN (Hidasi et al. 2016): score = similarity of each item to the CURRENT item,

        sim(i, j) = n(i, j) / ((n(i) + lmbd) ** alpha * (n(j) + lmbd) ** (1 - alpha)),

    n(i, j) the training sessions holding both items, n(i) those holding i; alpha = 0.5 is
    the regularised cosine. Defaults: session-rec's `ItemKNN` (itself Hidasi's GRU4Rec
    baseline code). session-rec counts events rather than sessions, which differs only for
    items that recur within a session (consecutive repeats are removed by `prepare`).
    """

    name: ClassVar[str] = "iknn"
    n_sims: int = 100  # neighbours kept per item, others score 0 (session-rec default; >= cutoff)
    lmbd: float = 20.0  # support regulariser, damps rare items' chance co-occurrences (default)
    alpha: float = 0.5  # 0.5 = cosine, 1.0 = confidence of the rule i -> j (default)

    def _validate(self) -> None:
        _require(self.n_sims >= 1, "n_sims", self.n_sims, ">= 1")
        _require(self.lmbd >= 0, "lmbd", self.lmbd, ">= 0")
        _require(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "in [0, 1]")

    def _fit(self, data: SessionData) -> None:
        n = self.n_items
        session_ptr, session_items = _distinct_session_items(data, n)
        support = np.bincount(session_items, minlength=n).astype(np.float64)  # sessions per item
        first, second, together = _co_occurrences(session_ptr, session_items, n)
        similarity = together / (
            (support[first] + self.lmbd) ** self.alpha
            * (support[second] + self.lmbd) ** (1.0 - self.alpha)
        )
        # The n_sims most similar items of each item (ties: lower index first).
        order = np.lexsort((second, -similarity, first))
        first, second, similarity = first[order], second[order], similarity[order]
        rank = np.arange(len(first)) - np.searchsorted(first, first)
        kept = rank < self.n_sims
        width = max(1, int(rank[kept].max()) + 1) if kept.any() else 1
        # Padding points an item at itself with similarity 0: it is never its own neighbour.
        neighbours = np.repeat(np.arange(n, dtype=np.int64)[:, None], width, axis=1)
        similarities = np.zeros((n, width), dtype=np.float32)
        neighbours[first[kept], rank[kept]] = second[kept]
        similarities[first[kept], rank[kept]] = similarity[kept]
        self._neighbours = torch.from_numpy(neighbours)  # (n_items, width)
        self._similarities = torch.from_numpy(similarities)  # (n_items, width)

    def _score(self, history: Tensor) -> Tensor:
        lengths = (history != 0).sum(dim=1)  # (B,)
        current = history.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1) - 1
        scores = torch.zeros(history.shape[0], self.n_items, dtype=torch.float32)
        return scores.scatter_(1, self._neighbours[current], self._similarities[current])


class _SessionKNNBase(Baseline):
    """The neighbourhood machinery SKNN and V-SKNN share (Ludewig & Jannach 2018, sec. 3).

    Candidates are the training sessions holding any item of the current session; of those,
    the `sample_size` most recent; of those, the `k` most similar are the neighbours; an
    item scores the summed (weighted) similarity of the neighbours that hold it. Recency is
    the session's position in the training data (sessions are ordered by start time; the
    reference orders by their last event, which SessionData does not keep). Ties in
    similarity go to the more recent session.
    """

    k: int
    sample_size: int

    def _validate(self) -> None:
        _require(self.k >= 1, "k", self.k, ">= 1")
        _require(self.sample_size >= 0, "sample_size", self.sample_size, ">= 0 (0 = all)")

    def _fit(self, data: SessionData) -> None:
        n = self.n_items
        self._session_ptr, self._session_items = _distinct_session_items(data, n)
        self._session_size = np.diff(self._session_ptr)  # (n_sessions,) distinct items
        self._n_sessions = len(self._session_size)
        # Inverted index: item i's sessions, ascending (oldest first), are
        # item_sessions[item_ptr[i]:item_ptr[i+1]].
        session_of = np.repeat(np.arange(self._n_sessions, dtype=np.int64), self._session_size)
        order = np.argsort(self._session_items, kind="stable")
        self._item_sessions = session_of[order]
        self._item_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._session_items, minlength=n), out=self._item_ptr[1:])

    def _candidates(self, rows: np.ndarray, items: np.ndarray, batch_size: int) -> _Candidates:
        """Group the sessions of each row's distinct items by (row, session), recent ones only.

        rows, items: (E,) one entry per distinct item of each row's session.
        """
        n_sessions = self._n_sessions
        starts, ends = self._item_ptr[items], self._item_ptr[items + 1]
        counts = ends - starts
        if self.sample_size:
            # The `sample_size` most recent sessions of a union are among the `sample_size`
            # most recent of each list, and the overlap counts of those stay exact.
            counts = np.minimum(counts, self.sample_size)
        hits = self._item_sessions[_concat_ranges(ends - counts, counts)]  # (H,)
        hit_entry = np.repeat(np.arange(len(rows)), counts)  # (H,) which entry each hit is of
        key = rows[hit_entry] * n_sessions + hits
        order = np.argsort(key, kind="stable")
        key = key[order]
        group_start = np.flatnonzero(np.diff(key, prepend=-1))  # (G,) into the sorted hits
        group_row = key[group_start] // n_sessions
        group_session = key[group_start] % n_sessions
        if self.sample_size:
            # Groups are sorted by (row, session): keep the last `sample_size` of each row.
            row_end = np.cumsum(np.bincount(group_row, minlength=batch_size))
            from_end = row_end[group_row] - 1 - np.arange(len(group_row))
            recent = from_end < self.sample_size
        else:
            recent = np.ones(len(group_row), dtype=bool)
        return _Candidates(
            row=group_row,
            session=group_session,
            start=group_start,
            entry=hit_entry[order],
            recent=recent,
        )

    def _top_k(self, row: np.ndarray, session: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        """Indices of each row's k most similar candidates (ties: the more recent session)."""
        order = np.lexsort((-session, -similarity, row))
        sorted_row = row[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_row, sorted_row)
        return order[rank < self.k]

    def _scores_from_neighbours(
        self,
        batch_size: int,
        row: np.ndarray,
        session: np.ndarray,
        weight: np.ndarray,
        item_factor: np.ndarray | None = None,
    ) -> Tensor:
        """(B, n_items) float32: each item sums `weight` of the neighbour sessions holding it,
        times `item_factor[item]` when given."""
        counts = self._session_size[session]
        items = self._session_items[_concat_ranges(self._session_ptr[session], counts)]
        values = np.repeat(weight, counts)
        if item_factor is not None:
            values = values * item_factor[items]
        flat = np.repeat(row, counts) * self.n_items + items
        scores = torch.zeros(batch_size * self.n_items, dtype=torch.float32)
        scores.index_add_(0, torch.from_numpy(flat), torch.from_numpy(values.astype(np.float32)))
        return scores.view(batch_size, self.n_items)


@dataclass(eq=False)
class SKNN(_SessionKNNBase):
    """SKNN (Ludewig & Jannach 2018; Jannach & Ludewig 2017): neighbours by the cosine of
    binary item sets, |s ∩ n| / sqrt(|s| |n|); an item scores the summed similarity of
    the k neighbours holding it.

    Defaults: session-rec's `ContextKNN` documentation (k 100, sample 500, recent sampling)
    and its DIGINETICA setting (conf/save/diginetica/window/window_digi_baselines.yml: k 100,
    sample 500, cosine). session-rec's cosine (`li / sqrt(la) * sqrt(lb)`, a precedence
    slip) differs from the true cosine by a factor constant per query: same neighbours,
    same ranking. Its final division by the maximum score does not change the ranking.
    """

    name: ClassVar[str] = "sknn"
    k: int = 100  # neighbour sessions that vote (session-rec default and DIGINETICA setting)
    sample_size: int = 500  # most recent candidate sessions searched; 0 = all (same sources)

    def _score(self, history: Tensor) -> Tensor:
        batch_size = history.shape[0]
        rows, items, _positions, _lengths = _distinct_items(history.numpy(), self.n_items)
        n_distinct = np.bincount(rows, minlength=batch_size)  # (B,)
        found = self._candidates(rows, items, batch_size)
        overlap = np.diff(np.append(found.start, len(found.entry)))  # (G,) |s ∩ n|
        keep = found.recent
        row, session, overlap = found.row[keep], found.session[keep], overlap[keep]
        similarity = overlap / np.sqrt(n_distinct[row] * self._session_size[session])
        top = self._top_k(row, session, similarity)
        return self._scores_from_neighbours(batch_size, row[top], session[top], similarity[top])


@dataclass(eq=False)
class VSKNN(_SessionKNNBase):
    """V-SKNN (Ludewig & Jannach 2018): the current session is a vector whose last item
    weighs 1 and earlier items less (`weighting`); similarity is its dot product with a
    neighbour's binary item vector (divided by the number of distinct current items, as in
    session-rec). A neighbour's vote is damped by how far back the most recent item it
    shares lies (`weighting_score`), and optionally boosted per item by its IDF.

    An item seen twice takes the weight of its last position. Defaults: k, sample_size and
    weighting_score from session-rec's `VMContextKNN` (k 100, sample 1000, div; also its
    YOOCHOOSE setting k 100 / sample 1000), the linear decay the paper describes, and IDF
    off (session-rec's default). Tuned for DIGINETICA in session-rec
    (window_digi_baselines.yml): k 500, sample 5000, quadratic, div, idf_weighting 5.

    Differences from session-rec, all in its `linear` decays, which can go negative or
    drop the most recent items of sessions longer than 10 (`1 - 0.1 (L - i) if i <= 10
    else 0`): here the position weight is max(0, 1 - 0.1 (L - i)) at every position, and
    the linear step decay max(0, 1 - 0.1 step).
    """

    name: ClassVar[str] = "vsknn"
    k: int = 100  # neighbour sessions that vote (session-rec default)
    sample_size: int = 1000  # most recent candidate sessions searched; 0 = all (default)
    weighting: PositionWeighting = "linear"  # position weight, position i of L (the paper)
    weighting_score: StepWeighting = "div"  # vote damping by the shared item's step back
    idf_weighting: float = 0.0  # vote *= 1 + idf_weighting * ln(n_sessions / support); 0 = off

    def _validate(self) -> None:
        super()._validate()
        _require_choice("weighting", self.weighting, PositionWeighting)
        _require_choice("weighting_score", self.weighting_score, StepWeighting)
        _require(self.idf_weighting >= 0, "idf_weighting", self.idf_weighting, ">= 0")

    def _fit(self, data: SessionData) -> None:
        super()._fit(data)
        # session-rec: ln(number of sessions / number of events of the item).
        events = np.maximum(np.bincount(data.item_idx, minlength=self.n_items), 1)
        self._idf = np.log(data.n_sessions / events)  # (n_items,)

    def _score(self, history: Tensor) -> Tensor:
        batch_size = history.shape[0]
        rows, items, positions, lengths = _distinct_items(history.numpy(), self.n_items)
        n_distinct = np.bincount(rows, minlength=batch_size)  # (B,)
        item_weight = position_weights(self.weighting, positions, lengths[rows])  # (E,)
        found = self._candidates(rows, items, batch_size)
        if not len(found.row):  # no training session holds any current item
            return torch.zeros(batch_size, self.n_items, dtype=torch.float32)
        weight_sum = np.add.reduceat(item_weight[found.entry], found.start)  # (G,)
        last_shared = np.maximum.reduceat(positions[found.entry], found.start)  # (G,)
        row, session = found.row, found.session
        similarity = weight_sum / n_distinct[row]
        keep = found.recent & (similarity > 0)
        row, session = row[keep], session[keep]
        similarity, last_shared = similarity[keep], last_shared[keep]
        top = self._top_k(row, session, similarity)
        step = lengths[row[top]] - last_shared[top] + 1  # 1 = shares the current item
        vote = similarity[top] * step_weights(self.weighting_score, step)
        factor = 1.0 + self.idf_weighting * self._idf if self.idf_weighting else None
        return self._scores_from_neighbours(batch_size, row[top], session[top], vote, factor)


def position_weights(kind: str, position: np.ndarray, length: np.ndarray) -> np.ndarray:
    """V-SKNN weight of the item at 1-based `position` of a session of `length` (last = 1
    for every kind but `log`, whose last item weighs 1 / log10(1.7))."""
    position, length = position.astype(np.float64), length.astype(np.float64)
    if kind == "same":
        return np.ones_like(position)
    if kind == "div":
        return position / length
    if kind == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * (length - position))
    if kind == "quadratic":
        return (position / length) ** 2
    if kind == "log":
        return 1.0 / np.log10(length - position + 1.7)
    raise ConfigError(
        f"unknown weighting {kind!r}; use one of {', '.join(get_args(PositionWeighting))}"
    )


def step_weights(kind: str, step: np.ndarray) -> np.ndarray:
    """V-SKNN damping of a neighbour whose most recent shared item is `step` back (1 = last)."""
    step = step.astype(np.float64)
    if kind == "same":
        return np.ones_like(step)
    if kind == "div":
        return 1.0 / step
    if kind == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * step)
    if kind == "quadratic":
        return 1.0 / step**2
    if kind == "log":
        return 1.0 / np.log10(step + 1.7)
    raise ConfigError(
        f"unknown weighting_score {kind!r}; use one of {', '.join(get_args(StepWeighting))}"
    )


BASELINES: dict[str, type[Baseline]] = {
    "pop": MostPopular,
    "spop": SessionPopular,
    "iknn": ItemKNN,
    "sknn": SKNN,
    "vsknn": VSKNN,
}


def fit_baseline(name: str, data: SessionData, n_items: int, **params: Any) -> Baseline:
    """Build the baseline `name` (a key of BASELINES) with `params` and fit it.

    Parameter values may be strings (as from a command line): they are parsed to the
    field's type. Unknown names and out-of-range values raise ConfigError.

    Example:
        >>> model = fit_baseline("vsknn", train, n_items, k="500", idf_weighting=5)
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
    kind = BASELINES[name]
    types = typing.get_type_hints(kind)
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(names))
    if unknown:
        valid = ", ".join(names) if names else "none"
        raise ConfigError(f"{name} has no parameter {', '.join(unknown)}; its parameters: {valid}.")
    values = {key: _parse(name, key, value, types[key]) for key, value in params.items()}
    model = kind(**values)
    logger.info("fitting %s %s on %d sessions", name, values, data.n_sessions)
    return model.fit(data, n_items)


class _Candidates(typing.NamedTuple):
    """Candidate sessions of a batch, one group per (row, session), sorted by row then session.

    row, session: (G,) int64; start: (G,) where the group's hits begin in `entry`;
    entry: (H,) the (row, distinct item) entry behind each hit, grouped;
    recent: (G,) bool, among the row's `sample_size` most recent candidates.
    """

    row: np.ndarray
    session: np.ndarray
    start: np.ndarray
    entry: np.ndarray
    recent: np.ndarray


def _exact_dtype(largest: int) -> torch.dtype:
    """float32 when every integer up to `largest` is exact in it, else float64."""
    return torch.float32 if largest < 2**24 else torch.float64


def _distinct_items(
    history: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's distinct items and the 1-based position of their last occurrence.

    Returns rows, items, positions: (E,) int64 sorted by (row, item); lengths: (B,) int64.
    """
    lengths = np.count_nonzero(history, axis=1).astype(np.int64)
    rows, columns = np.nonzero(history)
    items = history[rows, columns] - 1
    key = rows * n_items + items
    order = np.lexsort((columns, key))  # by (row, item), then position
    key = key[order]
    is_last = np.ones(len(key), dtype=bool)
    is_last[:-1] = key[1:] != key[:-1]
    last = order[is_last]
    return rows[last], items[last], columns[last].astype(np.int64) + 1, lengths


def _distinct_session_items(data: SessionData, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each training session's distinct items (ascending): (n_sessions + 1,) ptr, (P,) items."""
    session_of = np.repeat(np.arange(data.n_sessions, dtype=np.int64), data.session_lengths)
    pairs = np.unique(session_of * n_items + data.item_idx)  # sorted by (session, item)
    sessions, items = pairs // n_items, pairs % n_items
    ptr = np.zeros(data.n_sessions + 1, dtype=np.int64)
    np.cumsum(np.bincount(sessions, minlength=data.n_sessions), out=ptr[1:])
    return ptr, items


def _co_occurrences(
    session_ptr: np.ndarray, session_items: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair of distinct items sharing a session, with its number of sessions.

    Returns first, second: (P,) int64 sorted by (first, second); together: (P,) float64.
    A session of m items gives m * m pairs, materialised in chunks of sessions.
    """
    sizes = np.diff(session_ptr)
    squares = sizes * sizes
    cumulative = np.cumsum(squares)
    codes: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    start = 0
    while start < len(sizes):
        budget = (cumulative[start - 1] if start else 0) + _PAIR_CHUNK
        end = max(int(np.searchsorted(cumulative, budget, side="right")), start + 1)
        chunk = np.arange(start, end)
        pair_session = np.repeat(chunk, squares[chunk])
        within = np.arange(len(pair_session)) - np.repeat(
            np.cumsum(squares[chunk]) - squares[chunk], squares[chunk]
        )  # 0 .. m*m-1 inside each session
        size = sizes[pair_session]
        base = session_ptr[pair_session]
        first = session_items[base + within // size]
        second = session_items[base + within % size]
        distinct = first != second
        code, count = np.unique(first[distinct] * n_items + second[distinct], return_counts=True)
        codes.append(code)
        counts.append(count)
        start = end
    if not codes:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    all_codes = np.concatenate(codes)
    all_counts = np.concatenate(counts)
    if len(codes) > 1:  # the same pair can come from several chunks
        order = np.argsort(all_codes, kind="stable")
        all_codes, all_counts = all_codes[order], all_counts[order]
        group = np.flatnonzero(np.diff(all_codes, prepend=-1))
        all_counts = np.add.reduceat(all_counts, group)
        all_codes = all_codes[group]
    return all_codes // n_items, all_codes % n_items, all_counts.astype(np.float64)


def _concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]), vectorised."""
    total = int(lengths.sum())
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _require(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _require_choice(key: str, value: str, kind: Any) -> None:
    choices = get_args(kind)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(choices)}")


def _parse(name: str, key: str, value: Any, kind: Any) -> Any:
    """A command-line string as the field's type (other values pass through)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if get_origin(kind) is Literal:
        return text
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{name}: {key}={value!r} is not a valid {kind.__name__}") from None
    return text


__all__ = [
    "BASELINES",
    "SKNN",
    "VSKNN",
    "Baseline",
    "ItemKNN",
    "MostPopular",
    "SessionPopular",
    "fit_baseline",
    "position_weights",
    "step_weights",
]
