"""The learned ranker: its features by hand, its out-of-fold metrics against the plain
evaluation of the same model, its dense scores and top-k against each other, exact and
through a FAISS index."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gru4rec.network.data import SessionData
from gru4rec.network.model import GRU4Rec
from gru4rec.scoring.baselines import fit_baseline
from gru4rec.scoring.candidates import CandidateSizes
from gru4rec.scoring.contract import session_batch
from gru4rec.scoring.evaluate import evaluate
from gru4rec.scoring.hybrid import MixtureWeights
from gru4rec.scoring.neural import GRU4RecScorer
from gru4rec.scoring.ranker import (
    FEATURES,
    FeatureBuilder,
    RankerParts,
    RankerScorer,
    fit_ranker,
    popularity,
    ranker_table,
    table_metrics,
)
from gru4rec.scoring.ranker.features import _rank_in_rows
from gru4rec.serving.retrieval import IndexOptions, ItemIndex
from tests.conftest import prepared_log

N_ITEMS = 60
SIZES = CandidateSizes(n_gru=10, n_knn=5, n_popular=3)


def sessions(seed: int, n: int) -> SessionData:
    """Sessions that mostly walk forward by one or two items, and sometimes go back."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        session = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(1, 9))):
            if rng.random() < 0.3:
                session.append(int(rng.choice(session)))
            else:
                session.append((session[-1] + int(rng.integers(1, 3))) % N_ITEMS)
        out.append(session)
    return SessionData.from_sessions(out)


@pytest.fixture(scope="module")
def parts() -> RankerParts:
    train = sessions(1, 400)
    gru = GRU4RecScorer(GRU4Rec(N_ITEMS, layers=(16,), seed=3).eval())
    baselines = {name: fit_baseline(name, train, N_ITEMS) for name in ("vsknn", "sknn", "iknn")}
    weights = MixtureWeights(repeat=0.2, decay=0.8, knn=0.3)
    return RankerParts.fit(gru, baselines, train, weights, SIZES)


@pytest.fixture(scope="module")
def ranker(parts: RankerParts) -> RankerScorer:
    table = ranker_table(parts, sessions(2, 300))
    return RankerScorer(parts, fit_ranker(table, n_items=N_ITEMS, seed=1).booster)


def test_rank_within_rows_by_hand() -> None:
    rows = torch.tensor([0, 0, 0, 1, 1, 2])
    values = torch.tensor([0.5, 2.0, 1.0, -1.0, 3.0, 7.0])
    ranks = _rank_in_rows(rows, values, torch.bincount(rows))
    assert ranks.tolist() == [2.0, 0.0, 1.0, 1.0, 0.0, 0.0]


def test_popularity_overall_and_recent() -> None:
    data = SessionData.from_sessions([[0, 1]] * 19 + [[2, 2]])  # the last twentieth: item 2
    support, recent = popularity(data, 4)
    assert support.tolist() == [19, 19, 2, 0] and recent.tolist() == [0, 0, 2, 0]


def test_features_of_a_session_by_hand(parts: RankerParts) -> None:
    builder = FeatureBuilder(parts)
    session = [4, 9, 4, 7]  # item 4 twice (3 and 1 events back), 7 last
    batch = session_batch(parts.gru, [session])
    with torch.inference_mode():
        rows = builder.build(batch)
        gru = parts.gru.score(batch)[0]
        votes = parts.vsknn.score(batch)[0].clamp(min=0)
    table = {int(item): rows.features[p] for p, item in enumerate(rows.items)}
    column = {name: i for i, name in enumerate(FEATURES)}
    assert {4, 9, 7} <= set(table)  # the session's items are always candidates
    four, seven = table[4], table[7]
    assert four[column["session_count"]] == 2 and four[column["steps_since"]] == 1
    assert four[column["session_share"]] == pytest.approx(0.5)
    assert four[column["is_last"]] == 0 and seven[column["is_last"]] == 1
    assert seven[column["steps_since"]] == 0 and seven[column["session_length"]] == 4
    assert seven[column["session_distinct"]] == 3
    # Decayed share of item 4 with decay 0.8: (0.8**3 + 0.8) / (0.8**3 + 0.8**2 + 0.8 + 1).
    expected = (0.8**3 + 0.8) / (0.8**3 + 0.8**2 + 0.8 + 1)
    assert four[column["session_decayed"]] == pytest.approx(expected, rel=1e-5)
    outside = [item for item in table if item not in session]
    assert all(math.isnan(table[item][column["steps_since"]]) for item in outside)
    # GRU4Rec: the raw score, and the log-probability over the candidates only.
    candidate_gru = gru[rows.items]
    for item, values in table.items():
        assert values[column["gru_score"]] == pytest.approx(float(gru[item]), abs=1e-4)
        logp = float(gru[item] - torch.logsumexp(candidate_gru, 0))
        assert values[column["gru_logp"]] == pytest.approx(logp, abs=1e-4)
        share = float(votes[item] / votes.sum())
        assert values[column["vsknn"]] == pytest.approx(share, abs=1e-6)
    best = int(rows.items[int(torch.argmax(candidate_gru))])
    assert table[best][column["gru_rank"]] == 0 and table[best][column["gru_gap"]] == 0
    support = np.log1p(parts.support[4])
    assert four[column["pop"]] == pytest.approx(support, rel=1e-6)


