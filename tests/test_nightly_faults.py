"""The nightly job under faults: killed in each stage, tracking server down, two runs at
once, a damaged champion, a diverging model. Each time the champion alias, the published
`current` outputs and the registry stay as they were, and the next run needs no clean-up.

Generated data and tiny models (tests/test_nightly.py's configuration).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.jobs import nightly
from gru4rec.jobs.run_lock import RunLock
from tests.conftest import PROJECT_ROOT, running_mlflow_server
from tests.test_nightly import GOOD, champion_version, run, write_config

runner = CliRunner()
BETTER = {**GOOD, "n_epochs": 3}
STAGES = ("prepare", "train", "evaluate", "index", "recommend")


def _state(tmp_path: Path, uri: str) -> tuple[str, Path, int]:
    """(champion version, where `current` points, registered versions)."""
    mlflow.set_tracking_uri(uri)
    versions = mlflow.MlflowClient().search_model_versions("name = 'tiny'")
    return champion_version(uri), (tmp_path / "work" / "current").resolve(), len(versions)


def _kill_in(stage: str, config: Path) -> None:
    """Run the job in a process of its own and SIGKILL it once `stage` has started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gru4rec", "nightly", str(config)],
        cwd=config.parent,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if f"nightly: {stage}: started" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]


def test_killed_in_each_stage_changes_nothing_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(write_config(tmp_path, GOOD, uri))
    before = _state(tmp_path, uri)
    assert before[0] == "1" and before[2] == 1
    better = write_config(tmp_path, BETTER, uri, "better.toml")
    lock = tmp_path / "work" / "nightly.lock"
    for stage in STAGES:
        _kill_in(stage, better)
        # Alias, published outputs and registry as they were; the record of the killed
        # run is in the lock file, the lock itself was released by the kernel.
        assert _state(tmp_path, uri) == before, stage
        assert json.loads(lock.read_text())["pid"], stage
    # Each run marked what the kill before it left KILLED; the last kill's parent run and
    # stage run are still RUNNING.
    runs = mlflow.search_runs(experiment_names=["nightly-tests"])
    assert (runs["status"] == "KILLED").sum() == 2 * (len(STAGES) - 1)
    assert (runs["status"] == "RUNNING").sum() == 2

    # The next run cleans up after the last killed one and succeeds: the better model wins.
    result = runner.invoke(app, ["nightly", str(better)])
    assert result.exit_code == 0, result.output
    assert "recover: a run did not finish" in result.output
    summary = json.loads((tmp_path / "work" / "current" / "summary.json").read_text())
    assert summary["promote"] and champion_version(uri) == summary["new_version"] == "2"
    assert json.loads(lock.read_text()) == {}
    # No unfinished run directory is left, nor any temporary link.
    for run_dir in (tmp_path / "work" / "runs").iterdir():
        assert (run_dir / "summary.json").exists(), run_dir
    assert not list((tmp_path / "work").glob(".current.tmp-*"))
    # The last killed run's MLflow runs are marked KILLED too.
    runs = mlflow.search_runs(experiment_names=["nightly-tests"])
    assert (runs["status"] == "KILLED").sum() == 2 * len(STAGES)
    assert (runs["status"] == "RUNNING").sum() == 0


