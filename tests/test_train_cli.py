"""`gru4rec train` / `gru4rec evaluate` with MLflow: the embedded SQLite store and a real
`mlflow server` on 127.0.0.1; reloads re-evaluate to the same metrics; bad input exits 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gru4rec.cli import app

runner = CliRunner()
TINY = [
    "--preset",
    "rsc15",
    "--set",
    "n_epochs=2",
    "--set",
    "layers=32",
    "--set",
    "n_sample=64",
    "--set",
    "batch_size=16",
]


@pytest.fixture()
def data_dir(tiny_prepared: Path) -> Path:
    return tiny_prepared


def train(data_dir: Path, out: Path, *extra: str) -> dict:
    json_path = out.with_suffix(".json")
    result = runner.invoke(
        app, ["train", str(data_dir), "--out", str(out), *TINY, "--json", str(json_path), *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads(json_path.read_text()) if json_path.exists() else {}


def evaluate(model: Path | str, data_dir: Path, tmp_path: Path, *extra: str) -> dict:
    json_path = tmp_path / "eval.json"
    result = runner.invoke(
        app, ["evaluate", str(model), str(data_dir), "--json", str(json_path), *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads(json_path.read_text())


def check_run(
    tracking_uri: str,
    metrics: dict,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["gru4rec-tests"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["metrics.test_recall_at_20"] == pytest.approx(metrics["recall@20"])
    assert run["metrics.test_mrr_at_20"] == pytest.approx(metrics["mrr@20"])
    assert run["metrics.events_per_s"] > 0 and run["params.layers"] == "32"
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run["run_id"], "train_loss")
    assert [m.step for m in history] == [0, 1]
    assert len(client.get_metric_history(run["run_id"], "valid_recall_at_20")) == 2
    artifacts = {a.path for a in client.list_artifacts(run["run_id"], "checkpoint")}
    assert {
        "checkpoint/weights.pt",
        "checkpoint/config.json",
        "checkpoint/items.parquet",
    } <= artifacts
    # The registered model, through an alias, recommends the same as the model directory.
    client.set_registered_model_alias("tiny", "champion", "1")
    pyfunc = mlflow.pyfunc.load_model("models:/tiny@champion")
    from gru4rec.serving.recommend import Recommender

    items = Recommender.from_path(model_dir, device="cpu").item_ids.head(3).to_list()
    served = pyfunc.predict(pd.DataFrame({"items": [items]}), params={"k": 5})
    direct, _ = Recommender.from_path(model_dir, device="cpu").recommend([items], 5)
    assert served["item_id"].tolist() == direct["item_id"].to_list()
    # The checkpoint reloaded from the run's artifacts re-evaluates to the same metrics.
    local = Path(client.download_artifacts(run["run_id"], "checkpoint", str(tmp_path)))
    again = evaluate(local, _data_dir(local), tmp_path)
    assert again["recall@20"] == pytest.approx(metrics["recall@20"])
    assert again["mrr@20"] == pytest.approx(metrics["mrr@20"])
    # `gru4rec evaluate` fetches it from the run itself, and from the registry alias.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    for uri in (f"runs:/{run['run_id']}/checkpoint", "models:/tiny@champion"):
        fetched = evaluate(uri, _data_dir(local), tmp_path)
        assert fetched["recall@20"] == pytest.approx(metrics["recall@20"])
        assert fetched["mrr@20"] == pytest.approx(metrics["mrr@20"])


def _data_dir(model_dir: Path) -> Path:
    return Path(json.loads((model_dir / "config.json").read_text())["extra"]["data_dir"])


def test_train_and_track_in_the_embedded_sqlite_store(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = tmp_path / "model"
    metrics = train(
        data_dir,
        model,
        "--tracking-uri",
        uri,
        "--experiment",
        "gru4rec-tests",
        "--register",
        "tiny",
        "--valid-split",
        "valid",
    )
    assert metrics["ties"] == "conservative" and metrics["n_events"] > 0
    assert {"recall@20", "mrr@20", "ndcg@20", "coverage@20", "n_events", "ties"} <= set(metrics)
    # The model learned the synthetic successor structure far beyond popularity.
    assert metrics["recall@20"] > 0.6
    # `gru4rec evaluate` of the saved directory gives the same numbers.
    assert evaluate(model, data_dir, tmp_path)["recall@20"] == pytest.approx(metrics["recall@20"])
    check_run(uri, metrics, model, tmp_path, monkeypatch)


def test_default_store_is_mlflow_db_in_the_working_directory(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(data_dir, tmp_path / "model", "--experiment", "gru4rec-tests", "--test-split", "none")
    assert (tmp_path / "mlflow.db").exists()


def test_train_against_a_real_mlflow_server(
    data_dir: Path, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the environment variable route
    model = tmp_path / "model"
    metrics = train(
        data_dir,
        model,
        "--experiment",
        "gru4rec-tests",
        "--register",
        "tiny",
        "--valid-split",
        "valid",
    )
    check_run(mlflow_server, metrics, model, tmp_path, monkeypatch)


# ---- bad input: a clear error and exit code 2 ----


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "rsc16"], "rsc16"),
        (["--set", "dropout_p_hidden=-0.1"], "dropout_p_hidden"),
        (["--set", "batch_size=0"], "batch_size"),
        (["--set", "hidden_size=100"], "hidden_size"),
        (["--set", "n_epochs"], "key=value"),
        (["--ties", "optimistic"], "--ties"),
        (["--cutoffs", "0"], "--cutoffs"),
    ],
)
def test_bad_settings(data_dir: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["train", str(data_dir), "--out", str(tmp_path / "m"), "--no-track", *extra]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_data_directory_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "m"), "--no-track"]
    )
    assert result.exit_code == 2 and "items.parquet" in result.output


def test_corrupt_and_mismatched_checkpoints(data_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    train(data_dir, model, "--no-track", "--test-split", "none")
    other = tmp_path / "other"
    train(data_dir, other, "--no-track", "--test-split", "none", "--set", "layers=16")
    os.replace(other / "weights.pt", tmp_path / "weights16.pt")
    (other / "weights.pt").write_bytes((model / "weights.pt").read_bytes())  # 32 units vs config 16
    result = runner.invoke(app, ["evaluate", str(other), str(data_dir)])
    assert result.exit_code == 2 and "weights.pt" in result.output
    (model / "weights.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["evaluate", str(model), str(data_dir)])
    assert result.exit_code == 2 and "weights.pt" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), str(data_dir)])
    assert result.exit_code == 2


def test_cutoffs_as_a_list(data_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    train(data_dir, model, "--no-track", "--test-split", "none")
    metrics = evaluate(model, data_dir, tmp_path, "--cutoffs", "3,7", "--ties", "median")
    assert metrics["cutoffs"] == [3, 7] and "recall@7" in metrics and metrics["ties"] == "median"


def test_logging_the_model_prints_no_mlflow_advice(data_dir: Path, tmp_path: Path) -> None:
    import warnings

    import mlflow

    from gru4rec.serving import tracking

    model = tmp_path / "model"
    train(data_dir, model, "--no-track", "--test-split", "none")
    with (
        tracking.start_run(f"sqlite:///{tmp_path / 'mlflow.db'}", "gru4rec-tests", "log"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        info = tracking.log_model(model)
    assert mlflow.pyfunc.load_model(info.model_uri) is not None
    advice = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert advice == [], advice


def test_the_logged_model_pins_a_cpu_serving_environment(data_dir: Path, tmp_path: Path) -> None:
    # Regression: requirements.txt said `torch` (the multi-GB CUDA build on PyPI),
    # unpinned, and lacked faiss-cpu; the serving environment is built from it.
    import sys
    from importlib.metadata import version

    import mlflow
    import torch

    from gru4rec.serving import tracking

    model = tmp_path / "model"
    train(data_dir, model, "--no-track", "--test-split", "none")
    with tracking.start_run(f"sqlite:///{tmp_path / 'mlflow.db'}", "gru4rec-tests", "log"):
        info = tracking.log_model(model)
    folder = Path(
        mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl"))
    )
    lines = [line for line in (folder / "requirements.txt").read_text().splitlines() if line]
    requirements = [line for line in lines if not line.startswith("--")]
    assert all("==" in line for line in requirements), requirements
    pinned = dict(line.split("==") for line in requirements)
    base = torch.__version__.split("+")[0]
    if sys.platform.startswith("linux"):
        assert f"--extra-index-url {tracking.TORCH_CPU_INDEX}" in lines
        assert pinned["torch"] == f"{base}+cpu"
    for name in ("faiss-cpu", "numpy", "polars", "pyarrow", "pandas", "mlflow"):
        assert pinned[name] == version(name), name
