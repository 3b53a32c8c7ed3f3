"""Evaluation: tie modes, metrics on crafted scores, and the driver on fake models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.network.data import SessionData
from gru4rec.scoring.contract import SessionBatch, SessionScorer
from gru4rec.scoring.evaluate import MetricAccumulator, NaNScoresError, evaluate, target_ranks

# Row 0: the target (item 1, score 5) ties with items 2 and 3.
# Row 1: all four items tie.   Row 2: no tie, two items above the target.
TIED_SCORES = torch.tensor(
    [[3.0, 5.0, 5.0, 5.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 4.0, 2.0, 3.0, 0.0]]
)
TIED_TARGETS = torch.tensor([1, 0, 2])


@pytest.mark.parametrize(
    ("ties", "expected"),
    [
        ("standard", [1.0, 1.0, 3.0]),  # 1 + #(score > target)
        ("conservative", [3.0, 5.0, 3.0]),  # #(score >= target), the target included
        ("median", [2.0, 3.0, 3.0]),  # (1 + 3) / 2, (1 + 5) / 2, 3
    ],
)
def test_target_ranks_by_tie_mode(ties: str, expected: list[float]) -> None:
    ranks = target_ranks(TIED_SCORES, TIED_TARGETS, ties)  # type: ignore[arg-type]
    assert ranks.tolist() == expected


@pytest.mark.parametrize("ties", ["standard", "conservative", "median"])
def test_ranks_over_many_items_match_a_direct_count(ties: str) -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 50, (7, 2500), generator=generator).float()  # many ties
    targets = torch.randint(0, 2500, (7,), generator=generator)
    target_scores = scores[torch.arange(7), targets].unsqueeze(1)
    above = (scores > target_scores).sum(dim=1).double()
    at_or_above = (scores >= target_scores).sum(dim=1).double()
    expected = {
        "standard": above + 1,
        "conservative": at_or_above,
        "median": (above + 1 + at_or_above) / 2,
    }[ties]
    ranks = target_ranks(scores, targets, ties)  # type: ignore[arg-type]
    assert torch.equal(ranks, expected)


def test_nan_scores_raise_instead_of_ranking() -> None:
    scores = TIED_SCORES.clone()
    scores[2, 4] = float("nan")  # not even the target: a NaN anywhere is a broken model
    with pytest.raises(NaNScoresError, match="1 of 3 rows"):
        target_ranks(scores, TIED_TARGETS, "standard")
    with pytest.raises(NaNScoresError):
        MetricAccumulator([1], "conservative", 5).update(scores, TIED_TARGETS)


def test_metrics_with_ties_by_hand() -> None:
    # Median ranks 2, 3, 3 (see above).
    accumulator = MetricAccumulator([1, 2, 3], "median", n_items=5)
    accumulator.update(TIED_SCORES, TIED_TARGETS)
    metrics = accumulator.result()
    assert metrics["recall@1"] == 0.0
    assert metrics["recall@2"] == pytest.approx(1 / 3)
    assert metrics["recall@3"] == 1.0
    assert metrics["mrr@2"] == pytest.approx((1 / 2) / 3)
    assert metrics["mrr@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 2 / math.log2(4)) / 3)
    assert metrics["n_events"] == 3 and metrics["ties"] == "median"
    assert metrics["cutoffs"] == [1, 2, 3]
    assert "popularity@1" not in metrics


def test_half_ranks_respect_the_cutoff() -> None:
    # Target tied with one other item, below one more: median rank (2 + 3) / 2 = 2.5.
    accumulator = MetricAccumulator([2, 3], "median", n_items=3)
    accumulator.update(torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([0]))
    metrics = accumulator.result()
    assert metrics["recall@2"] == 0.0 and metrics["mrr@2"] == 0.0
    assert metrics["mrr@3"] == pytest.approx(1 / 2.5)
    assert metrics["ndcg@3"] == pytest.approx(1 / math.log2(3.5))


def test_coverage_and_popularity_by_hand() -> None:
    support = np.array([10, 5, 0, 20])  # / max -> 0.5, 0.25, 0, 1
    accumulator = MetricAccumulator([1, 2, 10], "standard", n_items=4, item_support=support)
    # top-1: item 0, then item 3; top-2: {0, 1}, then {3, 2}
    accumulator.update(
        torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]]), torch.tensor([1, 3])
    )
    metrics = accumulator.result()
    assert metrics["coverage@1"] == 2 / 4
    assert metrics["coverage@2"] == 4 / 4
    assert metrics["popularity@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["popularity@2"] == pytest.approx((0.5 + 0.25 + 1.0 + 0.0) / 4)
    # A cutoff beyond the catalogue recommends every item once per event.
    assert metrics["popularity@10"] == pytest.approx((0.5 + 0.25 + 0 + 1) / 4)
    assert metrics["recall@10"] == 1.0 and metrics["coverage@10"] == 1.0
    assert metrics["recall@1"] == 0.5  # row 1's target 3 is its top item


def test_batches_accumulate_like_one_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (40, 9), generator=generator).float()  # many ties
    targets = torch.randint(0, 9, (40,), generator=generator)
    support = np.arange(1, 10)
    whole = MetricAccumulator([1, 3, 5], "median", 9, support)
    whole.update(scores, targets)
    pieces = MetricAccumulator([1, 3, 5], "median", 9, support)
    for rows in torch.split(torch.arange(40), 13):
        pieces.update(scores[rows], targets[rows])
    expected = whole.result()
    got = pieces.result()
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == (pytest.approx(value) if isinstance(value, float) else value)


def test_accumulator_errors() -> None:
    with pytest.raises(InputDataError, match="no prediction events"):
        MetricAccumulator([1], "standard", 3).result()
    with pytest.raises(ConfigError, match="tie mode"):
        MetricAccumulator([1], "optimistic", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cutoffs"):
        MetricAccumulator([0, 5], "standard", 3)
    with pytest.raises(InputDataError, match="unknown items"):
        MetricAccumulator([1], "standard", 3).update(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(ValueError, match="item_support"):
        MetricAccumulator([1], "standard", 3, item_support=np.ones(4))


class NextItemModel(SessionScorer):
    """Scores item (last + 1) mod n best, (last + 2) next, and so on, from the history alone;
    holds a network whose train/eval mode it records."""

    family = "next-item"

    def __init__(self, n_items: int) -> None:
        self._n_items = n_items
        self.network = torch.nn.Linear(1, 1)
        self.modes_seen: set[bool] = set()

    @property
    def n_items(self) -> int:
        return self._n_items

    def networks(self) -> list[torch.nn.Module]:
        return [self.network]

    def score(self, batch: SessionBatch) -> Tensor:
        self.modes_seen.add(self.network.training)
        last = batch.history.gather(1, (batch.lengths - 1).unsqueeze(1)) - 1  # (B, 1)
        items = torch.arange(self.n_items, dtype=torch.float64)
        # score = -(distance ahead of the input, wrapping): 0 for input + 1, -1 for input + 2, ...
        return -torch.remainder(items - last.double() - 1.0, self.n_items)


# With n = 6: every next item of [0, 1, 2] and [3, 4] is input + 1 (rank 1);
# [5, 2]: 2 is 3 places after 5 (rank 3); [2, 0, 1]: 0 is 4 after 2 (rank 4), then rank 1.
KNOWN_SESSIONS = [[0, 1, 2], [3, 4], [5, 2], [2, 0, 1]]
KNOWN_RANKS = [1, 1, 1, 3, 4, 1]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 512])  # 512: more slots than sessions
def test_evaluate_known_answer(batch_size: int) -> None:
    model = NextItemModel(6)
    done: list[int] = []
    metrics = evaluate(
        model,
        SessionData.from_sessions(KNOWN_SESSIONS),
        cutoffs=(1, 3, 5),
        ties="conservative",
        batch_size=batch_size,
        progress=done.append,
    )
    assert metrics["n_events"] == len(KNOWN_RANKS) == 6
    assert metrics["recall@1"] == pytest.approx(4 / 6)
    assert metrics["recall@3"] == pytest.approx(5 / 6)
    assert metrics["recall@5"] == 1.0
    assert metrics["mrr@3"] == pytest.approx((4 + 1 / 3) / 6)
    assert metrics["mrr@5"] == pytest.approx((4 + 1 / 3 + 1 / 4) / 6)
    assert metrics["ndcg@5"] == pytest.approx((4 + 1 / math.log2(4) + 1 / math.log2(5)) / 6)
    # Top items of the inputs 0, 1, 3, 5, 2, 0: 1, 2, 4, 0, 3, 1 -> five of six items.
    assert metrics["coverage@1"] == pytest.approx(5 / 6)
    assert metrics["coverage@3"] == 1.0
    assert done[-1] == 6 and done == sorted(done)
    assert model.modes_seen == {False} and model.network.training  # eval inside, then restored
    # Only [2, 0, 1]'s last target (1) was seen before in its session: rank 1.
    assert metrics["n_repeat_events"] == 0 and metrics["n_new_events"] == 6
    assert "repeat_recall@1" not in metrics and metrics["new_recall@1"] == metrics["recall@1"]


class HistoryModel(SessionScorer):
    """Two tensors of state: the sum of (input + 1) and the step count of the session.

    Its top item is (sum + 2 * count) mod n, so any state carried across sessions, or
    carried to the wrong slot when the batch shrinks, changes the ranks.
    """

    family = "history"

    def __init__(self, n_items: int) -> None:
        self._n_items = n_items

    @property
    def n_items(self) -> int:
        return self._n_items

    def init_state(self, batch_size: int) -> list[Tensor]:
        return [torch.zeros(batch_size, 1, dtype=torch.float64) for _ in range(2)]

    def advance(self, state: list[Tensor], items: Tensor) -> list[Tensor]:
        return [state[0] + items.unsqueeze(1) + 1.0, state[1] + 1.0]

    def score(self, batch: SessionBatch) -> Tensor:
        total, count = batch.state
        items = torch.arange(self.n_items, dtype=torch.float64)
        return -torch.remainder(items - (total + 2.0 * count), self.n_items)


def history_model_ranks(sessions: list[list[int]], n_items: int) -> list[int]:
    """The HistoryModel's target ranks, one session at a time from a zero state."""
    ranks = []
    for session in sessions:
        total = 0
        for count, (item, target) in enumerate(itertools.pairwise(session), 1):
            total += item + 1
            ranks.append((target - (total + 2 * count)) % n_items + 1)
    return ranks


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100])
def test_evaluate_resets_and_shrinks_state_per_session(batch_size: int) -> None:
    rng = np.random.default_rng(5)
    n_items = 7
    sessions = [rng.integers(0, n_items, rng.integers(2, 7)).tolist() for _ in range(25)]
    ranks = np.array(history_model_ranks(sessions, n_items), dtype=float)
    metrics = evaluate(
        HistoryModel(n_items),
        SessionData.from_sessions(sessions),
        cutoffs=(1, 3),
        ties="standard",
        batch_size=batch_size,
    )
    assert metrics["n_events"] == len(ranks)
    assert metrics["recall@3"] == pytest.approx(np.mean(ranks <= 3))
    assert metrics["mrr@3"] == pytest.approx(np.mean(np.where(ranks <= 3, 1 / ranks, 0)))


def test_evaluate_with_no_prediction_event_is_an_error() -> None:
    with pytest.raises(InputDataError, match="no prediction events"):
        evaluate(NextItemModel(3), SessionData.from_sessions([[1], [2]]))


def test_evaluate_splits_repeat_and_new_targets() -> None:
    # Targets 1 and 4 are new to their session (rank 1); the second 0 and the second 3
    # repeat an item of the session and sit 5 places after the last item (rank 5).
    metrics = evaluate(
        NextItemModel(6),
        SessionData.from_sessions([[0, 1, 0], [3, 4, 3]]),
        cutoffs=(1, 5),
        ties="conservative",
    )
    assert (metrics["n_events"], metrics["n_repeat_events"], metrics["n_new_events"]) == (4, 2, 2)
    assert metrics["new_recall@1"] == 1.0 and metrics["new_mrr@5"] == 1.0
    assert metrics["repeat_recall@1"] == 0.0 and metrics["repeat_recall@5"] == 1.0
    assert metrics["repeat_mrr@5"] == pytest.approx(0.2)
    assert metrics["recall@1"] == 0.5 and metrics["mrr@5"] == pytest.approx((2 + 0.4) / 4)
