"""`gru4rec compare` (table + plot of an experiment's runs) and `gru4rec tune` (random search
on the validation split with nested MLflow runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.commands.compare import by_data, differing_params, load_runs, table_rows
from gru4rec.errors import ConfigError
from gru4rec.jobs.tuning import AUTHORS_SPACE, Dimension, _objective, authors_space, parse_dimension
from gru4rec.network.config import apply_overrides, get_preset
from tests.conftest import create_database

runner = CliRunner()
TINY = ["--set", "layers=16", "--set", "n_sample=32", "--set", "batch_size=16"]


def test_compare_lists_runs_best_first_with_differing_params(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for epochs in ("1", "3"):
        result = runner.invoke(
            app,
            [
                "train",
                str(tiny_prepared),
                "--out",
                str(tmp_path / epochs),
                *TINY,
                "--set",
                f"n_epochs={epochs}",
                "--tracking-uri",
                uri,
                "--experiment",
                "cmp",
                "--run-name",
                f"epochs-{epochs}",
            ],
        )
        assert result.exit_code == 0, result.output
    runs = load_runs("cmp", "mrr@20", uri)
    scores = [r.metrics["mrr_at_20"] for r in runs]
    assert len(runs) == 2 and scores == sorted(scores, reverse=True)
    assert differing_params(runs) == ["n_epochs"]
    header, rows = table_rows(runs, "mrr@20")
    assert header[:3] == ["run", "family", "n_epochs"] and "recall@20" in header
    assert [row[0] for row in rows] == [r.name for r in runs] and {row[2] for row in rows} == {
        "1",
        "3",
    }
    assert {row[1] for row in rows} == {"gru4rec"} and "events/s" in header
    plot = tmp_path / "cmp.png"
    result = runner.invoke(
        app, ["compare", "--experiment", "cmp", "--tracking-uri", uri, "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    assert "epochs-3" in result.output and plot.stat().st_size > 10_000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_never_ranks_runs_on_different_data_together(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    from gru4rec.pipelines.prepare import prepare
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = write_click_log(
        generate_clicks(SyntheticLog(n_sessions=600, n_items=40, days=5, seed=8)),
        tmp_path / "other.tsv",
        "gru4rec-tsv",
    )
    prepare([log], tmp_path / "other", resolve_spec("gru4rec-tsv"))
    for data in (tiny_prepared, tmp_path / "other"):
        result = runner.invoke(
            app,
            [
                "baselines",
                str(data),
                "--candidates",
                "pop,spop",
                "--experiment",
                "mixed",
                "--tracking-uri",
                uri,
                "--json",
                str(tmp_path / "baselines.json"),
            ],
        )
        assert result.exit_code == 0, result.output
        written = json.loads((tmp_path / "baselines.json").read_text())
        assert set(written) == {"pop", "spop"} and written["spop"]["n_events"] > 0
        assert "repeat_mrr@20" in written["spop"] and "coverage@20" in written["pop"]
    runs = load_runs("mixed", "mrr@20", uri)
    groups = by_data(runs)
    assert set(groups) == {str(tiny_prepared.resolve()), str((tmp_path / "other").resolve())}
    for group in groups.values():
        assert sorted(r.family for r in group) == ["pop", "spop"]
        scores = [r.metrics["mrr_at_20"] for r in group]
        assert scores == sorted(scores, reverse=True)
    result = runner.invoke(
        app,
        [
            "compare",
            "--experiment",
            "mixed",
            "--tracking-uri",
            uri,
            "--plot",
            str(tmp_path / "mixed.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("runs on ") == 2


def test_compare_errors(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ConfigError, match="no MLflow experiment 'nope'"):
        load_runs("nope", "mrr@20", uri)
    with pytest.raises(ConfigError, match="--metric"):
        load_runs("nope", "auc", uri)
    result = runner.invoke(app, ["compare", "--experiment", "nope", "--tracking-uri", uri])
    assert result.exit_code == 2


def test_parse_dimension() -> None:
    assert parse_dimension("layers=64:512") == Dimension("layers", 64, 512, integer=True)
    assert parse_dimension("learning_rate=0.01:0.2:log") == Dimension(
        "learning_rate", 0.01, 0.2, log=True
    )
    assert parse_dimension("loss=cross-entropy|bpr-max").choices == ("cross-entropy", "bpr-max")
    for bad in ("layers", "layers=5", "lr=0.2:0.1", "lr=0:1:log", "lr=a:b"):
        with pytest.raises(ConfigError):
            parse_dimension(bad)


def test_authors_spaces_are_kept_apart_per_loss() -> None:
    cross_entropy = {d.name for d in authors_space(get_preset("rsc15"))}
    bpr_max = {d.name for d in authors_space(get_preset("diginetica"))}
    assert "bpreg" not in cross_entropy and "elu_param" not in cross_entropy
    assert bpr_max == cross_entropy | {"bpreg", "elu_param"}
    learning_rate = next(d for d in AUTHORS_SPACE if d.name == "learning_rate")
    assert learning_rate.log and (learning_rate.low, learning_rate.high) == (0.01, 0.25)


def test_suggestions_stay_in_range() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    below = 0
    for _ in range(300):
        trial = study.ask()
        for dimension in AUTHORS_SPACE:
            value = dimension.suggest(trial)
            if dimension.choices:
                assert value in dimension.choices
            else:
                assert dimension.low <= float(value) <= dimension.high
                assert not dimension.integer or value.isdigit()
        below += float(trial.params["learning_rate"]) < (0.01 * 0.25) ** 0.5
        study.tell(trial, 0.0)
    assert 0.4 < below / 300 < 0.6  # log-uniform: half the mass below the geometric middle


def test_a_trial_below_the_pruner_stops_after_its_first_epoch(tiny_prepared: Path) -> None:
    base = apply_overrides(get_preset("rsc15"), {"n_epochs": "3", "layers": "8", "n_sample": "16"})
    job = {
        "data_dir": str(tiny_prepared),
        "metric": "mrr@20",
        "device": "cpu",
        "threads": 1,
        "tracking": None,
    }
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        _objective(trial, job, base, [Dimension("learning_rate", 0.05, 0.1)])
    assert trial.user_attrs["epochs"] == 1 and "mrr@20" in trial.user_attrs["metrics"]


def test_tune_runs_nested_trials_on_the_validation_split(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(
        app,
        [
            "tune",
            str(tiny_prepared),
            "--trials",
            "2",
            "--tracking-uri",
            uri,
            "--study",
            "shared",
            "--space",
            "layers=8:24",
            "--space",
            "learning_rate=0.05:0.3:log",
            # choices spelled unlike the logged float params ("1" vs 1.0)
            "--space",
            "elu_param=0|1",
            "--set",
            "loss=bpr-max",
            "--set",
            "n_epochs=1",
            "--set",
            "n_sample=16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best: gru4rec train" in result.output
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["gru4rec-tune"])
    parent = runs[runs["tags.mlflow.runName"].str.startswith("tune")]
    trials = runs[runs["tags.mlflow.runName"].str.startswith("trial")]
    assert len(parent) == 1 and len(trials) == 2
    assert (trials["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert trials["metrics.valid_mrr_at_20"].notna().all()
    assert trials["tags.searched.elu_param"].isin(["0", "1"]).all()
    assert (
        trials["params.elu_param"].astype(float) == trials["tags.searched.elu_param"].astype(float)
    ).all()
    assert parent["metrics.best_valid_mrr_at_20"].iloc[0] == pytest.approx(
        trials["metrics.valid_mrr_at_20"].max()
    )
    bad = runner.invoke(
        app,
        [
            "tune",
            str(tiny_prepared),
            "--trials",
            "1",
            "--tracking-uri",
            uri,
            "--space",
            "colour=1:2",
        ],
    )
    assert bad.exit_code == 2 and "colour" in bad.output
    # The default storage lies beside the SQLite MLflow store; two workers continue the same
    # study to 4 finished trials (2 new ones), each logged under the new parent run.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    more = runner.invoke(
        app,
        [
            "tune",
            str(tiny_prepared),
            "--trials",
            "4",
            "--jobs",
            "2",
            "--study",
            "shared",
            "--tracking-uri",
            uri,
            "--space",
            "layers=8:24",
            "--space",
            "learning_rate=0.05:0.3:log",
            "--space",
            "elu_param=0|1",
            "--set",
            "loss=bpr-max",
            "--set",
            "n_epochs=1",
            "--set",
            "n_sample=16",
        ],
    )
    assert more.exit_code == 0, more.output
    study = optuna.load_study(storage=storage, study_name="shared")
    finished = len([t for t in study.trials if t.state.is_finished()])
    assert 4 <= finished <= 5  # the other worker may be finishing a trial when 4 are reached
    runs = mlflow.search_runs(experiment_names=["gru4rec-tune"])
    parents = runs[runs["tags.mlflow.runName"].str.startswith("tune")]
    newest = parents.sort_values("start_time")["run_id"].iloc[-1]
    assert (runs["tags.mlflow.parentRunId"] == newest).sum() == finished - 2


def test_two_tune_workers_share_one_study_on_postgresql(
    local_postgres: str, tiny_prepared: Path, tmp_path: Path
) -> None:
    """As on two machines: two `gru4rec tune` processes on one Optuna study in PostgreSQL
    (the compose file's database), each tracking to the same MLflow store."""
    storage = create_database(local_postgres, "optuna")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The stores' tables made once, as a tracking server and a database administrator would
    # (two processes creating a new store at the same instant race on its schema).
    optuna.storages.RDBStorage(storage)
    mlflow.MlflowClient(tracking).search_experiments()
    command = [
        sys.executable,
        "-m",
        "gru4rec",
        "tune",
        str(tiny_prepared),
        "--trials",
        "4",
        "--storage",
        storage,
        "--study",
        "shared",
        "--no-prune",
        "--tracking-uri",
        tracking,
        "--experiment",
        "tune-pg",
        "--set",
        "n_epochs=1",
        "--set",
        "layers=8",
        "--space",
        "learning_rate=0.01:0.2:log",
    ]
    workers = [
        subprocess.Popen(
            [*command, "--seed", str(seed)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) >= 4
    mlflow.set_tracking_uri(tracking)
    runs = mlflow.search_runs(experiment_names=["tune-pg"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 2  # one per worker, each with trials of its own
    for parent in parents["run_id"]:
        assert (runs["tags.mlflow.parentRunId"] == parent).sum() >= 1
