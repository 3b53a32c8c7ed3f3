"""Shared fixtures: where the real click logs live, and skipping cleanly without them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.local_server import free_port, running_server

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or a skip that says which file is missing and why."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(
            f"real data {path} is absent: the real-data checks need ../shared/data beside "
            "the project (see ../shared/data/README.md)"
        )
    return path


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic data set (1,500 sessions, 60 items) shared by the tests."""
    from gru4rec.pipelines.prepare import prepare
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

    root = tmp_path_factory.mktemp("tiny")
    clicks = generate_clicks(SyntheticLog(n_sessions=1500, n_items=60, days=10, seed=5))
    log = write_click_log(clicks, root / "clicks.tsv", "gru4rec-tsv")
    prepare([log], root / "prepared", resolve_spec("gru4rec-tsv"))
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_model(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on `tiny_prepared` for two epochs (no tracking)."""
    from gru4rec.jobs.train_evaluate import train_model
    from gru4rec.network.config import apply_overrides, get_preset

    settings = {"n_epochs": "2", "layers": "32", "n_sample": "64", "batch_size": "16"}
    config = apply_overrides(get_preset("rsc15"), settings)
    out = tmp_path_factory.mktemp("model") / "model"
    train_model(tiny_prepared, config, out, device="cpu", num_threads=1)
    return out


@contextmanager
def running_mlflow_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend and artifacts in `folder`),
    with its process (a test may stop it); stopped on exit."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{port}"
    with running_server(command, f"{url}/health", folder / "server.log") as server:
        yield url, server


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1: SQLite backend, a temporary artifact root."""
    with running_mlflow_server(tmp_path) as (url, _server):
        yield url
