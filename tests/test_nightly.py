"""`gru4rec nightly`: stages as nested MLflow runs, the alias moves only for a better model,
a failed stage changes nothing, re-runs are safe; against SQLite and a real mlflow server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import polars as pl
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import ConfigError
from gru4rec.jobs import nightly
from gru4rec.jobs.nightly import NightlyConfig
from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

runner = CliRunner()
GOOD = {"n_epochs": 2, "layers": 32, "n_sample": 64, "batch_size": 16}
WORSE = {"n_epochs": 1, "layers": 4, "n_sample": 8, "batch_size": 16, "learning_rate": 0.001}


def write_config(
    tmp_path: Path,
    settings: dict,
    tracking_uri: str | None,
    name: str = "nightly.toml",
    model: tuple[str, ...] = (),
) -> Path:
    log = tmp_path / "clicks.tsv"
    if not log.exists():
        write_click_log(
            generate_clicks(SyntheticLog(n_sessions=1200, n_items=50, days=6, seed=9)),
            log,
            "gru4rec-tsv",
        )
    lines = [
        'experiment = "nightly-tests"',
        'registered_model = "tiny"',
        'work_dir = "work"',
        *([f'tracking_uri = "{tracking_uri}"'] if tracking_uri else []),
        "[data]",
        'inputs = ["clicks.tsv"]',
        "valid_days = 0",
        "[model]",
        'preset = "rsc15"',
        'device = "cpu"',
        *model,
        "[model.set]",
        *(f"{key} = {value}" for key, value in settings.items()),
        "[serving]",
        "k = 5",
    ]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def run(config: Path) -> dict:
    result = runner.invoke(app, ["nightly", str(config)])
    assert result.exit_code == 0, result.output
    current = config.parent / "work" / "current"
    return json.loads((current / "summary.json").read_text())


def champion_version(uri: str) -> str:
    mlflow.set_tracking_uri(uri)
    return str(mlflow.MlflowClient().get_model_version_by_alias("tiny", "champion").version)


def test_alias_moves_only_for_a_better_model_and_failures_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run(write_config(tmp_path, GOOD, uri))
    assert first["promote"] and first["champion"] is None and champion_version(uri) == "1"
    published = (tmp_path / "work" / "current").resolve()
    recs = pl.read_parquet(published / "recommendations.parquet")
    assert recs.columns == ["session_id", "rank", "item_id", "score"] and recs["rank"].max() == 5

    # A deliberately worse configuration: evaluated against the champion, not promoted.
    worse = run(write_config(tmp_path, WORSE, uri, "worse.toml"))
    assert not worse["promote"] and worse["new"] < worse["champion"]
    assert champion_version(uri) == "1" and worse["champion_version"] == "1"
    # Its outputs serve the champion: a copy of version 1 made the recommendations.
    assert (Path(worse["run_dir"]) / "champion_model" / "index" / "items.faiss").exists()

    # The same inputs again: the same model, not strictly better, so nothing moves.
    again = run(write_config(tmp_path, GOOD, uri))
    assert not again["promote"] and again["new"] == pytest.approx(first["new"])
    assert champion_version(uri) == "1"

    # A stage that fails: non-zero exit, alias and published outputs untouched, runs FAILED.
    before = (tmp_path / "work" / "current").resolve()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected failure in the recommend stage")

    monkeypatch.setattr(nightly, "recommend_file", broken)
    better = {**GOOD, "n_epochs": 4}
    result = runner.invoke(
        app, ["nightly", str(write_config(tmp_path, better, uri, "better.toml"))]
    )
    assert result.exit_code != 0
    assert champion_version(uri) == "1"
    assert (tmp_path / "work" / "current").resolve() == before
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 3  # the failed run left nothing
    runs = mlflow.search_runs(experiment_names=["nightly-tests"], order_by=["start_time DESC"])
    failed = runs[runs["status"] == "FAILED"]
    assert set(failed["tags.mlflow.runName"]) == {
        "recommend",
        failed.iloc[-1]["tags.mlflow.runName"],
    }
    assert any(name.startswith("nightly ") for name in failed["tags.mlflow.runName"])
    # With the failure gone, the better model wins and the alias moves.
    monkeypatch.undo()
    fixed = run(write_config(tmp_path, better, uri, "better.toml"))
    assert fixed["promote"] and champion_version(uri) == fixed["new_version"]
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 3  # keep_runs


def test_nightly_against_a_real_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    summary = run(write_config(tmp_path, GOOD, mlflow_server))
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("nightly-tests")
    runs = client.search_runs([experiment.experiment_id])
    names = {r.data.tags["mlflow.runName"].split(" ")[0] for r in runs}
    assert names == {"nightly", "prepare", "train", "evaluate", "index", "recommend", "publish"}
    parent = next(r for r in runs if r.data.tags["mlflow.runName"].startswith("nightly"))
    assert all(
        r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs if r is not parent
    )
    assert parent.data.metrics["promoted"] == 1.0 and all(r.info.status == "FINISHED" for r in runs)
    train = next(r for r in runs if r.data.tags["mlflow.runName"] == "train")
    assert train.data.metrics["events_per_s"] > 0 and "train_loss" in train.data.metrics
    version = client.get_model_version_by_alias("tiny", "champion")
    assert str(version.version) == summary["new_version"] == "1"
    evaluate = next(r for r in runs if r.data.tags["mlflow.runName"] == "evaluate")
    assert evaluate.data.metrics["new_mrr_at_20"] == pytest.approx(summary["new"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "nightly_config.json",
        "summary.json",
    }


def selection_config(
    tmp_path: Path, candidates: list[str], uri: str, name: str, serving: tuple[str, ...] = ()
) -> Path:
    """A log of revisits (most clicks return to an earlier item), a validation day, and a
    barely trained GRU4Rec among the candidates."""
    log = tmp_path / "revisits.tsv"
    if not log.exists():
        spec = SyntheticLog(n_sessions=1200, n_items=60, days=6, seed=3, revisit=0.7, follow=0.2)
        write_click_log(generate_clicks(spec), log, "gru4rec-tsv")
    tiny = {"n_epochs": 1, "layers": 8, "n_sample": 16, "batch_size": 16}
    lines = [
        'experiment = "nightly-select"',
        'registered_model = "tiny"',
        f'work_dir = "{name}"',
        f'tracking_uri = "{uri}"',
        "[data]",
        'inputs = ["revisits.tsv"]',
        "valid_days = 1",
        "[model]",
        'device = "cpu"',
        f"candidates = {json.dumps(candidates)}",
        "[model.set]",
        *(f"{key} = {value}" for key, value in tiny.items()),
        "[serving]",
        "k = 5",
        *serving,
    ]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_nightly_selects_among_three_families_and_serves_the_winner(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = selection_config(tmp_path, ["spop", "gru4rec", "hybrid"], uri, "three")
    result = runner.invoke(app, ["nightly", str(config)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "three" / "current" / "summary.json").read_text())
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["nightly-select"])
    parent = runs[runs["tags.mlflow.runName"].str.startswith("nightly")].iloc[0]
    valid = {
        name: parent[f"metrics.candidate_{name}_valid_mrr_at_20"]
        for name in ("spop", "gru4rec_rsc15", "hybrid_rsc15")
    }
    assert summary["chosen"].replace(":", "_") == max(valid, key=valid.__getitem__)
    assert parent["tags.chosen"] == summary["chosen"]
    assert valid["hybrid_rsc15"] >= valid["gru4rec_rsc15"]  # the hybrid holds plain GRU4Rec


def test_nightly_serves_a_baseline_that_wins_on_valid(tmp_path: Path) -> None:
    """S-POP beats a barely trained GRU4Rec on a log of revisits: it becomes the champion,
    and the registry's pyfunc and `recommend` both serve S-POP's ranking."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_selection(selection_config(tmp_path, ["gru4rec", "spop"], uri, "base"))
    assert summary["chosen"] == "spop" and summary["family"] == "spop" and summary["promote"]
    recs = pl.read_parquet(tmp_path / "base" / "current" / "recommendations.parquet")
    first = recs.filter(pl.col("session_id") == recs["session_id"][0])["item_id"].to_list()
    test = pl.read_parquet(tmp_path / "base" / "current" / "data" / "test.parquet")
    session = test.filter(pl.col("session_id") == recs["session_id"][0])["item_id"].to_list()
    assert set(first[: len(set(session))]) == set(session)  # S-POP: the session's items first
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/tiny@champion")
    import pandas as pd

    answer = served.predict(pd.DataFrame({"items": [session]}), params={"k": 5})
    assert answer["item_id"].tolist() == first
    recommended = runner.invoke(
        app,
        [
            "recommend",
            "models:/tiny@champion",
            "--input",
            str(tmp_path / "base" / "current" / "data" / "test.parquet"),
            "--out",
            str(tmp_path / "r.parquet"),
            "-k",
            "5",
        ],
    )
    assert recommended.exit_code == 0, recommended.output
    assert pl.read_parquet(tmp_path / "r.parquet").equals(recs)


