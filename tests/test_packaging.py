"""The package as users get it: a wheel with the compiled kernels, no compiler needed.

Builds the wheel from this checkout (as the Docker image's build stage does), installs it
into a fresh directory, and in a process whose PATH has no C compiler checks that the
compiled kernels load from the installed package and train.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHECK = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    import numpy as np, torch
    import gru4rec
    from gru4rec.network import kernels
    from gru4rec.network.config import GRU4RecConfig
    from gru4rec.network.data import SessionData
    from gru4rec.network.fast_step import FastStep
    from gru4rec.network.model import GRU4Rec
    from gru4rec.network.train import fit

    target = Path(sys.argv[1]).resolve()
    assert shutil.which("cc") is None and shutil.which("gcc") is None, "a compiler on PATH"
    assert Path(gru4rec.__file__).resolve().parent == target / "gru4rec", gru4rec.__file__
    compiled = kernels.compiled()
    assert compiled is not None, kernels.unavailable_reason()
    assert compiled.path.parent == target / "gru4rec" / "network", compiled.path
    import gru4rec.pipelines.prepare as prepare
    assert Path(prepare.__file__).resolve().parent == target / "gru4rec" / "pipelines"
    assert kernels.kernels_for(torch.device("cpu"), torch.float32) is compiled
    sessions = [[1, 2, 3, 4], [2, 3, 5], [4, 5, 6, 1, 2]] * 20
    config = GRU4RecConfig(layers=(8,), batch_size=4, n_sample=5, n_epochs=1, seed=1)
    model = GRU4Rec.from_config(7, config)
    step = FastStep(model, config, np.ones(7), torch.device("cpu"))
    assert step.kernels is compiled
    data = SessionData.from_sessions(sessions)
    result = fit(model, data, config, item_support=np.bincount(data.item_idx, minlength=7),
                 num_threads=1)
    assert np.isfinite(result.epochs[-1].loss)
    print(compiled.name)
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of the checkout without build outputs (setuptools would reuse a stale
    # build/ directory), as a fresh clone has it.
    source = tmp_path_factory.mktemp("source") / "gru4rec"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "build",
            "*.egg-info",
            "*.so",
            "__pycache__",
            "mlruns",
            "demo",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            "work-*",
            "*.db",
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("gru4rec-*.whl")
    return built


def test_wheel_carries_the_compiled_kernels_and_no_sources_to_compile(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("gru4rec/network/_kernels.") and n.endswith(".so") for n in names)
    # The top-level pipelines/ folder installs as gru4rec.pipelines: no generic top-level name.
    assert "gru4rec/pipelines/prepare.py" in names
    assert not [n for n in names if n.startswith("pipelines/")]
    assert "-linux_x86_64" in wheel.name or "-linux_" in wheel.name  # a platform wheel


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The wheel installed into a fresh directory, and an environment whose PATH holds only
    the interpreter (no cc, gcc, ld) and whose sys.path has the installed package first
    (before this checkout's editable install)."""
    root = tmp_path_factory.mktemp("installed")
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    python_bin = root / "bin"
    python_bin.mkdir()
    (python_bin / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in {"CC", "PYTHONPATH", "GRU4REC_KERNELS"}}
    env.update(PATH=str(python_bin), PYTHONPATH=str(target), TMPDIR=str(root))
    assert shutil.which("cc", path=env["PATH"]) is None
    return target, env


def test_installed_wheel_trains_on_the_compiled_kernels_without_a_compiler(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    target, env = installed
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("compiled-")
    assert "not available" not in done.stderr  # no fallback warning


def test_installed_wheel_prepares_trains_and_recommends_without_a_compiler(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _target, env = installed

    def gru4rec(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "gru4rec", *args],
            cwd=tmp_path,
            env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (args, done.stderr[-3000:])

    gru4rec("generate", "--out", "clicks.tsv.gz", "--sessions", "600", "--items", "60")
    gru4rec("prepare", "clicks.tsv.gz", "--out", "data")
    gru4rec("train", "data", "--out", "model", "--set", "n_epochs=1", "--set", "layers=16")
    gru4rec(
        "recommend", "model", "--input", "data/test.parquet", "--out", "recs.parquet", "-k", "5"
    )
    recommendations = pl.read_parquet(tmp_path / "recs.parquet")
    assert recommendations.height > 0 and recommendations["rank"].max() == 5