def test_a_second_run_at_once_is_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_config(tmp_path, GOOD, uri)
    with RunLock(tmp_path / "work" / "nightly.lock"):  # a run in progress
        result = runner.invoke(app, ["nightly", str(config)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "another run is using this work directory" in text and f"pid {os.getpid()}" in text
    assert not (tmp_path / "work" / "runs").exists()
    run(config)  # and once it is over, the job runs


def test_tracking_server_unreachable_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = write_config(tmp_path, GOOD, "http://127.0.0.1:9")  # nothing listens there
    result = runner.invoke(app, ["nightly", str(config)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in text
    assert "Nothing was run" in text and "Traceback" not in result.output
    assert not (tmp_path / "work" / "runs").exists()


def test_tracking_server_lost_in_the_middle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    (tmp_path / "server").mkdir()
    with running_mlflow_server(tmp_path / "server") as (url, server):
        first = run(write_config(tmp_path, GOOD, url))
        published = (tmp_path / "work" / "current").resolve()
        train = nightly._train

        def server_dies_during_training(*args: object, **kwargs: object) -> dict:
            server.terminate()
            server.wait(timeout=30)
            return train(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(nightly, "_train", server_dies_during_training)
        better = write_config(tmp_path, BETTER, url, "better.toml")
        result = runner.invoke(app, ["nightly", str(better)])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "nightly stage 'train' failed" in text and "did not answer" in text
        assert "Nothing was published" in text
        assert (tmp_path / "work" / "current").resolve() == published
        assert len(list((tmp_path / "work" / "runs").iterdir())) == 1
    monkeypatch.undo()
    # The server back on the same store: nothing moved, and the next run cleans up.
    with running_mlflow_server(tmp_path / "server") as (url, _server):
        assert champion_version(url) == first["new_version"]
        after = runner.invoke(app, ["nightly", str(write_config(tmp_path, BETTER, url, "b.toml"))])
        assert after.exit_code == 0, after.output
        runs = mlflow.search_runs(experiment_names=["nightly-tests"])
        assert (runs["status"] == "RUNNING").sum() == 0
        assert (runs["status"] == "KILLED").sum() >= 2  # the lost run's parent and stage


def test_a_damaged_champion_is_reported_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(write_config(tmp_path, GOOD, uri))
    fetch = nightly._fetch

    def damaged(config: nightly.NightlyConfig, version: str) -> Path:
        copy = tmp_path / f"damaged-{version}"
        shutil.copytree(fetch(config, version), copy)
        weights = copy / "weights.pt"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return copy

    monkeypatch.setattr(nightly, "_fetch", damaged)
    # Even a worse model replaces a champion that cannot serve; the failure is on record.
    worse = {**GOOD, "n_epochs": 1, "learning_rate": 0.001}
    summary = run(write_config(tmp_path, worse, uri, "worse.toml"))
    assert summary["promote"] and summary["champion"] is None
    assert summary["champion_error"].startswith("version 1 cannot serve")
    assert champion_version(uri) == summary["new_version"] == "2"
    runs = mlflow.search_runs(experiment_names=["nightly-tests"], order_by=["start_time DESC"])
    evaluate = runs[runs["tags.mlflow.runName"] == "evaluate"].iloc[0]
    assert evaluate["tags.champion_error"].startswith("version 1 cannot serve")


def test_a_diverging_model_stops_the_train_stage_and_the_champion_stays(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(write_config(tmp_path, GOOD, uri))
    before = _state(tmp_path, uri)
    diverging = {**GOOD, "learning_rate": 1e30}
    result = runner.invoke(
        app, ["nightly", str(write_config(tmp_path, diverging, uri, "nan.toml"))]
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "nightly stage 'train' failed: training diverged" in text and "at epoch 0" in text
    assert _state(tmp_path, uri) == before


def test_the_module_runs_as_a_command() -> None:
    # The kill test runs `python -m gru4rec`; make sure that entry point exists.
    assert (PROJECT_ROOT / "gru4rec" / "__main__.py").exists()


def test_nan_scores_stop_the_evaluate_stage_and_the_champion_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(write_config(tmp_path, GOOD, uri))
    before = _state(tmp_path, uri)
    load_scorer = nightly.load_scorer

    def nan_weights(*args: object, **kwargs: object) -> tuple:
        scorer, items = load_scorer(*args, **kwargs)  # type: ignore[arg-type]
        scorer.model.item_weight.data.fill_(float("nan"))
        return scorer, items

    monkeypatch.setattr(nightly, "load_scorer", nan_weights)
    result = runner.invoke(app, ["nightly", str(write_config(tmp_path, BETTER, uri, "b.toml"))])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "nightly stage 'evaluate' failed" in text and "NaN" in text
    assert _state(tmp_path, uri) == before
