"""Baselines: hand-computed scores on tiny sessions, brute-force references, and the contract
that every baseline runs through the evaluation harness like a model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.network.data import SessionData, load_items, load_split
from gru4rec.scoring.baselines import (
    BASELINES,
    SKNN,
    VSKNN,
    Baseline,
    ItemKNN,
    MostPopular,
    SessionPopular,
    fit_baseline,
    position_weights,
    step_weights,
)
from gru4rec.scoring.contract import SessionCursor
from gru4rec.scoring.evaluate import evaluate

# Four training sessions, oldest first (A is the oldest, D the most recent).
#   A {0, 1, 2}   B {0, 1}   C {1, 3}   D {0, 2, 3}      item 4 never occurs
# sessions holding each item: n(0) = 3, n(1) = 3, n(2) = 2, n(3) = 2
KNN_TRAIN = SessionData.from_sessions([[0, 1, 2], [0, 1], [1, 3], [0, 2, 3]])
N_ITEMS = 5


def scores_after(model: Baseline, sessions: list[list[int]]) -> Tensor:
    """(B, n_items) scores after feeding equally long sessions step by step, as the harness does."""
    columns = torch.tensor(sessions, dtype=torch.int64).T  # (T, B)
    cursor = SessionCursor(model)
    for inputs in columns:
        batch = cursor.step(inputs, None, torch.zeros(len(sessions), dtype=torch.bool))
    return model.score(batch)


# --- POP and S-POP -----------------------------------------------------------------------


def test_pop_scores_training_support_whatever_the_session() -> None:
    train = SessionData.from_sessions([[1, 2], [1, 3], [1, 2, 3], [4, 1]])
    model = MostPopular().fit(train, N_ITEMS)
    scores = scores_after(model, [[0, 4], [3, 2]])
    expected = torch.tensor([0.0, 4.0, 2.0, 2.0, 1.0])
    assert torch.equal(scores, expected.expand(2, -1))


def test_spop_ranks_session_items_by_count_then_the_rest_by_support() -> None:
    train = SessionData.from_sessions([[1, 2], [1, 3], [1, 2, 3], [4, 1]])  # support 0 4 2 2 1
    model = SessionPopular().fit(train, N_ITEMS)
    scores = scores_after(model, [[4, 0, 4]])[0]
    # 4 (twice in the session) > 0 (once, though never in training) > 1 > 2 == 3 (support 2)
    assert scores[4] > scores[0] > scores[1] > scores[2]
    assert scores[2] == scores[3]


def test_spop_breaks_count_ties_by_support() -> None:
    train = SessionData.from_sessions([[1, 2], [1, 3], [1, 2, 3], [4, 1]])
    model = SessionPopular().fit(train, N_ITEMS)
    scores = scores_after(model, [[4, 1]])[0]
    assert scores[1] > scores[4] > scores[2]  # both once in the session: support 4 beats 1


# --- item-kNN ----------------------------------------------------------------------------


def test_iknn_cosine_similarity_to_the_current_item_by_hand() -> None:
    model = ItemKNN(lmbd=0.0).fit(KNN_TRAIN, N_ITEMS)
    scores = scores_after(model, [[3, 0]])[0]  # the current item is 0; item 3 before it is ignored
    # n(0,1) = 2 of 3 and 3; n(0,2) = 2 of 3 and 2; n(0,3) = 1 of 3 and 2
    expected = [0.0, 2 / 3, 2 / math.sqrt(6), 1 / math.sqrt(6), 0.0]
    assert scores.tolist() == pytest.approx(expected, rel=1e-6)


def test_iknn_regularisation_and_alpha() -> None:
    regularised = scores_after(ItemKNN().fit(KNN_TRAIN, N_ITEMS), [[0]])[0]
    assert regularised[1].item() == pytest.approx(2 / math.sqrt(23 * 23))  # lmbd 20
    assert regularised[2].item() == pytest.approx(2 / math.sqrt(23 * 22))
    confidence = scores_after(ItemKNN(lmbd=0.0, alpha=1.0).fit(KNN_TRAIN, N_ITEMS), [[0]])[0]
    assert confidence[:4].tolist() == pytest.approx([0.0, 2 / 3, 2 / 3, 1 / 3])  # n(0,j) / n(0)


def test_iknn_keeps_only_the_n_sims_most_similar_items() -> None:
    scores = scores_after(ItemKNN(lmbd=0.0, n_sims=1).fit(KNN_TRAIN, N_ITEMS), [[0]])[0]
    assert scores.tolist() == pytest.approx([0.0, 0.0, 2 / math.sqrt(6), 0.0, 0.0])


def test_iknn_matches_a_dense_computation_on_random_sessions() -> None:
    rng = np.random.default_rng(0)
    sessions = [list(rng.choice(30, size=rng.integers(1, 7))) for _ in range(200)]
    train = SessionData.from_sessions(sessions)
    incidence = np.zeros((len(sessions), 30))
    for s, items in enumerate(sessions):
        incidence[s, items] = 1.0
    together = incidence.T @ incidence
    support = np.diag(together).copy()
    np.fill_diagonal(together, 0.0)
    expected = together / np.sqrt(np.outer(support + 20.0, support + 20.0))
    model = ItemKNN(n_sims=30).fit(train, 30)
    scores = scores_after(model, [[item] for item in range(30)])
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-7)


# --- SKNN --------------------------------------------------------------------------------


def test_sknn_neighbour_scores_by_hand() -> None:
    # Current session {1, 3}: cosine A 1/sqrt(6), B 1/2, C 1, D 1/sqrt(6).
    two = scores_after(SKNN(k=2).fit(KNN_TRAIN, N_ITEMS), [[1, 3]])[0]
    assert two.tolist() == pytest.approx([0.5, 1.5, 0.0, 1.0, 0.0])  # neighbours C and B
    # A third neighbour: A and D tie at 1/sqrt(6); the more recent D wins.
    three = scores_after(SKNN(k=3).fit(KNN_TRAIN, N_ITEMS), [[1, 3]])[0]
    d = 1 / math.sqrt(6)
    assert three.tolist() == pytest.approx([0.5 + d, 1.5, d, 1.0 + d, 0.0], rel=1e-6)


def test_sknn_searches_only_the_most_recent_candidate_sessions() -> None:
    scores = scores_after(SKNN(sample_size=2).fit(KNN_TRAIN, N_ITEMS), [[1, 3]])[0]
    d = 1 / math.sqrt(6)  # candidates C and D only, though A and B also hold item 1
    assert scores.tolist() == pytest.approx([d, 1.0, d, 1.0 + d, 0.0], rel=1e-6)


# --- V-SKNN ------------------------------------------------------------------------------


def test_position_and_step_weights_by_hand() -> None:
    positions, length = np.arange(1, 5), np.full(4, 4)
    assert position_weights("linear", positions, length).tolist() == pytest.approx(
        [0.7, 0.8, 0.9, 1.0]
    )
    assert position_weights("div", positions, length).tolist() == [0.25, 0.5, 0.75, 1.0]
    assert position_weights("quadratic", positions, length).tolist() == [1 / 16, 1 / 4, 9 / 16, 1.0]
    assert position_weights("same", positions, length).tolist() == [1.0] * 4
    assert position_weights("log", positions, length)[-1] == pytest.approx(1 / math.log10(1.7))
    # Linear decay reaches 0 ten steps back and stays there (session-rec goes negative).
    assert position_weights("linear", np.array([1, 2]), np.array([12, 12])).tolist() == [0.0, 0.0]
    steps = np.array([1, 2, 3, 12])
    assert step_weights("div", steps).tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 12])
    assert step_weights("linear", steps).tolist() == pytest.approx([0.9, 0.8, 0.7, 0.0])
    assert step_weights("quadratic", steps).tolist() == pytest.approx([1, 1 / 4, 1 / 9, 1 / 144])


def test_vsknn_scores_by_hand() -> None:
    # Session 0, 1, 3 (linear weights 0.8, 0.9, 1.0; 3 distinct items):
    #   sim A = B = 1.7 / 3 (share 0, 1; most recent shared 1 is 2 steps back, vote / 2)
    #   sim C = 1.9 / 3, sim D = 1.8 / 3 (both share the current item 3: step 1)
    model = VSKNN().fit(KNN_TRAIN, N_ITEMS)
    scores = scores_after(model, [[0, 1, 3]])[0]
    a = b = 1.7 / 3 / 2
    c, d = 1.9 / 3, 1.8 / 3
    expected = [a + b + d, a + b + c, a + d, c + d, 0.0]
    assert scores.tolist() == pytest.approx(expected, rel=1e-6)
    # k = 2 keeps the two most similar, C and D.
    top_two = scores_after(VSKNN(k=2).fit(KNN_TRAIN, N_ITEMS), [[0, 1, 3]])[0]
    assert top_two.tolist() == pytest.approx([d, c, d, c + d, 0.0], rel=1e-6)


def test_vsknn_idf_boosts_rare_items() -> None:
    # idf = ln(4 sessions / events): items 0 and 1 occur 3 times, 2 and 3 twice.
    plain = scores_after(VSKNN().fit(KNN_TRAIN, N_ITEMS), [[0, 1, 3]])[0]
    boosted = scores_after(VSKNN(idf_weighting=2.0).fit(KNN_TRAIN, N_ITEMS), [[0, 1, 3]])[0]
    for item, events in [(0, 3), (1, 3), (2, 2), (3, 2)]:
        factor = 1 + 2.0 * math.log(4 / events)
        assert boosted[item].item() == pytest.approx(plain[item].item() * factor, rel=1e-6)


def test_vsknn_repeated_item_takes_its_last_position() -> None:
    # Session 0, 1, 0: item 0 weighs 1.0 (position 3), item 1 weighs 0.9; 2 distinct items.
    # B {0, 1}: sim 1.9 / 2, step 1. A {0, 1, 2}: the same. D {0, 2, 3}: 1.0 / 2, step 1.
    # C {1, 3}: 0.9 / 2, its shared item 1 is 2 steps back: vote / 2.
    model = VSKNN(weighting="linear", weighting_score="div").fit(KNN_TRAIN, N_ITEMS)
    scores = scores_after(model, [[0, 1, 0]])[0]
    a = b = 1.9 / 2
    c, d = 0.9 / 2 / 2, 1.0 / 2
    assert scores.tolist() == pytest.approx([a + b + d, a + b + c, a + d, c + d, 0.0], rel=1e-6)


# --- brute-force references for the kNN baselines -----------------------------------------


def _reference_knn(
    train: list[list[int]],
    session: list[int],
    n_items: int,
    k: int,
    sample_size: int,
    vector: bool,
    weighting: str = "linear",
    weighting_score: str = "div",
) -> np.ndarray:
    """session-rec's loop, one session at a time (with this module's recency and ties)."""
    sets = [set(s) for s in train]
    current = set(session)
    candidates = [s for s, items in enumerate(sets) if items & current]
    if sample_size:
        candidates = sorted(candidates)[-sample_size:]
    length = len(session)
    weight = {}
    for position, item in enumerate(session, start=1):
        weight[item] = position_weights(weighting, np.array([position]), np.array([length]))[0]
    neighbours = []
    for s in candidates:
        if vector:
            similarity = sum(weight[i] for i in sets[s] & current) / len(weight)
        else:
            similarity = len(sets[s] & current) / math.sqrt(len(sets[s]) * len(current))
        if similarity > 0:
            neighbours.append((similarity, s))
    neighbours.sort(reverse=True)  # similarity, then the more recent session
    scores = np.zeros(n_items)
    for similarity, s in neighbours[:k]:
        vote = similarity
        if vector:
            step = next(st for st, i in enumerate(reversed(session), start=1) if i in sets[s])
            vote *= step_weights(weighting_score, np.array([step]))[0]
        for item in sets[s]:
            scores[item] += vote
    return scores


@pytest.mark.parametrize(
    ("model", "vector"),
    [
        (SKNN(k=5, sample_size=12), False),
        (SKNN(k=50, sample_size=0), False),
        (VSKNN(k=5, sample_size=12), True),
        (VSKNN(k=7, sample_size=20, weighting="div", weighting_score="quadratic"), True),
    ],
    ids=["sknn", "sknn-all", "vsknn", "vsknn-div"],
)
def test_session_knn_matches_a_brute_force_reference(model: Baseline, vector: bool) -> None:
    rng = np.random.default_rng(1)
    train = [list(rng.choice(25, size=rng.integers(2, 8))) for _ in range(150)]
    model.fit(SessionData.from_sessions(train), 25)
    sessions = [list(rng.choice(25, size=6)) for _ in range(9)]  # repeats included
    columns = torch.tensor(sessions).T
    cursor = SessionCursor(model)
    for t, inputs in enumerate(columns):
        scores = model.score(cursor.step(inputs, None, np.zeros(len(sessions), bool))).numpy()
        for row, session in enumerate(sessions):
            options = {
                "k": model.k,  # type: ignore[attr-defined]
                "sample_size": model.sample_size,  # type: ignore[attr-defined]
                "vector": vector,
            }
            if vector:
                options["weighting"] = model.weighting  # type: ignore[attr-defined]
                options["weighting_score"] = model.weighting_score  # type: ignore[attr-defined]
            expected = _reference_knn(train, session[: t + 1], 25, **options)
            np.testing.assert_allclose(scores[row], expected, rtol=1e-5, atol=1e-6)


# --- state handling ----------------------------------------------------------------------


def test_history_grows_past_its_initial_width_and_resets_to_empty() -> None:
    model = SessionPopular().fit(KNN_TRAIN, N_ITEMS)
    long_session = [0, 2] * 15
    cursor = SessionCursor(model)
    for item in long_session:
        batch = cursor.step(torch.tensor([item, 4]), None, np.zeros(2, bool))
    assert batch.lengths.tolist() == [30, 30]
    scores = model.score(batch)
    assert scores[0, 0] > scores[0, 2] > scores[0, 1]  # 15 each, support 3 > 2; then the rest
    # The harness's reset empties a row: the row is a new session.
    batch = cursor.step(torch.tensor([3, 4]), None, np.array([True, False]))
    fresh = scores_after(model, [[3]])
    assert torch.equal(model.score(batch)[0], fresh[0])
    assert batch.lengths.tolist() == [1, 31]


# --- the factory -------------------------------------------------------------------------


def test_factory_builds_every_baseline_and_parses_strings() -> None:
    assert set(BASELINES) == {"pop", "spop", "iknn", "sknn", "vsknn"}
    model = fit_baseline("vsknn", KNN_TRAIN, N_ITEMS, k="2", idf_weighting="0.5", weighting="div")
    assert isinstance(model, VSKNN)
    assert (model.k, model.idf_weighting, model.weighting) == (2, 0.5, "div")
    assert model.n_items == N_ITEMS


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("knn", {}, "unknown baseline 'knn'"),
        ("pop", {"k": 3}, "pop has no parameter k"),
        ("sknn", {"neighbours": 3}, "sknn has no parameter neighbours"),
        ("sknn", {"k": 0}, "k must be >= 1"),
        ("sknn", {"k": "many"}, "k='many' is not a valid int"),
        ("vsknn", {"weighting": "cubic"}, "weighting='cubic' is not valid"),
        ("iknn", {"alpha": 2.0}, "alpha must be in"),
    ],
)
def test_factory_rejects_bad_names_and_values(name: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit_baseline(name, KNN_TRAIN, N_ITEMS, **params)


def test_fit_rejects_items_outside_the_map() -> None:
    with pytest.raises(InputDataError, match=r"outside 0\.\.2"):
        MostPopular().fit(KNN_TRAIN, 3)


# --- contract: every baseline through the evaluation harness -------------------------------


@pytest.fixture(scope="module")
def tiny_splits(tiny_prepared: Path) -> tuple[SessionData, SessionData, int]:
    items = load_items(tiny_prepared)
    train, _ = load_split(tiny_prepared, "train")
    test, _ = load_split(tiny_prepared, "test", item_ids=items["item_id"])
    return train, test, items.height


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_evaluates_the_same_at_any_batch_size(
    name: str, tiny_splits: tuple[SessionData, SessionData, int]
) -> None:
    train, test, n_items = tiny_splits
    model = fit_baseline(name, train, n_items)
    wide = evaluate(model, test, cutoffs=(1, 5, 20), batch_size=512)
    narrow = evaluate(model, test, cutoffs=(1, 5, 20), batch_size=3)
    # Resets and dropped rows are handled by the state: only the summation order differs.
    numbers = {key: value for key, value in wide.items() if isinstance(value, float)}
    assert {key: narrow[key] for key in numbers} == pytest.approx(numbers, rel=1e-12)
    assert wide["n_events"] == test.n_events - test.n_sessions
    assert 0.0 < wide["recall@20"] <= 1.0
    assert wide["mrr@20"] <= wide["recall@20"]


def test_neighbourhood_baselines_beat_popularity_on_successor_data(
    tiny_splits: tuple[SessionData, SessionData, int],
) -> None:
    train, test, n_items = tiny_splits
    recall = {
        name: evaluate(fit_baseline(name, train, n_items), test, cutoffs=(20,))["recall@20"]
        for name in BASELINES
    }
    # The synthetic clicks follow a successor graph: the current item predicts the next.
    for name in ("iknn", "sknn", "vsknn"):
        assert recall[name] > recall["pop"] + 0.1, recall
