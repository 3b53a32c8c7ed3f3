"""Hybrids: the session distribution by hand, the mixture against its formula, and the
one-pass weight search against the plain evaluation of each candidate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gru4rec.errors import ConfigError
from gru4rec.network.data import SessionData
from gru4rec.network.model import GRU4Rec
from gru4rec.scoring.baselines import fit_baseline
from gru4rec.scoring.contract import session_batch
from gru4rec.scoring.evaluate import evaluate
from gru4rec.scoring.hybrid import (
    HybridScorer,
    MixtureWeights,
    choose_weights,
    evaluate_weights,
    session_distribution,
)
from gru4rec.scoring.neural import GRU4RecScorer

N_ITEMS = 30


def random_sessions(seed: int, n: int, repeat_share: float = 0.3) -> SessionData:
    """Sessions over N_ITEMS items where about `repeat_share` of the events repeat an earlier one."""
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(n):
        session = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(1, 8))):
            if rng.random() < repeat_share:
                session.append(int(rng.choice(session)))
            else:
                session.append(int(rng.integers(N_ITEMS)))
        sessions.append(session)
    return SessionData.from_sessions(sessions)


@pytest.fixture(scope="module")
def gru() -> GRU4RecScorer:
    model = GRU4Rec(N_ITEMS, layers=(16,), seed=3)
    return GRU4RecScorer(model.eval())


def test_session_distribution_by_hand() -> None:
    history = torch.tensor([[1, 2, 1], [3, 0, 0], [0, 0, 0]])  # items 0, 1, 0 | 2 | empty
    got = session_distribution(history, 4, decay=0.5)
    # Row 0: item 0 is 2 and 0 events back (0.25 + 1), item 1 one back (0.5); total 1.75.
    expected = torch.tensor(
        [[1.25 / 1.75, 0.5 / 1.75, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(got, expected)
    counts = session_distribution(history, 4, decay=1.0)[0]
    torch.testing.assert_close(counts, torch.tensor([2 / 3, 1 / 3, 0, 0]))


def test_mixture_score_is_the_log_of_its_formula(gru: GRU4RecScorer) -> None:
    train = random_sessions(1, 60)
    knn = fit_baseline("vsknn", train, N_ITEMS)
    weights = MixtureWeights(repeat=0.2, decay=0.6, knn=0.1)
    hybrid = HybridScorer(gru, weights, knn)
    sessions = [[3, 5, 3], [7], [1, 2, 4, 2]]
    batch = session_batch(hybrid, sessions)
    with torch.inference_mode():
        got = hybrid.score(batch)
        softmax = torch.softmax(gru.score(batch), dim=1)
        session = session_distribution(batch.history, N_ITEMS, 0.6)
        votes = knn.score(batch).clamp(min=0)
        votes = votes / votes.sum(dim=1, keepdim=True).clamp(min=1e-30)
    expected = torch.log(0.7 * softmax + 0.2 * session + 0.1 * votes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Items outside the session without a kNN vote keep GRU4Rec's order.
    untouched = (session[1] == 0) & (votes[1] == 0)
    gru_order = torch.argsort(gru.score(batch)[1][untouched].detach(), stable=True)
    assert torch.equal(torch.argsort(got[1][untouched], stable=True), gru_order)


@pytest.mark.parametrize("ties", ["conservative", "standard", "median"])
def test_one_pass_search_equals_plain_evaluation_of_every_candidate(
    gru: GRU4RecScorer, ties: str
) -> None:
    train, valid = random_sessions(2, 80), random_sessions(3, 40)
    knn = fit_baseline("sknn", train, N_ITEMS)
    hybrid = HybridScorer(gru, MixtureWeights(), knn)
    candidates = [
        MixtureWeights(),
        MixtureWeights(repeat=1e-3),
        MixtureWeights(repeat=0.3, decay=0.4),
        MixtureWeights(repeat=0.05, decay=0.8, knn=0.2),
        MixtureWeights(knn=0.9),
        MixtureWeights(knn=1.0),  # no GRU4Rec mass: every untouched item scores -inf
        MixtureWeights(repeat=1.0, decay=0.6),
        MixtureWeights(repeat=0.03, knn=0.97),
    ]
    fast = evaluate_weights(hybrid, valid, candidates, cutoffs=(1, 5, 10), ties=ties, batch_size=7)  # type: ignore[arg-type]
    for weights, metrics in zip(candidates, fast, strict=True):
        plain = evaluate(HybridScorer(gru, weights, knn), valid, cutoffs=(1, 5, 10), ties=ties)  # type: ignore[arg-type]
        for key in ("recall@5", "mrr@10", "ndcg@10", "repeat_mrr@10", "new_recall@10"):
            assert metrics[key] == pytest.approx(plain[key], abs=1e-12), (weights, key)
        assert metrics["n_repeat_events"] == plain["n_repeat_events"] > 0


def test_choose_weights_prefers_the_repeat_mass_on_a_log_of_repeats(gru: GRU4RecScorer) -> None:
    # An untrained GRU4Rec knows nothing; in these sessions most targets repeat an earlier item.
    valid = random_sessions(4, 60, repeat_share=0.8)
    hybrid = HybridScorer(gru, MixtureWeights())
    search = choose_weights(hybrid, valid, metric="mrr@20")
    assert search.best.repeat > 0 and hybrid.weights == search.best
    plain = dict(search.trials)[MixtureWeights()]
    assert dict(search.trials)[search.best]["mrr@20"] > plain["mrr@20"]


def test_bad_weights_are_refused(gru: GRU4RecScorer) -> None:
    with pytest.raises(ConfigError, match="repeat \\+ knn <= 1"):
        MixtureWeights(repeat=0.6, knn=0.5)
    with pytest.raises(ConfigError, match="decay"):
        MixtureWeights(decay=0.0)
    with pytest.raises(ConfigError, match="kNN component"):
        HybridScorer(gru, MixtureWeights(knn=0.1))


def peaked_wrong_gru(seed: int) -> GRU4RecScorer:
    """An untrained GRU4Rec whose output is sharpened until its softmax is peaked: a
    confident part that knows nothing, which only a weight of (nearly) 0 can silence."""
    model = GRU4Rec(N_ITEMS, layers=(16,), seed=seed)
    with torch.no_grad():
        model.item_weight.mul_(200.0)
    return GRU4RecScorer(model.eval())


def cycle_sessions(n: int, seed: int) -> SessionData:
    """Sessions walking a fixed cycle over the items: each next item is the current + 1."""
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(n):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(3, 7))
        sessions.append([(start + step) % N_ITEMS for step in range(length)])
    return SessionData.from_sessions(sessions)


def test_the_search_finds_the_session_items_alone_where_they_are_best() -> None:
    gru = peaked_wrong_gru(5)
    valid = random_sessions(6, 80, repeat_share=0.9)
    hybrid = HybridScorer(gru, MixtureWeights())
    search = choose_weights(hybrid, valid, metric="mrr@20")
    best = dict(search.trials)[search.best]
    assert search.best.repeat > 0.5, search.best  # a peaked GRU4Rec needs nearly all the mass
    spop = evaluate(fit_baseline("spop", random_sessions(10, 200), N_ITEMS), valid, cutoffs=(20,))
    alone = evaluate(gru, valid, cutoffs=(20,))
    assert best["mrr@20"] > 8 * alone["mrr@20"]
    # S-POP breaks ties between items of equal count by popularity, the mixture by GRU4Rec's
    # order (random here): equal up to that luck.
    assert best["mrr@20"] == pytest.approx(spop["mrr@20"], abs=0.01)
    assert best["recall@20"] >= spop["recall@20"]


def test_the_search_finds_the_knn_part_alone_where_it_is_best() -> None:
    gru = peaked_wrong_gru(7)
    train, valid = cycle_sessions(200, 8), cycle_sessions(60, 9)
    knn = fit_baseline("iknn", train, N_ITEMS)  # knows the cycle: the next item, exactly
    hybrid = HybridScorer(gru, MixtureWeights(), knn)
    search = choose_weights(hybrid, valid, metric="mrr@20")
    alone = evaluate(knn, valid, cutoffs=(20,))
    assert search.best.knn > 0.9 and search.best.repeat <= 1e-3, search.best
    assert dict(search.trials)[search.best]["mrr@20"] >= alone["mrr@20"] > 0.5
    # The vertex itself is in the grid and scores what the kNN baseline scores.
    vertex = dict(search.trials)[MixtureWeights(knn=1.0)]
    assert vertex["mrr@20"] == pytest.approx(alone["mrr@20"], abs=1e-12)


def test_a_small_decay_keeps_the_items_far_back_in_a_long_session(gru: GRU4RecScorer) -> None:
    # Item 5 opens a session of 102 events and is its target: 0.2**101 underflows to 0 in
    # float32, 1.0**101 does not. Scored together, decay 1 must still see item 5 as part of
    # the session (its target mass), and decay 0.2 must not.
    valid = SessionData.from_sessions([[5, *[1, 2] * 50, 5], [3, 4, 3], [7, 8, 9, 7]])
    hybrid = HybridScorer(gru, MixtureWeights())
    candidates = [MixtureWeights(repeat=0.5, decay=0.2), MixtureWeights(repeat=0.5, decay=1.0)]
    fast = evaluate_weights(hybrid, valid, candidates, cutoffs=(1, 5, 10, 20), batch_size=4)
    for weights, metrics in zip(candidates, fast, strict=True):
        plain = evaluate(HybridScorer(gru, weights), valid, cutoffs=(1, 5, 10, 20))
        for key in ("recall@20", "mrr@20", "repeat_mrr@20"):
            assert metrics[key] == pytest.approx(plain[key], abs=1e-12), (weights, key)
    assert fast[1]["repeat_mrr@20"] > fast[0]["repeat_mrr@20"]


class CountingHybrid(HybridScorer):
    """A hybrid that counts how often its expensive parts are computed."""

    calls = 0

    def parts(self, batch, decay):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().parts(batch, decay)


def test_the_search_computes_the_expensive_parts_once_for_all_stages(
    gru: GRU4RecScorer,
) -> None:
    train, valid = random_sessions(11, 80), random_sessions(12, 50, repeat_share=0.5)
    knn = fit_baseline("vsknn", train, N_ITEMS)
    kept = CountingHybrid(gru, MixtureWeights(), knn)
    search = choose_weights(kept, valid, batch_size=16)
    n_batches = kept.calls
    one_pass = CountingHybrid(gru, MixtureWeights(), knn)
    evaluate_weights(one_pass, valid, [MixtureWeights()], batch_size=16)
    assert n_batches == one_pass.calls > 1  # three stages, one pass over valid
    # Too many pairs to keep: every stage computes them again, with the same results.
    again = CountingHybrid(gru, MixtureWeights(), knn)
    search_again = choose_weights(again, valid, batch_size=16, max_kept_pairs=0)
    assert again.calls == 3 * n_batches
    assert search_again.trials == search.trials and search_again.best == search.best


def test_the_weight_search_benchmark_runs(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    import json

    from benchmarks import weight_search

    out = tmp_path / "w.json"
    argv = ["--model", str(tiny_model), "--data", str(tiny_prepared), "--split", "test"]
    assert weight_search.main([*argv, "--fit-split", "train", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["same_choice"] and figures["weightings"] > 100
    assert figures["kept_seconds"] > 0 and figures["recomputed_seconds"] > 0
