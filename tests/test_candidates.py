"""Candidate sets for a ranker: each source's items, known by hand on crafted scores, and
the recall of the union on a split, bounded by what it holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gru4rec.network.data import load_items, load_split
from gru4rec.scoring.baselines import fit_baseline
from gru4rec.scoring.candidates import (
    SOURCES,
    CandidateSets,
    CandidateSizes,
    _top_scored,
    candidate_recall,
)
from gru4rec.scoring.contract import session_batch
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.retrieval import IndexOptions, ItemIndex


def test_top_scored_keeps_only_positive_scores() -> None:
    scores = torch.tensor([[0.5, 0.0, 0.2, 0.9], [0.0, 0.0, 0.0, 0.3]])
    assert _top_scored(scores, 3).tolist() == [
        [True, False, True, True],
        [False, False, False, True],
    ]


@pytest.fixture(scope="module")
def parts(tiny_model: Path, tiny_prepared: Path) -> tuple:
    items = load_items(tiny_prepared)
    train, _ = load_split(tiny_prepared, "train", item_ids=items["item_id"])
    test, _ = load_split(tiny_prepared, "test", item_ids=items["item_id"])
    gru = Recommender.from_path(tiny_model, device="cpu", index="none").scorer
    vsknn = fit_baseline("vsknn", train, items.height)
    iknn = fit_baseline("iknn", train, items.height)
    return gru, vsknn, iknn, items["support"].to_numpy(), test


def test_each_source_holds_what_it_says(parts: tuple) -> None:
    gru, vsknn, iknn, support, _ = parts
    sets = CandidateSets(gru, vsknn, iknn, support, CandidateSizes(n_gru=5, n_knn=4, n_popular=3))
    sessions = [[3, 7, 3], [10]]
    batch = session_batch(gru, sessions)
    masks = sets.masks(batch)
    assert set(masks) == set(SOURCES)
    assert masks["session"][0].nonzero().flatten().tolist() == [3, 7]
    assert masks["session"][1].nonzero().flatten().tolist() == [10]
    popular = np.argsort(-support, kind="stable")[:3]
    assert (
        masks["popular"].nonzero()[:, 1].view(2, 3).sort(dim=1).values
        == torch.tensor(sorted(popular))
    ).all()
    expected = torch.topk(gru.score(batch), 5, dim=1).indices
    assert all(
        set(masks["gru4rec"][r].nonzero().flatten().tolist()) == set(expected[r].tolist())
        for r in range(2)
    )
    assert (masks["vsknn"].sum(dim=1) <= 4).all() and (masks["iknn"].sum(dim=1) <= 4).all()
    # Through the exact FAISS index: the same items.
    index = ItemIndex.build(gru.item_vectors(), IndexOptions("flat"))
    through = CandidateSets(gru, vsknn, iknn, support, CandidateSizes(5, 4, 3), index=index)
    assert torch.equal(through.masks(batch)["gru4rec"], masks["gru4rec"])


def test_the_union_holds_at_least_every_source_and_all_items_hold_every_target(
    parts: tuple,
) -> None:
    gru, vsknn, iknn, support, test = parts
    found = candidate_recall(
        CandidateSets(gru, vsknn, iknn, support, CandidateSizes(10, 10, 5)), test
    )
    assert all(0.0 <= found[f"recall_{s}"] <= found["recall"] <= 1.0 for s in SOURCES)
    assert found["recall"] > found["recall_gru4rec"]  # the other sources add targets
    longest = int(test.session_lengths.max())
    assert found["mean_size"] <= 10 + 10 + 10 + 5 + longest  # the union is at most the sum
    everything = CandidateSets(gru, vsknn, iknn, support, CandidateSizes(n_gru=gru.n_items))
    assert candidate_recall(everything, test)["recall"] == 1.0


def test_the_candidate_recall_benchmark_runs(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    import json

    from benchmarks import candidate_recall

    out = tmp_path / "c.json"
    argv = ["--model", str(tiny_model), "--data", str(tiny_prepared), "--n-gru", "5", "60"]
    assert candidate_recall.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["recall"] <= rows[1]["recall"] == 1.0  # all 60 items: every target
