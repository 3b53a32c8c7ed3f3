"""The family registry: a family defined here alone is trained, chosen by `select`, saved,
loaded, evaluated, served by `recommend` and run by the nightly job, with no other change;
and every registered family keeps the contract (fit, save, load, score, top k)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import numpy as np
import polars as pl
import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.jobs.selection import Fitting, parse_candidates, select_model
from gru4rec.network.data import SessionData, load_items
from gru4rec.options import Compute
from gru4rec.scoring.contract import SessionBatch, SessionScorer, session_batch
from gru4rec.serving import families
from gru4rec.serving.families import Candidate, Family
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.saved_models import load_scorer, model_family, save_scorer
from tests.conftest import prepared_log

runner = CliRunner()
TINY_GRU = {"n_epochs": "1", "layers": "8", "n_sample": "16", "batch_size": "16"}


class SuccessorScorer(SessionScorer):
    """Scores each item by how often it followed the session's last item in training."""

    family: ClassVar[str] = "successor"

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = torch.from_numpy(counts)

    @property
    def n_items(self) -> int:
        return int(self.counts.shape[0])

    def score(self, batch: SessionBatch) -> Tensor:
        last = batch.history.gather(1, (batch.lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return self.counts[(last - 1).clamp(min=0)]


class SuccessorFamily(Family):
    """A family written in this file alone: counted on the split, saved as one array."""

    name = "successor"
    scorer_type = SuccessorScorer

    def fit(
        self, candidate: Candidate, fitting: Fitting, split: str, chosen: Mapping[str, Any]
    ) -> SessionScorer:
        data = fitting.split(split)
        counts = np.zeros((fitting.n_items, fitting.n_items), dtype=np.float32)
        for first, last in zip(data.session_offsets[:-1], data.session_offsets[1:], strict=True):
            items = data.item_idx[first:last]
            np.add.at(counts, (items[:-1], items[1:]), 1.0)
        # Popularity breaks the ties among items that never followed the last item.
        counts += 1e-3 * np.bincount(data.item_idx, minlength=fitting.n_items)
        return SuccessorScorer(counts)

    def write(
        self,
        scorer: SessionScorer,
        staging: Path,
        items: pl.DataFrame,
        train_data: SessionData | None,
    ) -> None:
        assert isinstance(scorer, SuccessorScorer)
        np.save(staging / "successors.npy", scorer.counts.numpy())

    def load(
        self, model_dir: Path, meta: Mapping[str, Any], items: pl.DataFrame, device: str
    ) -> SessionScorer:
        return SuccessorScorer(np.load(model_dir / "successors.npy", allow_pickle=False))


@pytest.fixture
def successor() -> Iterator[Family]:
    family = families.register(SuccessorFamily())
    yield family
    families.unregister(family.name)


@pytest.fixture(scope="module")
def follow_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log where most clicks go to one of the last item's three successors."""
    from gru4rec.pipelines.synthetic import SyntheticLog

    spec = SyntheticLog(n_sessions=800, n_items=40, days=6, seed=4, follow=0.9)
    return prepared_log(tmp_path_factory.mktemp("follow"), spec)


def test_a_family_defined_in_a_test_file_alone_goes_everywhere(
    successor: Family, follow_log: Path, tmp_path: Path
) -> None:
    # Trained through the command line, whose --model choices are the registry's.
    trained = runner.invoke(
        app,
        [
            "train",
            str(follow_log),
            "--model",
            "successor",
            "--out",
            str(tmp_path / "m"),
            "--no-track",
            "--json",
            str(tmp_path / "train.json"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert model_family(tmp_path / "m") == "successor"
    assert (tmp_path / "m" / "successors.npy").is_file()
    # Chosen by `select` over a baseline it beats on valid, refitted, saved and scored on test.
    result = select_model(
        follow_log,
        tmp_path / "best",
        parse_candidates("pop,successor"),
        compute=Compute("cpu", threads=1),
    )
    assert result.candidates["successor"]["mrr@20"] > result.candidates["pop"]["mrr@20"]
    assert result.chosen == "successor" and result.family == "successor"
    # Loaded: the same scores as the model `select` refitted on train.
    scorer, items = load_scorer(tmp_path / "best", device="cpu")
    assert isinstance(scorer, SuccessorScorer)
    # Evaluated by `gru4rec evaluate`: the figures `select` reported on test.
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "best"),
            str(follow_log),
            "--json",
            str(tmp_path / "eval.json"),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["mrr@20"] == pytest.approx(result.test["mrr@20"])
    # Served by `gru4rec recommend`: each session's top items are its last item's successors.
    recs = tmp_path / "recs.parquet"
    served = runner.invoke(
        app,
        [
            "recommend",
            str(tmp_path / "best"),
            "--input",
            str(follow_log / "test.parquet"),
            "--out",
            str(recs),
            "-k",
            "3",
        ],
    )
    assert served.exit_code == 0, served.output
    table = pl.read_parquet(recs)
    test = pl.read_parquet(follow_log / "test.parquet")
    last = test.group_by("session_id").agg(pl.col("item_id").last()).sort("session_id")
    session, item = last["session_id"][0], last["item_id"][0]
    expected, _ = Recommender(scorer, items).recommend([[item]], k=3)
    got = table.filter(pl.col("session_id") == session)
    assert got["item_id"].to_list() == expected["item_id"].to_list()
    position = items.sort("item_idx")["item_id"].to_list()
    successors = scorer.counts[position.index(item)]
    assert got["score"].to_list() == pytest.approx(sorted(successors.tolist())[::-1][:3])


def test_the_nightly_job_runs_a_family_defined_in_a_test_file(
    successor: Family, tmp_path: Path
) -> None:
    from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

    spec = SyntheticLog(n_sessions=800, n_items=40, days=6, seed=4, follow=0.9)
    write_click_log(generate_clicks(spec), tmp_path / "clicks.tsv", "gru4rec-tsv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines = [
        'experiment = "nightly-families"',
        'registered_model = "toy"',
        'work_dir = "work"',
        f'tracking_uri = "{uri}"',
        "[data]",
        'inputs = ["clicks.tsv"]',
        "valid_days = 1",
        "[model]",
        'device = "cpu"',
        'candidates = ["pop", "successor"]',
        "[serving]",
        "k = 5",
    ]
    (tmp_path / "nightly.toml").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["nightly", str(tmp_path / "nightly.toml")])
    assert result.exit_code == 0, result.output
    current = tmp_path / "work" / "current"
    summary = json.loads((current / "summary.json").read_text())
    assert summary["chosen"] == "successor" and summary["family"] == "successor"
    recs = pl.read_parquet(current / "recommendations.parquet")
    assert recs.height > 0 and recs["rank"].max() == 5
    mlflow.set_tracking_uri(uri)
    champion = mlflow.pyfunc.load_model("models:/toy@champion")
    first = recs.filter(pl.col("session_id") == recs["session_id"][0])
    test = pl.read_parquet(current / "data" / "test.parquet")
    session = test.filter(pl.col("session_id") == recs["session_id"][0])["item_id"].to_list()
    import pandas as pd

    answer = champion.predict(pd.DataFrame({"items": [session]}), params={"k": 5})
    assert answer["item_id"].tolist() == first["item_id"].to_list()


@pytest.fixture(scope="module")
def fitting(follow_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Fitting:
    return Fitting(
        follow_log,
        load_items(follow_log),
        tmp_path_factory.mktemp("fits"),
        settings=TINY_GRU,
        compute=Compute("cpu", threads=1),
        callbacks=None,
    )


@pytest.mark.parametrize("name", families.names())
def test_every_registered_family_keeps_the_contract(
    name: str, fitting: Fitting, follow_log: Path, tmp_path: Path
) -> None:
    """Fitted through the registry as `select` fits it, saved, loaded to the same scores,
    and its top k the best of its scores."""
    family = families.get(name)
    candidate = Candidate(name, "rsc15" if family.takes_preset else None)
    on_valid = family.score_on_valid(candidate, fitting)
    assert 0 < on_valid["mrr@20"] <= on_valid["recall@20"] <= 1
    scorer = family.fit(candidate, fitting, "train", on_valid)
    assert scorer.family == name and isinstance(scorer, family.scorer_type)
    items = load_items(follow_log)
    save_scorer(tmp_path / name, scorer, items, train_data=fitting.split("train"))
    assert model_family(tmp_path / name) == name
    loaded, loaded_items = load_scorer(tmp_path / name, device="cpu")
    assert loaded_items.equals(items) and type(loaded) is type(scorer)
    sessions = [[3, 7, 3], [11], [5, 2, 9, 2]]
    with torch.inference_mode():
        before = scorer.score(session_batch(scorer, sessions))
        after = loaded.score(session_batch(loaded, sessions))
        values, indices = loaded.top_k(session_batch(loaded, sessions), 5)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(values, torch.topk(after, 5, dim=1).values)
    assert torch.equal(after.gather(1, indices), values)
    assert family.inner_product == loaded.inner_product
    assert (family.network_dir(tmp_path / name) is not None) == (
        name in ("gru4rec", "repeat", "hybrid", "ranker")
    )
