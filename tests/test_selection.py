"""Model selection and every family behind one contract: saved and loaded without pickles,
served by `recommend` and the pyfunc model, chosen on valid by `gru4rec select`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.jobs import selection
from gru4rec.jobs.selection import Fitting, parse_candidates, select_model
from gru4rec.jobs.train_evaluate import evaluate_split
from gru4rec.network.data import load_items, load_split
from gru4rec.options import Compute
from gru4rec.scoring.baselines import fit_baseline
from gru4rec.scoring.contract import SessionScorer, session_batch
from gru4rec.scoring.hybrid import HybridScorer, MixtureWeights
from gru4rec.scoring.neural import GRU4RecScorer
from gru4rec.scoring.ranker import RankerParts, RankerScorer, fit_ranker, ranker_table
from gru4rec.serving.checkpoint import load_checkpoint
from gru4rec.serving.families import Candidate
from gru4rec.serving.families.ranker import RANKER_BASELINES
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.saved_models import load_scorer, model_family, save_scorer
from tests.conftest import prepared_log

runner = CliRunner()
TINY_GRU = [
    "--set",
    "n_epochs=1",
    "--set",
    "layers=16",
    "--set",
    "n_sample=32",
    "--set",
    "batch_size=16",
]


@pytest.fixture(scope="module")
def revisit_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log where most clicks return to an earlier item of the session, with a valid split."""
    from gru4rec.pipelines.synthetic import SyntheticLog

    spec = SyntheticLog(n_sessions=1200, n_items=80, days=10, seed=2, revisit=0.7, follow=0.2)
    return prepared_log(tmp_path_factory.mktemp("revisit"), spec)


def every_family(prepared: Path, gru_dir: Path) -> dict[str, SessionScorer]:
    items = load_items(prepared)
    train, _ = load_split(prepared, "train")
    model, config, _ = load_checkpoint(gru_dir, device="cpu")
    gru = GRU4RecScorer(model, config)
    scorers: dict[str, SessionScorer] = {"gru4rec": gru}
    for name in ("pop", "spop", "iknn", "sknn", "vsknn"):
        scorers[name] = fit_baseline(name, train, items.height)
    vsknn = fit_baseline("vsknn", train, items.height, k=50)
    weights = MixtureWeights(repeat=0.05, decay=0.8, knn=0.1)
    scorers["hybrid"] = HybridScorer(gru, weights, vsknn)
    baselines = {name: fit_baseline(name, train, items.height) for name in RANKER_BASELINES}
    parts = RankerParts.fit(gru, baselines, train, weights)
    test, _ = load_split(prepared, "test")
    booster = fit_ranker(ranker_table(parts, test), n_items=items.height).booster
    scorers["ranker"] = RankerScorer(parts, booster)
    return scorers


def test_every_family_saves_and_loads_to_the_same_scores(
    tiny_prepared: Path, tiny_model: Path, tmp_path: Path
) -> None:
    items = load_items(tiny_prepared)
    train, _ = load_split(tiny_prepared, "train")
    sessions = [[3, 7, 3], [11], [5, 2, 9, 2]]
    for family, scorer in every_family(tiny_prepared, tiny_model).items():
        out = tmp_path / family
        save_scorer(out, scorer, items, train_data=train)
        assert model_family(out) == family
        loaded, loaded_items = load_scorer(out, device="cpu")
        assert loaded.family == family and loaded_items.equals(items)
        with torch.inference_mode():
            before = scorer.score(session_batch(scorer, sessions))
            after = loaded.score(session_batch(loaded, sessions))
        torch.testing.assert_close(after, before, msg=family)
        # Nothing pickled: the session arrays load with allow_pickle=False.
        for npz in out.glob("*.npz"):
            np.load(npz, allow_pickle=False).close()


def test_a_damaged_model_directory_is_named(tiny_prepared: Path, tmp_path: Path) -> None:
    items = load_items(tiny_prepared)
    train, _ = load_split(tiny_prepared, "train")
    save_scorer(
        tmp_path / "spop", fit_baseline("spop", train, items.height), items, train_data=train
    )
    (tmp_path / "spop" / "sessions.npz").write_bytes(b"not an archive")
    with pytest.raises(CheckpointError, match=r"sessions\.npz"):
        load_scorer(tmp_path / "spop")
    meta = json.loads((tmp_path / "spop" / "config.json").read_text())
    (tmp_path / "spop" / "config.json").write_text(json.dumps({**meta, "family": "magic"}))
    with pytest.raises(CheckpointError, match="magic"):
        load_scorer(tmp_path / "spop")


