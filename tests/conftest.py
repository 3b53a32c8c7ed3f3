"""Shared fixtures: where the real click logs live, and skipping cleanly without them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


def prepared_log(root: Path, spec: object) -> Path:
    """A generated log (`SyntheticLog` spec) written under `root` and prepared with one
    validation day: the data `select` needs."""
    from gru4rec.pipelines.options import PrepareOptions
    from gru4rec.pipelines.prepare import prepare
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.pipelines.synthetic import generate_clicks, write_click_log

    log = write_click_log(generate_clicks(spec), root / "clicks.tsv", "gru4rec-tsv")  # type: ignore[arg-type]
    prepare([log], root / "prepared", resolve_spec("gru4rec-tsv"), PrepareOptions(valid_days=1))
    return root / "prepared"


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


def _postgres_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = {
        version: initdb
        for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (version := _postgres_version(initdb.parents[1].name)) is not None
    }
    if not installed:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
    return installed[max(installed)].parent


def _postgres_version(folder: str) -> tuple[int, ...] | None:
    """The version a folder of /usr/lib/postgresql is named for ('9.6' -> (9, 6), '15' ->
    (15,)), compared as numbers: as text '9.6' would sort after '15'. None if not a version."""
    parts = folder.split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def _unprivileged() -> tuple[int, int]:
    """The uid and gid PostgreSQL runs as when the tests run as root (it refuses root): the
    `postgres` account where there is one, else `nobody`."""
    import pwd

    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return account.pw_uid, account.pw_gid
    return 65534, 65534


@pytest.fixture()
def local_postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (user `mlflow`, trust); the URI of its
    `postgres` database (`create_database` makes others)."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)"
    )
    bin_dir = _postgres_bin()
    data = Path(tempfile.mkdtemp(prefix="gru4rec-pg-"))
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:
        uid, gid = _unprivileged()
        os.chown(data, uid, gid)
        as_user = {"user": uid, "group": gid, "extra_groups": []}
    cluster, port = data / "cluster", free_port()

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, cwd=data, **as_user)  # type: ignore[call-overload]
        assert done.returncode == 0, done.stdout + done.stderr

    try:
        run(str(bin_dir / "initdb"), "-D", str(cluster), "-U", "mlflow", "--auth=trust")
        options = f"-h 127.0.0.1 -p {port} -k {data}"
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(cluster),
            "-o",
            options,
            "-l",
            str(data / "postgres.log"),
            "-w",
            "start",
        )
        try:
            yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """Create the database `name` on the server of `server` (a local_postgres URI); its URI."""
    from urllib.parse import urlsplit

    import psycopg2

    url = urlsplit(server)
    connection = psycopg2.connect(
        host=url.hostname, port=url.port, user=url.username, dbname="postgres"
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return server.rsplit("/", 1)[0] + "/" + name
