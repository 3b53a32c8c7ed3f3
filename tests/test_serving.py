"""The logged model behind a real `mlflow models serve` on 127.0.0.1: every documented
request form, session ids passed through, params, and HTTP 400 with what to send."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import polars as pl
import pytest

from benchmarks.local_server import free_port, running_server
from gru4rec import tracking


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve")
    with tracking.start_run(f"sqlite:///{root / 'mlflow.db'}", "serving", "log"):
        info = tracking.log_model(tiny_model)
    model = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model"))
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager",
               "local", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    # the server runs `uvicorn` from PATH: this environment's
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
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
        "dataframe_split": {"dataframe_split": {"columns": ["session_id", "items"],
                                                "data": [["a", a], ["b", b]]}},
        "dataframe_records": {"dataframe_records": [{"session_id": "a", "items": a},
                                                    {"session_id": "b", "items": b}]},
        "inputs": {"inputs": {"session_id": ["a", "b"], "items": [a, b]}},
    }  # fmt: skip
    answers = {}
    for name, body in forms.items():
        status, answer = _post(served, {**body, "params": {"k": 3}})
        assert status == 200, (name, answer)
        answers[name] = _rows(answer)
        assert {row["session_id"] for row in answers[name]} == {"a", "b"}, name
        assert max(row["rank"] for row in answers[name]) == 3
    assert answers["dataframe_split"] == answers["dataframe_records"] == answers["inputs"]
    # `instances`: MLflow's parser makes arrays of this form, so sessions of one length.
    status, answer = _post(served, {"instances": [{"session_id": 7, "items": a},
                                                  {"session_id": 8, "items": a}]})  # fmt: skip
    assert status == 200, answer
    assert {row["session_id"] for row in _rows(answer)} == {7, 8}
    # Without session ids: sessions by position; the default k is 20 (capped by the catalogue).
    status, answer = _post(served, {"inputs": {"items": [a]}})
    assert status == 200 and {row["session"] for row in _rows(answer)} == {0}
    assert "session_id" not in _rows(answer)[0] and len(_rows(answer)) == 20


def test_bad_requests_get_400_and_what_to_send(served: str, ids: list[int]) -> None:
    # A field named wrong: MLflow's own check of the declared inputs says which is missing.
    status, answer = _post(served, {"inputs": {"item": [ids]}})
    assert status == 400 and "missing inputs ['items']" in answer["message"], answer
    # Ids that are not lists, and a k below 1: the model's check says what to send.
    for body in ({"inputs": {"items": [1, 2]}},
                 {"dataframe_split": {"columns": ["items"], "data": [[ids]]},
                  "params": {"k": 0}}):  # fmt: skip
        status, answer = _post(served, body)
        assert status == 400, (body, answer)
        assert "bad request" in answer["message"] and "dataframe_split" in answer["message"]
