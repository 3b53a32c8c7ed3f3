"""The logged model behind a real `mlflow models serve` on 127.0.0.1: every documented
request form, session ids passed through, params, and HTTP 400 with what to send."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import polars as pl
import pytest

from benchmarks.local_server import free_port, running_server
from benchmarks.serving_bench import serve_command
from gru4rec.serving import tracking
from gru4rec.serving.recommend import Recommender
from tests.rankings import assert_same_ranking


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve")
    with tracking.start_run(f"sqlite:///{root / 'mlflow.db'}", "serving", "log"):
        info = tracking.log_model(tiny_model)
    model = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model"))
    port = free_port()
    command, env = serve_command(Path(model), port)
    url = f"http://127.0.0.1:{port}"
    with running_server(command, f"{url}/ping", root / "serve.log", env):
        yield url


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def ids(tiny_model: Path) -> list[int]:
    return pl.read_parquet(tiny_model / "items.parquet")["item_id"].head(3).to_list()


def _rows(answer: dict) -> list[dict]:
    return answer["predictions"]


def test_every_request_form_with_session_ids(served: str, ids: list[int]) -> None:
    a, b = ids, ids[:2]  # sessions of different lengths
    forms = {
        "dataframe_split": {
            "dataframe_split": {"columns": ["session_id", "items"], "data": [["a", a], ["b", b]]}
        },
        "dataframe_records": {
            "dataframe_records": [{"session_id": "a", "items": a}, {"session_id": "b", "items": b}]
        },
        "inputs": {"inputs": {"session_id": ["a", "b"], "items": [a, b]}},
    }
    answers = {}
    for name, body in forms.items():
        status, answer = _post(served, {**body, "params": {"k": 3}})
        assert status == 200, (name, answer)
        answers[name] = _rows(answer)
        assert {row["session_id"] for row in answers[name]} == {"a", "b"}, name
        assert max(row["rank"] for row in answers[name]) == 3
    assert answers["dataframe_split"] == answers["dataframe_records"] == answers["inputs"]
    # `instances`: MLflow's parser makes arrays of this form, so sessions of one length.
    status, answer = _post(
        served, {"instances": [{"session_id": 7, "items": a}, {"session_id": 8, "items": a}]}
    )
    assert status == 200, answer
    assert {row["session_id"] for row in _rows(answer)} == {7, 8}
    for session in (7, 8):  # the default k: 20 ranks each
        ranks = [row["rank"] for row in _rows(answer) if row["session_id"] == session]
        assert ranks == list(range(1, 21)), session
    # Without session ids: sessions by position; the default k is 20 (capped by the catalogue).
    status, answer = _post(served, {"inputs": {"items": [a]}})
    assert status == 200 and {row["session"] for row in _rows(answer)} == {0}
    assert "session_id" not in _rows(answer)[0] and len(_rows(answer)) == 20


def test_bad_requests_get_400_and_what_to_send(served: str, ids: list[int]) -> None:
    # A field named wrong: MLflow's own check of the declared inputs says which is missing.
    status, answer = _post(served, {"inputs": {"item": [ids]}})
    assert status == 400 and "missing inputs ['items']" in answer["message"], answer
    # Ids that are not lists, and a k below 1: the model's check says what to send.
    for body in (
        {"inputs": {"items": [1, 2]}},
        {"dataframe_split": {"columns": ["items"], "data": [[ids]]}, "params": {"k": 0}},
    ):
        status, answer = _post(served, body)
        assert status == 400, (body, answer)
        assert "bad request" in answer["message"] and "dataframe_split" in answer["message"]


def test_generated_dockerfile_installs_the_pinned_cpu_environment(
    tiny_model: Path, tmp_path: Path
) -> None:
    # What `mlflow models build-docker` builds from, without a Docker engine: the image's
    # Dockerfile and the model it copies, whose requirements name the CPU build of torch.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.start_run(uri, "serving", "log"):
        tracking.log_model(tiny_model, registered_name="tiny")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "generate-dockerfile",
            "-m",
            "models:/tiny/1",
            "-d",
            str(tmp_path / "docker"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dockerfile = (tmp_path / "docker" / "Dockerfile").read_text()
    assert "_install_pyfunc_deps('/opt/ml/model'" in dockerfile
    requirements = (tmp_path / "docker" / "model_dir" / "requirements.txt").read_text().split()
    assert f"--extra-index-url={tracking.TORCH_CPU_INDEX}" in requirements or (
        tracking.TORCH_CPU_INDEX in requirements
    )
    assert any(r.startswith("torch==") and r.endswith("+cpu") for r in requirements)
    assert any(r.startswith("faiss-cpu==") for r in requirements)


@pytest.mark.slow
def test_default_environment_manager_serves_from_the_registry(
    tiny_model: Path, tmp_path: Path
) -> None:
    # `mlflow models serve -m models:/NAME@champion` as a user runs it, with the default
    # environment manager: a fresh virtualenv built from the logged requirements alone
    # (minutes: it installs torch). Run with `pytest -m slow -k default_environment`.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.start_run(uri, "serving", "log"):
        version = tracking.log_model(tiny_model, registered_name="tiny").registered_model_version
    mlflow.MlflowClient(uri).set_registered_model_alias("tiny", "champion", version)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/tiny@champion",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # PIP_RETRIES=0: where PyPI comes from a local mirror and PyTorch's index cannot be
    # reached (a sandbox), pip falls back at once instead of retrying each package.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PIP_RETRIES": "0",
        "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),
    }
    url = f"http://127.0.0.1:{port}"
    items = pl.read_parquet(tiny_model / "items.parquet")["item_id"].head(3).to_list()
    with running_server(command, f"{url}/ping", tmp_path / "serve.log", env, timeout=1500):
        status, answer = _post(url, {"inputs": {"items": [items]}, "params": {"k": 5}})
    assert status == 200, answer
    expected, _ = Recommender.from_path(tiny_model, device="cpu").recommend([items], k=5)
    # Another process with its own torch build: the same up to near-ties.
    assert_same_ranking(pl.DataFrame(_rows(answer)), expected, "session")
    # The environment was built (not borrowed from this one), with torch's CPU build.
    versions = list((tmp_path / "envs").rglob("site-packages/torch-*.dist-info"))
    assert versions and all(v.name.endswith("+cpu.dist-info") for v in versions), versions


def test_the_answers_are_the_recommenders(served: str, tiny_model: Path, ids: list[int]) -> None:
    sessions = [ids, ids[:2], ids[1:]]
    status, answer = _post(served, {"inputs": {"items": sessions}, "params": {"k": 5}})
    assert status == 200, answer
    expected, _ = Recommender.from_path(tiny_model, device="cpu").recommend(sessions, 5)
    # The server is another process (its own threads and batches): the same up to near-ties.
    served = pl.DataFrame(_rows(answer))
    assert served.height == expected.height == 3 * 5
    assert_same_ranking(served, expected, "session")
    assert all(row["note"] is None for row in _rows(answer))


def test_a_session_of_unknown_items_gets_an_empty_answer_with_the_reason(
    served: str, ids: list[int]
) -> None:
    status, answer = _post(
        served,
        {
            "inputs": {"session_id": ["known", "unknown"], "items": [ids, [-1, -2]]},
            "params": {"k": 3},
        },
    )
    assert status == 200, answer
    rows = _rows(answer)
    unknown = [row for row in rows if row["session_id"] == "unknown"]
    assert len(unknown) == 1 and unknown[0]["rank"] == 0 and unknown[0]["item_id"] is None
    assert "none of the session's items is in the model's catalogue" in unknown[0]["note"]
    assert [row["rank"] for row in rows if row["session_id"] == "known"] == [1, 2, 3]


def test_requests_beyond_the_limits_get_400_and_what_to_do(served: str, ids: list[int]) -> None:
    # The defaults: 10,000 sessions a request, 1,000 events a session.
    status, answer = _post(served, {"inputs": {"items": [[ids[0]]] * 10_001}})
    assert status == 400 and "10,001 sessions in one request, more than 10,000" in answer["message"]
    assert "GRU4REC_SERVING_MAX_SESSIONS" in answer["message"]
    status, answer = _post(served, {"inputs": {"items": [ids * 33_334]}})  # 100,002 events
    assert status == 400 and "holds 100,002 events, more than 1,000" in answer["message"]
    status, answer = _post(served, {"inputs": {"items": [[ids[0]]] * 10_000}, "params": {"k": 1}})
    assert status == 200 and len(_rows(answer)) == 10_000  # at the limit: served


def test_the_serving_benchmarks_run(tiny_model: Path, tiny_prepared: Path, tmp_path: Path) -> None:
    """benchmarks.serving_bench and benchmarks.serving_load on tiny data: their figures come
    from the same code as docs/results.md's."""
    from benchmarks import serving_bench, serving_load

    out = tmp_path / "bench.json"
    argv = ["--model", str(tiny_model), "--data", str(tiny_prepared)]
    assert (
        serving_bench.main(
            [*argv, "--requests", "20", "--sessions", "50", "--batch", "25", "--json", str(out)]
        )
        == 0
    )
    figures = json.loads(out.read_text())
    assert figures["served_sessions_per_s"] > 0 and figures["single_ms"]["p50"] > 0
    assert (
        serving_load.main(
            [
                *argv,
                "--clients",
                "1",
                "2",
                "--seconds",
                "1",
                "--max-requests",
                "40",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    load = json.loads(out.read_text())["load"]
    assert [row["clients"] for row in load] == [1, 2]
    assert all(row["errors"] == 0 and 0 < row["requests"] <= 40 for row in load)