def test_recommend_and_pyfunc_serve_a_baseline(tiny_prepared: Path, tmp_path: Path) -> None:
    from gru4rec.serving.mlflow_model import GRU4RecPyfunc

    items = load_items(tiny_prepared)
    train, _ = load_split(tiny_prepared, "train")
    spop = fit_baseline("spop", train, items.height)
    save_scorer(tmp_path / "spop", spop, items, train_data=train)
    ids = items.sort("item_idx")["item_id"].to_list()
    session = [ids[4], ids[9], ids[4]]
    table, _ = Recommender.from_path(tmp_path / "spop", device="cpu").recommend([session], k=3)
    assert table["item_id"].to_list()[:2] == [ids[4], ids[9]]  # S-POP: the session's items first
    pyfunc = GRU4RecPyfunc()
    pyfunc.load_context(SimpleNamespace(artifacts={"model_dir": str(tmp_path / "spop")}))
    served = pyfunc.predict(None, pd.DataFrame({"items": [session]}), params={"k": 3})
    assert served["item_id"].tolist() == table["item_id"].to_list()
    with pytest.raises(ConfigError, match="not inner products"):
        Recommender.from_path(tmp_path / "spop", device="cpu", index="flat")


def test_candidates_are_parsed_and_checked() -> None:
    assert parse_candidates("spop, gru4rec ,hybrid:diginetica,repeat", "rsc15") == [
        Candidate("spop"),
        Candidate("gru4rec", "rsc15"),
        Candidate("hybrid", "diginetica"),
        Candidate("repeat", "rsc15"),
    ]
    for bad in ("spop:x", "transformer", "gru4rec:nope", " , "):
        with pytest.raises(ConfigError):
            parse_candidates(bad)