def test_out_of_fold_metrics_count_ranks_as_the_plain_evaluation(
    ranker: RankerScorer, parts: RankerParts
) -> None:
    """The table's fast metrics with the final model's predictions equal the harness's
    evaluation of the same model (full ranking through `score`), in every tie mode."""
    data = sessions(4, 120)
    for ties in ("conservative", "standard", "median"):
        table = ranker_table(parts, data, ties=ties)  # type: ignore[arg-type]
        predicted = ranker.booster.predict(table.features)
        fast = table_metrics(table, predicted, cutoffs=(1, 5, 20), ties=ties, n_items=N_ITEMS)  # type: ignore[arg-type]
        plain = evaluate(ranker, data, cutoffs=(1, 5, 20), ties=ties)  # type: ignore[arg-type]
        for key in ("recall@5", "mrr@20", "ndcg@20", "repeat_mrr@20", "new_recall@20"):
            assert fast[key] == pytest.approx(plain[key], abs=1e-6), (ties, key)
    assert 0 < table.recall < 1  # some targets outside the candidates: their rank counts too


def test_dense_scores_put_candidates_first_then_gru4rec_order(ranker: RankerScorer) -> None:
    batch = session_batch(ranker, [[1, 2, 3], [10], [5, 5, 6, 40]])
    with torch.inference_mode():
        scores = ranker.score(batch)
        rows = ranker.builder.build(batch, dense_gru=True)
        gru = ranker.parts.gru.score(batch)
    for row in range(3):
        mine = rows.items[rows.rows == row]
        inside = torch.zeros(N_ITEMS, dtype=torch.bool)
        inside[mine] = True
        assert scores[row][inside].min() > scores[row][~inside].max()
        rest = torch.argsort(scores[row][~inside], descending=True, stable=True)
        assert torch.equal(rest, torch.argsort(gru[row][~inside], descending=True, stable=True))


def test_top_k_from_the_candidates_equals_the_dense_top_k(ranker: RankerScorer) -> None:
    batch = session_batch(ranker, [[1, 2, 3], [10], [5, 5, 6, 40], [33, 34]])
    with torch.inference_mode():
        values, items = ranker.top_k(batch, 10)
        dense = torch.topk(ranker.score(batch), 10, dim=1)
        wide = ranker.top_k(batch, N_ITEMS)  # more than the candidates: the dense path
        ordered = torch.sort(ranker.score(batch), dim=1, descending=True).values
    assert torch.equal(items, dense.indices)
    torch.testing.assert_close(values, dense.values)
    assert wide[1].shape == (4, N_ITEMS)
    assert torch.equal(wide[1][:, :10], items)  # the candidates first, then GRU4Rec's order
    torch.testing.assert_close(wide[0], ordered)


