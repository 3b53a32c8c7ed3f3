"""The layers of docs/architecture.md hold: imports point down, and only down.

    gru4rec.pipelines   the Polars ETL: its own modules, gru4rec.errors and gru4rec.fileio
    gru4rec (library)   never the ETL, the jobs or the commands
    gru4rec.jobs        the ETL and the library, never the commands
    gru4rec.commands    everything (thin Typer commands)

Every import counts, also those inside functions (deferred imports are still imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gru4rec"
ETL_MAY_USE = {"gru4rec.errors", "gru4rec.fileio"}  # leaf helpers: no imports of their own
PURE = {"gru4rec.model", "gru4rec.losses", "gru4rec.optim", "gru4rec.kernels"}
NOT_IN_PURE = ("mlflow", "polars", "typer", "optuna", "faiss")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    return _imports_of(path, _module_name(path))


def _imports_of(path: Path, module: str) -> set[str]:
    """Every module `path` (the module `module`) imports (from-imports name the module
    and each imported name)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    if module.startswith("gru4rec.pipelines"):
        return "etl"
    if module.startswith("gru4rec.jobs"):
        return "jobs"
    if module.startswith(("gru4rec.commands", "gru4rec.cli", "gru4rec.__main__")):
        return "commands"
    return "library"


def _ours(imports: set[str]) -> set[str]:
    return {name for name in imports if name == "gru4rec" or name.startswith("gru4rec.")}


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").exists() or (
        PACKAGE.parent / relative / "__init__.py"
    ).exists()


def _etl_violations(imports: set[str]) -> set[str]:
    return {
        name for name in _ours(imports)
        if _is_module(name) and _layer(name) != "etl" and name not in ETL_MAY_USE | {"gru4rec"}
    }  # fmt: skip


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) == "etl"])
def test_the_etl_imports_only_itself_and_the_leaf_helpers(module: str) -> None:
    bad = _etl_violations(MODULES[module])
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) == "library"])
def test_the_library_never_imports_the_etl_the_jobs_or_the_commands(module: str) -> None:
    bad = {name for name in _ours(MODULES[module]) if _layer(name) != "library"}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) == "jobs"])
def test_the_jobs_never_import_the_commands(module: str) -> None:
    bad = {name for name in _ours(MODULES[module]) if _layer(name) == "commands"}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_model_losses_optimiser_and_kernels_import_no_service_library(module: str) -> None:
    bad = {name for name in MODULES[module] if name.split(".")[0] in NOT_IN_PURE}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    # The rules must be able to fail: the old batch recommendation job sat in the ETL
    # package and imported the model's recommender, deferred inside a function.
    module = tmp_path / "job.py"
    module.write_text("def run():\n    from gru4rec.recommend import Recommender\n")
    assert _etl_violations(_imports_of(module, "gru4rec.pipelines.job")) == {"gru4rec.recommend"}
    assert "gru4rec.pipelines.prepare" in MODULES  # the ETL is where the rules look
