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
from pipelines import nightly
from pipelines.nightly import NightlyConfig
from pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

runner = CliRunner()
GOOD = {"n_epochs": 2, "layers": 32, "n_sample": 64, "batch_size": 16}
WORSE = {"n_epochs": 1, "layers": 4, "n_sample": 8, "batch_size": 16, "learning_rate": 0.001}


def write_config(
    tmp_path: Path, settings: dict, tracking_uri: str | None, name: str = "nightly.toml"
) -> Path:
    log = tmp_path / "clicks.tsv"
    if not log.exists():
        write_click_log(generate_clicks(SyntheticLog(n_sessions=1200, n_items=50, days=6, seed=9)),
                        log, "gru4rec-tsv")  # fmt: skip
    lines = [
        'experiment = "nightly-tests"', 'registered_model = "tiny"', 'work_dir = "work"',
        *([f'tracking_uri = "{tracking_uri}"'] if tracking_uri else []),
        "[data]", 'inputs = ["clicks.tsv"]', "valid_days = 0",
        "[model]", 'preset = "rsc15"', 'device = "cpu"', "[model.set]",
        *(f"{key} = {value}" for key, value in settings.items()),
        "[serving]", "k = 5",
    ]  # fmt: skip
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


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\nformat = 'gru4rec-tsv'\n", "needs `inputs`"),
        ("[data]\ninputs = ['x.tsv']\n[model]\npreset = 'nope'\n", "nope"),
        ("[data]\ninputs = ['x.tsv']\n[model.set]\ndropout_p_hidden = -1\n", "dropout_p_hidden"),
        ("[data]\ninputs = ['x.tsv']\ncolour = 'blue'\n", "unknown key [data] 'colour'"),
        ("metric = 'auc'\n[data]\ninputs = ['x.tsv']\n", "metric 'auc'"),
        ("[data\n", "cannot be parsed"),
    ],
)
def test_bad_configuration(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        NightlyConfig.load(path)
    result = runner.invoke(app, ["nightly", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_yaml_configuration(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text(
        "work_dir: out\ndata:\n  inputs: [clicks.tsv]\n  test_days: 2\nmodel:\n  set:\n    layers: [64, 64]\n"
    )
    config = NightlyConfig.load(path)
    assert config.inputs == (tmp_path / "clicks.tsv",) and config.work_dir == tmp_path / "out"
    assert config.prepare == {"test_days": 2} and config.overrides == {"layers": "64,64"}
    assert os.fspath(config.work_dir).startswith(os.fspath(tmp_path))