def test_nightly_serves_the_ranker_through_its_index(tmp_path: Path) -> None:
    """The ranker as the only candidate: the index stage indexes its GRU4Rec (HNSW), the
    recommend stage takes the candidates from that index, as `recommend --index hnsw` does."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = selection_config(tmp_path, ["ranker"], uri, "ranker", serving=('index = "hnsw"',))
    summary = run_selection(config)
    assert summary["chosen"] == "ranker:rsc15" and summary["family"] == "ranker"
    current = tmp_path / "ranker" / "current"
    recs = pl.read_parquet(current / "recommendations.parquet")
    data = current / "data" / "test.parquet"
    out = tmp_path / "r.parquet"
    argv = ["recommend", str(current / "model"), "--input", str(data), "--out", str(out)]
    recommended = runner.invoke(app, [*argv, "-k", "5", "--index", "hnsw"])
    assert recommended.exit_code == 0, recommended.output
    assert pl.read_parquet(out).equals(recs) and recs.height > 0


def run_selection(config: Path) -> dict:
    result = runner.invoke(app, ["nightly", str(config)])
    assert result.exit_code == 0, result.output
    return json.loads((config.parent / config.stem / "current" / "summary.json").read_text())


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\nformat = 'gru4rec-tsv'\n", "needs `inputs`"),
        ("[data]\ninputs = ['x.tsv']\n[model]\npreset = 'nope'\n", "nope"),
        ("[data]\ninputs = ['x.tsv']\n[model.set]\ndropout_p_hidden = -1\n", "dropout_p_hidden"),
        ("[data]\ninputs = ['x.tsv']\ncolour = 'blue'\n", "unknown key [data] 'colour'"),
        ("metric = 'auc'\n[data]\ninputs = ['x.tsv']\n", "metric 'auc'"),
        ("[data\n", "cannot be parsed"),
        (
            "[data]\ninputs = ['x.tsv']\nvalid_days = 0\n[model]\ncandidates = ['spop']\n",
            "valid_days is 0",
        ),
        ("[data]\ninputs = ['x.tsv']\n[model]\ncandidates = ['rnn']\n", "unknown candidate"),
        (
            "[data]\ninputs = ['x.tsv']\n[model]\nwarm_start = true\ncandidates = ['spop']\n",
            "does not combine with candidates",
        ),
        ("[data]\ninputs = ['x.tsv']\n[model]\nwarm_epochs = 0\n", "warm_epochs"),
        ("[data]\ninputs = ['x.tsv']\n[model]\nwarm_window_days = -1\n", "warm_window_days"),
    ],
)
def test_bad_configuration(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        NightlyConfig.load(path)
    result = runner.invoke(app, ["nightly", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_nightly_warm_starts_from_the_champion(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    warm = ("warm_start = true", "warm_epochs = 1", "warm_window_days = 3")
    config = write_config(tmp_path, GOOD, uri, model=warm)
    first = run(config)
    assert first["warm_start"] is None and first["promote"]  # no champion yet: from scratch
    champion = champion_version(uri)
    second = run(config)
    assert second["warm_start"] == f"models:/tiny/{champion}"
    meta = json.loads((Path(second["run_dir"]) / "model" / "config.json").read_text())
    assert meta["config"]["n_epochs"] == 1 and meta["extra"]["window_days"] == 3
    assert meta["extra"]["warm_start"]["n_carried"] > 0
    assert meta["extra"]["warm_start"]["chain"] == 1
    # With one night in two from scratch, a champion that is a warm start is not the start.
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("tiny", "champion", second["new_version"])
    every_two = write_config(tmp_path, GOOD, uri, model=(*warm, "warm_scratch_every = 2"))
    assert run(every_two)["warm_start"] is None
    # Another architecture in the configuration: the champion cannot be the start.
    bigger = write_config(tmp_path, {**GOOD, "layers": 48}, uri, model=warm)
    assert run(bigger)["warm_start"] is None


def test_nightly_recommends_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is the optional extra gru4rec[ray]")
    config = write_config(tmp_path, GOOD, f"sqlite:///{tmp_path}/mlflow.db")
    config.write_text(config.read_text().replace("[serving]", '[serving]\nengine = "ray"'))
    summary = run(config)
    output = Path(summary["recommendations"])
    assert output.is_dir() and output.name == "recommendations"
    recs = pl.read_parquet(output / "*.parquet")
    assert recs.columns == ["session_id", "rank", "item_id", "score"] and recs["rank"].max() == 5


def test_yaml_configuration(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        "work_dir: out\ndata:\n  inputs: [clicks.tsv]\n  test_days: 2\nmodel:\n  set:\n    layers: [64, 64]\n"
    )
    config = NightlyConfig.load(path)
    assert config.inputs == (tmp_path / "clicks.tsv",) and config.work_dir == tmp_path / "out"
    assert config.prepare == {"test_days": 2} and config.overrides == {"layers": "64,64"}
    assert os.fspath(config.work_dir).startswith(os.fspath(tmp_path))


def test_compare_shows_the_nightly_history_one_row_per_night(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summaries = [
        run(write_config(tmp_path, GOOD, uri)),
        run(write_config(tmp_path, WORSE, uri, "worse.toml")),
        run(write_config(tmp_path, {**GOOD, "n_epochs": 3}, uri, "longer.toml")),
    ]
    out, plot = tmp_path / "nights.json", tmp_path / "nights.png"
    result = runner.invoke(
        app,
        [
            "compare",
            "--experiment",
            "nightly-tests",
            "--tracking-uri",
            uri,
            "--plot",
            str(plot),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 nights" in result.output and "?" not in result.output
    nights = json.loads(out.read_text())["nights"]
    assert len(nights) == 3  # the stage runs are folded under their night
    for night, summary in zip(nights, summaries, strict=True):
        assert night["decision"] == ("promoted" if summary["promote"] else "kept")
        assert night["family"] == summary["chosen"] == "gru4rec:rsc15"
        assert night["new"] == pytest.approx(summary["new"])
        assert night["champion"] == (
            None if summary["champion"] is None else pytest.approx(summary["champion"])
        )
        assert night["version"] == summary["new_version"]
        first, _, last = night["data window"].partition(" .. ")
        assert first < last
    assert nights[0]["decision"] == "promoted" and nights[0]["champion"] is None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