def test_a_fit_is_charged_to_every_user_except_where_already_paid(
    tiny_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fake clock that moves only when the test says so: each fit takes exactly 2 s and
    # nothing else takes any time, so every charge is exact whatever the machine's load.
    now = [1000.0]

    def spend(seconds: float) -> None:
        now[0] += seconds

    made: list[str] = []

    def slow_fit(name: str, data: object, n_items: int) -> str:
        made.append(name)
        spend(2.0)
        return f"fitted {name}"

    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(selection, "fit_baseline", slow_fit)
    fitting = Fitting(
        tiny_prepared,
        load_items(tiny_prepared),
        tmp_path,
        compute=Compute("cpu", threads=1),
        callbacks=None,
    )
    first, seconds = fitting.charged(lambda: fitting.baseline("spop", "train"))
    assert first == "fitted spop" and seconds == pytest.approx(2.0)  # counted once, not twice
    paid = fitting.made()
    assert paid == {("baseline", "spop", "train")}
    # Made once; a later user is charged its full cost, unless it is marked as paid.
    again, seconds = fitting.charged(lambda: fitting.baseline("spop", "train"))
    assert again == first and seconds == pytest.approx(2.0)
    _, seconds = fitting.charged(lambda: fitting.baseline("spop", "train"), paid=paid)
    assert seconds == pytest.approx(0.0)
    # The work's own time is charged as well, besides the fits it used that were not paid.
    _, seconds = fitting.charged(
        lambda: (
            spend(0.5),
            fitting.baseline("spop", "train"),
            fitting.baseline("sknn", "train"),
        ),
        paid=paid,
    )
    assert seconds == pytest.approx(2.5) and made == ["spop", "sknn"]


def test_select_serves_the_baseline_that_wins_on_valid(
    revisit_prepared: Path, tmp_path: Path
) -> None:
    """On a log of revisits a barely trained GRU4Rec loses to S-POP: S-POP is chosen,
    refitted on train, saved, and what `recommend` serves is S-POP's ranking."""
    overrides = dict(s.split("=") for s in TINY_GRU[1::2])
    result = select_model(
        revisit_prepared,
        tmp_path / "best",
        parse_candidates("gru4rec,spop"),
        settings=overrides,
        compute=Compute("cpu", threads=1),
    )
    valid = result.candidates
    assert valid["spop"]["mrr@20"] > valid["gru4rec:rsc15"]["mrr@20"]
    assert result.chosen == "spop" and model_family(tmp_path / "best") == "spop"
    scorer, items = load_scorer(tmp_path / "best")
    again = evaluate_split(scorer, items, revisit_prepared, split="test")
    assert again["mrr@20"] == pytest.approx(result.test["mrr@20"])
    assert result.test["n_repeat_events"] > 0.4 * result.test["n_events"]


def test_select_command_end_to_end(revisit_prepared: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "model", tmp_path / "select.json"
    result = runner.invoke(
        app,
        [
            "select",
            str(revisit_prepared),
            "--out",
            str(out),
            "--candidates",
            "spop,vsknn,gru4rec,hybrid,ranker",
            *TINY_GRU,
            "--json",
            str(report),
            "--no-track",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())
    assert set(summary["candidates"]) == {
        "spop",
        "vsknn",
        "gru4rec:rsc15",
        "hybrid:rsc15",
        "ranker:rsc15",
    }
    best = max(summary["candidates"].values(), key=lambda m: m["mrr@20"])["mrr@20"]
    assert summary["candidates"][summary["chosen"]]["mrr@20"] == best
    # The hybrid holds the plain GRU4Rec among its weights: it is never worse on valid.
    hybrid, plain = summary["candidates"]["hybrid:rsc15"], summary["candidates"]["gru4rec:rsc15"]
    assert hybrid["mrr@20"] >= plain["mrr@20"]
    ranker = summary["candidates"]["ranker:rsc15"]
    assert ranker["ranker_rounds"] >= 1 and 0 < ranker["candidate_recall"] <= 1
    assert summary["test"]["family"] == model_family(out)
    assert "(chosen)" in result.output
    evaluated = runner.invoke(
        app,
        ["evaluate", str(out), str(revisit_prepared), "--json", str(tmp_path / "m.json")],
    )
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["mrr@20"] == pytest.approx(summary["test"]["mrr@20"])


def test_select_without_a_valid_split_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = runner.invoke(
        app, ["select", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--no-track"]
    )
    assert result.exit_code == 2 and "--valid-days" in result.output


@pytest.mark.parametrize("family", ["vsknn", "hybrid", "repeat", "ranker"])
def test_train_any_family_from_the_cli(revisit_prepared: Path, tmp_path: Path, family: str) -> None:
    import polars as pl

    out, metrics = tmp_path / family, tmp_path / f"{family}.json"
    result = runner.invoke(
        app,
        [
            "train",
            str(revisit_prepared),
            "--model",
            family,
            "--out",
            str(out),
            *TINY_GRU,
            "--json",
            str(metrics),
            "--no-track",
        ],
    )
    assert result.exit_code == 0, result.output
    assert model_family(out) == family
    written = json.loads(metrics.read_text())
    again = runner.invoke(
        app,
        [
            "evaluate",
            str(out),
            str(revisit_prepared),
            "--json",
            str(tmp_path / "again.json"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again.json").read_text())["mrr@20"] == pytest.approx(
        written["mrr@20"]
    )
    recs = tmp_path / "recs.parquet"
    served = runner.invoke(
        app,
        [
            "recommend",
            str(out),
            "--input",
            str(revisit_prepared / "test.parquet"),
            "--out",
            str(recs),
        ],
    )
    assert served.exit_code == 0, served.output
    assert recs.is_file()
    table = pl.read_parquet(recs).sort("session_id", "rank")
    assert table.columns == ["session_id", "rank", "item_id", "score"]
    test_sessions = pl.read_parquet(revisit_prepared / "test.parquet")["session_id"]
    assert set(table["session_id"].to_list()) == set(test_sessions.to_list())
    per_session = table.group_by("session_id", maintain_order=True).agg(
        pl.col("rank"), pl.col("item_id").n_unique().alias("distinct"), pl.col("score")
    )
    for ranks, distinct, scores in per_session.select("rank", "distinct", "score").iter_rows():
        # The default k (20) of a catalogue of 80 items: ranks 1..20 of distinct items, best first.
        assert ranks == list(range(1, 21)) and distinct == 20
        assert scores == sorted(scores, reverse=True)
    catalogue = set(load_items(revisit_prepared)["item_id"].to_list())
    assert set(table["item_id"].to_list()) <= catalogue


def test_train_refuses_an_unknown_family(revisit_prepared: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            str(revisit_prepared),
            "--model",
            "transformer",
            "--out",
            str(tmp_path / "m"),
            "--no-track",
        ],
    )
    assert result.exit_code == 2
    assert "'transformer' is not a model family: use one of gru4rec, repeat," in result.output


def test_select_tracks_a_parent_run_and_a_run_per_candidate(
    revisit_prepared: Path, tmp_path: Path
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(
        app,
        [
            "select",
            str(revisit_prepared),
            "--out",
            str(tmp_path / "m"),
            "--candidates",
            "spop,vsknn",
            "--tracking-uri",
            uri,
            "--register",
            "best",
        ],
    )
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["gru4rec-select"])
    parent = runs[runs["tags.mlflow.runName"].str.startswith("select")].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert sorted(children["tags.mlflow.runName"]) == ["spop", "vsknn"]
    assert children["metrics.valid_mrr_at_20"].notna().all()
    assert parent["tags.chosen"] in ("spop", "vsknn") and parent["metrics.test_mrr_at_20"] > 0
    served = mlflow.pyfunc.load_model("models:/best/1")
    ids = load_items(revisit_prepared)["item_id"].head(2).to_list()
    assert len(served.predict(pd.DataFrame({"items": [ids]}), params={"k": 3})) == 3