def test_a_wide_top_k_builds_the_candidates_once(
    ranker: RankerScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    build = ranker.builder.build
    monkeypatch.setattr(ranker.builder, "build", lambda *a, **k: builds.append(1) or build(*a, **k))
    batch = session_batch(ranker, [[1, 2, 3], [10]])
    with torch.inference_mode():
        ranker.top_k(batch, N_ITEMS)
    assert len(builds) == 1  # the kNN votes and features are the costly part


def test_candidates_through_an_exact_index_change_nothing(ranker: RankerScorer) -> None:
    batch = session_batch(ranker, [[1, 2, 3], [10], [5, 5, 6, 40]])
    with torch.inference_mode():
        exact = ranker.top_k(batch, 10)
        wide = ranker.top_k(batch, N_ITEMS)
        ranker.use_index(ItemIndex.build(ranker.item_vectors(), IndexOptions("flat")))
        try:
            indexed = ranker.top_k(batch, 10)
            indexed_wide = ranker.top_k(batch, N_ITEMS)  # past the candidates: GRU4Rec's order
        finally:
            ranker.use_index(None)
    assert torch.equal(indexed[1], exact[1])
    torch.testing.assert_close(indexed[0], exact[0])
    assert torch.equal(indexed_wide[1], wide[1])
    torch.testing.assert_close(indexed_wide[0], wide[0])


def test_fit_ranker_learns_something_out_of_fold(parts: RankerParts) -> None:
    """On logs that walk forward, the learned order beats GRU4Rec's untrained one."""
    data = sessions(5, 300)
    table = ranker_table(parts, data)
    fit = fit_ranker(table, n_items=N_ITEMS, seed=2)
    gru = evaluate(parts.gru, data, cutoffs=(1, 5, 10, 20))
    assert fit.metrics["mrr@20"] > gru["mrr@20"] + 0.1
    assert len(fit.fold_rounds) == 3 and fit.rounds >= 1
    assert fit.booster.feature_name() == list(FEATURES)


@pytest.fixture(scope="module")
def repeat_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated log with long sessions returning to their items, split with valid."""
    from gru4rec.pipelines.synthetic import SyntheticLog

    spec = SyntheticLog(n_sessions=900, n_items=120, days=10, seed=4, revisit=0.5, mean_length=8)
    return prepared_log(tmp_path_factory.mktemp("repeat-log"), spec)


TINY = [
    "--set",
    "n_epochs=1",
    "--set",
    "layers=16",
    "--set",
    "n_sample=32",
    "--set",
    "batch_size=16",
]


def test_the_family_table_benchmark_runs(repeat_log: Path, tmp_path: Path, capsys: Any) -> None:
    from benchmarks import family_table

    out = tmp_path / "table.json"
    argv = [str(repeat_log), "--seeds", "1,2", "--candidates", "spop,gru4rec,hybrid,ranker"]
    assert family_table.main([*argv, *TINY, "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [run["seed"] for run in runs] == [1, 2]
    for run in runs:
        rows = run["rows"]
        assert set(rows) == {"spop", "gru4rec:rsc15", "hybrid:rsc15", "ranker:rsc15"}
        best = max(rows, key=lambda name: rows[name]["valid"]["mrr@20"])
        assert run["chosen"] == best and all("repeat_mrr@20" in r["test"] for r in rows.values())
        # The hybrid holds the plain GRU4Rec: never below it on valid.
        assert rows["hybrid:rsc15"]["valid"]["mrr@20"] >= rows["gru4rec:rsc15"]["valid"]["mrr@20"]
    printed = capsys.readouterr().out
    assert "| ranker:rsc15 |" in printed and "ratio" in printed
    assert printed.count("select with the ranker") == 2
    for run in runs:  # a refit's charged seconds count every fit it uses, also earlier ones
        gru = run["rows"]["gru4rec:rsc15"]["refit_seconds"]  # GRU4Rec trained on train
        for name in ("hybrid:rsc15", "ranker:rsc15"):
            # Both reuse that GRU4Rec, charged though not in their walls; the ranker's learned
            # model, made in the valid stage, is not charged again.
            row = run["rows"][name]
            assert row["refit_seconds"] == pytest.approx(row["refit_wall"] + gru, abs=0.05)
    # Seeds saved by separate processes print as the same table.
    for run in runs:
        (tmp_path / f"seed{run['seed']}.json").write_text(json.dumps({"runs": [run]}))
    merged = [
        "--from-json",
        str(tmp_path / "seed2.json"),
        "--from-json",
        str(tmp_path / "seed1.json"),
    ]
    assert family_table.main(merged) == 0
    assert capsys.readouterr().out.strip() == printed.strip().split("\n\n", 1)[1].strip()


def test_the_ranker_scale_benchmark_runs(tmp_path: Path) -> None:
    from benchmarks import ranker_scale

    out = tmp_path / "scale.json"
    argv = ["--items", "3000", "--sessions", "3000", "--queries", "40", "--json", str(out)]
    assert ranker_scale.main(argv) == 0
    figures = json.loads(out.read_text())
    for way in ("ranker_hnsw", "ranker_exact", "hybrid_exact", "gru4rec_hnsw"):
        assert figures[way]["sessions_per_s"] > 0
    assert 0.5 <= figures["agreement_ranker_hnsw_ranker_exact"] <= 1.0
