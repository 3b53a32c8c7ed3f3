"""Every library the package imports is a declared dependency: of the base install, or of the
extra named for the commands that need it (Ray for `--engine ray`), never one that arrives
only because another package happens to bring it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS_FOR_COMMANDS = {"ray"}  # extras a command may need; "dev" is for developing


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> the files importing it, over gru4rec/ and pipelines/."""
    found: dict[str, set[str]] = {}
    for folder in ("gru4rec", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("gru4rec", "pipelines"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_library_is_declared() -> None:
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in EXTRAS_FOR_COMMANDS:
        declared |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    distributions = packages_distributions()
    missing = {}
    for module, files in sorted(_third_party_imports().items()):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared: {missing}"


def test_every_declared_dependency_is_imported() -> None:
    distributions = packages_distributions()
    imported = {
        d.lower().replace("_", "-")
        for module in _third_party_imports()
        for d in distributions.get(module, [module])
    }
    unused = {_name(r) for r in PROJECT["dependencies"]} - imported
    assert not unused, f"declared but never imported: {sorted(unused)}"
