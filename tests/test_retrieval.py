"""FAISS retrieval and batch recommendations: exactness, agreement with evaluation, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.jobs.train_evaluate import evaluate_split
from gru4rec.scoring.neural import item_vectors, query_vectors
from gru4rec.scoring.topk import exact_top_k
from gru4rec.serving.checkpoint import load_checkpoint
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.retrieval import IndexOptions, ItemIndex
from tests.rankings import assert_same_ranking

runner = CliRunner()


def test_exact_index_equals_brute_force_scores(tiny_model: Path) -> None:
    model, _config, _items = load_checkpoint(tiny_model, device="cpu")
    states = torch.randn(50, model.item_weight.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        brute = model.score_all(states)  # h @ W.T + b
    index = ItemIndex.build(item_vectors(model), IndexOptions("flat"))
    scores, ids = index.search(query_vectors(states), 10)
    # One beyond k: the 10th item may tie with the 11th.
    expected = torch.topk(brute, 11, dim=1)
    values, indices = expected.values.numpy(), expected.indices.numpy()
    np.testing.assert_allclose(scores, values[:, :10], rtol=1e-5, atol=1e-5)
    # FAISS sums in another order than torch, so scores differ by float32 rounding (above)
    # and near-tied items may swap: each item found scores what it should, and items match
    # wherever both neighbours' scores are further than that rounding can close.
    found = np.take_along_axis(brute.numpy(), ids, axis=1)
    np.testing.assert_allclose(found, scores, rtol=1e-5, atol=1e-5)
    apart = np.abs(np.diff(values, axis=1)) > 1e-4 * np.maximum(1.0, np.abs(values[:, 1:]))
    untied = np.concatenate([np.ones((50, 1), bool), apart[:, :-1]], axis=1) & apart
    assert untied.mean() > 0.5  # most ranks are compared item for item
    assert (ids[untied] == indices[:, :10][untied]).all()


@pytest.mark.parametrize("index", ["flat", "none"])
def test_recommendations_for_test_prefixes_reproduce_the_evaluation(
    tiny_model: Path, tiny_prepared: Path, index: str
) -> None:
    recommender = Recommender.from_path(tiny_model, device="cpu", index=index)
    if index == "flat":
        assert recommender.index is not None and recommender.index.options.kind == "flat"
    test = pl.read_parquet(tiny_prepared / "test.parquet")
    prefixes, targets = [], []
    for items in test.group_by("session_id", maintain_order=True).agg("item_id")["item_id"]:
        for end in range(1, len(items)):
            prefixes.append(items[:end].to_list())
            targets.append(items[end])
    table, report = recommender.recommend(prefixes, 20)
    assert report.n_unknown_items == 0 and not report.empty_sessions
    hit_table = table.join(
        pl.DataFrame({"session": range(len(targets)), "item_id": targets}),
        on=["session", "item_id"],
    )
    metrics = evaluate_split(
        recommender.scorer,
        load_checkpoint(tiny_model, "cpu")[2],
        tiny_prepared,
        cutoffs=(20,),
        ties="standard",
    )
    assert metrics["n_events"] == len(targets)
    assert hit_table.height / len(targets) == pytest.approx(metrics["recall@20"], abs=1e-9)
    assert (1 / hit_table["rank"]).sum() / len(targets) == pytest.approx(
        metrics["mrr@20"], abs=1e-9
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # fused loop / torch.topk
def test_exact_top_k_in_blocks_equals_topk_of_all_scores(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    states = torch.randn(1500, 8, generator=generator, dtype=dtype)
    weight = torch.randn(5000, 8, generator=generator, dtype=dtype)
    bias = torch.randn(5000, 1, generator=generator, dtype=dtype)
    # 1,024 x 2,048 scores per block: two blocks of states, three of items (one short).
    values, indices = exact_top_k(states, weight, bias, 25, block_floats=1024 * 2048)
    expected = torch.topk(torch.addmm(bias.T, states, weight.T), 25, dim=1)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(values, expected.values)


@pytest.mark.parametrize(
    "kind, knobs, exhaustive",
    [
        ("ivf", ["--nlist", "4", "--nprobe", "4"], True),  # every cluster probed
        ("hnsw", ["--ef-search", "200"], True),  # wider than the 60-item catalogue
        ("ivf", ["--nlist", "8", "--nprobe", "1"], False),  # one cluster of eight
    ],
)
def test_approximate_indexes_measure_their_recall(
    tiny_model: Path, tmp_path: Path, kind: str, knobs: list[str], exhaustive: bool
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    result = runner.invoke(app, ["index", str(model_dir), "--kind", kind, "--no-track", *knobs])
    assert result.exit_code == 0, result.output
    loaded = ItemIndex.load(model_dir)
    recall = loaded.meta["recall_at_20"]
    assert loaded.options.kind == kind
    exact = Recommender.from_path(model_dir, device="cpu", index="none")
    approx = Recommender.from_path(model_dir, device="cpu", index=kind)
    sessions = [[exact.item_ids[i], exact.item_ids[i + 1]] for i in range(40)]
    got, want = approx.recommend(sessions, 5)[0], exact.recommend(sessions, 5)[0]
    overlap = got.join(want, on=["session", "item_id"]).height / want.height
    if exhaustive:  # the search sees every item: the exact answer, and recall measured as 1
        assert recall == 1.0 and overlap == 1.0
    else:  # it misses some, and says so
        assert recall < 1.0 and overlap < 1.0
    with pytest.raises(CheckpointError, match="--kind flat"):
        Recommender.from_path(model_dir, device="cpu", index="flat")


def test_exclude_seen_and_unknown_items(tiny_model: Path) -> None:
    recommender = Recommender.from_path(tiny_model, device="cpu", index="none")
    first, second = recommender.item_ids[0], recommender.item_ids[1]
    table, report = recommender.recommend(
        [[first, "nope", second], ["nope"]], 10, exclude_seen=True
    )
    assert report.n_unknown_items == 2 and report.empty_sessions == (1,)
    assert table["session"].unique().to_list() == [0]
    assert table["rank"].to_list() == list(range(1, 11))
    assert not set(table["item_id"].to_list()) & {first, second}
    with pytest.raises(ConfigError, match="k must be"):
        recommender.recommend([[first]], 0)
    with pytest.raises(ConfigError, match="k must be"):
        recommender.recommend([[first]], recommender.n_items + 1)


def test_stale_index_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    assert runner.invoke(app, ["index", str(model_dir), "--no-track"]).exit_code == 0
    state = torch.load(model_dir / "weights.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, model_dir / "weights.pt")
    with pytest.raises(CheckpointError, match="rebuild"):
        ItemIndex.load(model_dir)


def test_recommend_cli_writes_long_parquet(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "recs.parquet"
    result = runner.invoke(
        app,
        [
            "recommend",
            str(tiny_model),
            "--input",
            str(tiny_prepared / "test.parquet"),
            "--out",
            str(out),
            "-k",
            "5",
            "--exclude-seen",
        ],
    )
    assert result.exit_code == 0, result.output
    recs = pl.read_parquet(out)
    assert recs.columns == ["session_id", "rank", "item_id", "score"]
    sessions = pl.read_parquet(tiny_prepared / "test.parquet")["session_id"].unique(
        maintain_order=True
    )
    assert recs["session_id"].unique(maintain_order=True).to_list() == sessions.to_list()
    assert recs.group_by("session_id").agg(pl.col("rank").max())["rank"].max() == 5
    assert "sessions served" in result.output
    again = tmp_path / "again.parquet"
    repeated = runner.invoke(
        app,
        [
            "recommend",
            str(tiny_model),
            "--input",
            str(tiny_prepared / "test.parquet"),
            "--out",
            str(again),
            "-k",
            "5",
            "--exclude-seen",
        ],
    )
    assert repeated.exit_code == 0, repeated.output
    assert pl.read_parquet(again).equals(recs)  # deterministic


def test_recommend_csv_input_with_column_options(tiny_model: Path, tmp_path: Path) -> None:
    items = Recommender.from_path(tiny_model, device="cpu").item_ids.to_list()
    path = tmp_path / "in.csv"
    path.write_text(f"s,i,pos\na,{items[0]},0\na,{items[1]},1\nb,999999999,0\n")
    out = tmp_path / "recs.parquet"
    result = runner.invoke(
        app,
        [
            "recommend",
            str(tiny_model),
            "--input",
            str(path),
            "--out",
            str(out),
            "--format",
            "generic",
            "--session-col",
            "s",
            "--item-col",
            "i",
            "--order-col",
            "pos",
            "-k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out)["session_id"].unique().to_list() == ["a"]
    assert "1 skipped" in result.output and "1 unknown" in result.output


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("missing-column", ["--item-col", "nope"], "column 'nope'"),
        ("empty", [], "the file is empty"),
        ("all-unknown", [], "no session has an item the model knows"),
        ("ok", ["-k", "0"], "Invalid value for '-k'"),
        ("ok", ["-k", "100000"], "k must be between 1 and the number of items"),
        ("ok", ["--index", "hnsw"], "has no index"),
        ("missing-dir", [], "does not exist"),
        ("read-only", [], "cannot write"),
    ],
)
def test_recommend_bad_input(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    source = tiny_prepared / "test.parquet"
    if setup == "empty":
        source = tmp_path / "empty.csv"
        source.write_text("")
    elif setup == "all-unknown":
        source = tmp_path / "unknown.parquet"
        pl.DataFrame({"session_id": [1, 1], "item_id": [-5, -6], "time": [0.0, 1.0]}).write_parquet(
            source
        )
    out = {
        "missing-dir": tmp_path / "nope" / "r.parquet",
        "read-only": Path("/proc/r.parquet"),
    }.get(setup, tmp_path / "r.parquet")
    result = runner.invoke(
        app, ["recommend", str(tiny_model), "--input", str(source), "--out", str(out), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".r.parquet.tmp-*"))


def test_recommend_from_an_mlflow_alias(
    tiny_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_prepared),
            "--out",
            str(model),
            "--set",
            "n_epochs=1",
            "--set",
            "layers=16",
            "--set",
            "n_sample=32",
            "--register",
            "recs",
            "--test-split",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["index", str(model)]).exit_code == 0
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("recs", "champion", "1")
    run_id = client.get_model_version("recs", "1").run_id
    assert {a.path for a in client.list_artifacts(run_id, "index")} >= {
        "index/items.faiss",
        "index/index.json",
    }
    out = tmp_path / "recs.parquet"
    result = runner.invoke(
        app,
        [
            "recommend",
            "models:/recs@champion",
            "--input",
            str(tiny_prepared / "test.parquet"),
            "--out",
            str(out),
            "-k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    direct = tmp_path / "direct.parquet"
    exact = runner.invoke(
        app,
        [
            "recommend",
            str(model),
            "--input",
            str(tiny_prepared / "test.parquet"),
            "--out",
            str(direct),
            "-k",
            "3",
            "--index",
            "none",
        ],
    )
    assert exact.exit_code == 0, exact.output
    # The saved FAISS index against torch's exact scores: the same up to near-ties.
    assert_same_ranking(pl.read_parquet(out), pl.read_parquet(direct), "session_id")
    bad = runner.invoke(
        app,
        [
            "recommend",
            "models:/nope@champion",
            "--input",
            str(tiny_prepared / "test.parquet"),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    assert bad.exit_code == 2 and "cannot be fetched from MLflow" in bad.output
