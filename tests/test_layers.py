"""The layers of the README's development section hold: imports point down, never in a circle.

    gru4rec.pipelines  (pipelines/)  the Polars ETL: itself and the leaf helpers only
    gru4rec.network                   the network and its training
    gru4rec.scoring                   the scoring contract, families, evaluation
    gru4rec.serving                   model directories, retrieval, recommendation, tracking
    gru4rec.jobs                      the ETL and the library, never the commands
    gru4rec.commands, gru4rec.cli     everything (thin Typer commands)

Each library room imports only the rooms below it (and `gru4rec.errors`, `gru4rec.fileio`,
the leaf helpers). Every import counts, also those inside functions and under
TYPE_CHECKING (deferred imports are still imports), and no modules import each other in
a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each package's sources are: pipelines/ installs as gru4rec.pipelines (setup.py).
SOURCES = {"gru4rec": ROOT / "gru4rec", "gru4rec.pipelines": ROOT / "pipelines"}
LEAVES = {
    "gru4rec.errors",
    "gru4rec.fileio",
    "gru4rec.options",
}  # leaf helpers: no imports but each other
ROOMS = ("network", "scoring", "serving")  # the library, bottom up
PURE = {
    "gru4rec.network.model",
    "gru4rec.network.losses",
    "gru4rec.network.optim",
    "gru4rec.network.kernels",
    "gru4rec.network.kernels.__main__",
    "gru4rec.network.kernels.compiled_backend",
    "gru4rec.network.kernels.interface",
    "gru4rec.network.kernels.loader",
    "gru4rec.network.kernels.subnormals",
    "gru4rec.network.kernels.torch_backend",
}
NOT_IN_PURE = ("mlflow", "polars", "typer", "optuna", "faiss")


def _module_name(path: Path, sources: dict[str, Path]) -> str:
    """The dotted name of the module at `path`; the deepest package folder holding it wins."""
    package, folder = max(
        ((package, folder) for package, folder in sources.items() if path.is_relative_to(folder)),
        key=lambda entry: len(entry[1].parts),
    )
    name = ".".join([package, *path.relative_to(folder).with_suffix("").parts])
    return name.removesuffix(".__init__")


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


def _scan(sources: dict[str, Path]) -> dict[str, set[str]]:
    """Module name -> the names it imports, for every module under `sources`."""
    paths = {path for folder in sources.values() for path in folder.rglob("*.py")}
    names = {path: _module_name(path, sources) for path in paths}
    return {names[path]: _imports_of(path, names[path]) for path in sorted(paths)}


MODULES = _scan(SOURCES)


def _layer(module: str) -> str:
    if module.startswith("gru4rec.pipelines"):
        return "etl"
    if module in LEAVES:
        return "leaf"
    for room in (*ROOMS, "jobs", "commands"):
        if module.startswith(f"gru4rec.{room}"):
            return room
    if module.startswith(("gru4rec.cli", "gru4rec.__main__")):
        return "commands"
    return "root"


def _ours(imports: set[str], modules: dict[str, set[str]] = MODULES) -> set[str]:
    """The imported names that are modules of this project."""
    return {name for name in imports if name in modules}


def _allowed(layer: str) -> set[str]:
    """The layers a module of `layer` may import."""
    if layer == "etl":
        return {"etl", "leaf"}
    if layer in ROOMS:
        return {"leaf", *ROOMS[: ROOMS.index(layer) + 1]}
    if layer == "jobs":
        return {"leaf", "etl", "jobs", *ROOMS}
    return {"leaf", "etl", "jobs", "commands", "root", *ROOMS}


def _violations(module: str, imports: set[str], modules: dict[str, set[str]] = MODULES) -> set[str]:
    allowed = _allowed(_layer(module))
    return {name for name in _ours(imports, modules) if _layer(name) not in allowed}


def _circles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (each holds a circle), and
    modules that import themselves; Tarjan's algorithm."""
    graph = {
        module: sorted(_ours(imports, modules) - {module}) for module, imports in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return groups


def test_the_scan_sees_every_room() -> None:
    for module in (
        "gru4rec.pipelines.prepare",
        "gru4rec.network.model",
        "gru4rec.scoring.contract",
        "gru4rec.serving.recommend",
        "gru4rec.jobs.nightly",
        "gru4rec.commands.model_commands",
    ):
        assert module in MODULES, module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_points_down(module: str) -> None:
    bad = _violations(module, MODULES[module])
    assert not bad, f"{module} ({_layer(module)}) imports {sorted(bad)}"


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert _circles(MODULES) == []


@pytest.mark.parametrize("module", sorted(PURE))
def test_model_losses_optimiser_and_kernels_import_no_service_library(module: str) -> None:
    bad = {name for name in MODULES[module] if name.split(".")[0] in NOT_IN_PURE}
    assert not bad, f"{module} imports {sorted(bad)}"


def _write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"gru4rec": folder / "gru4rec", "gru4rec.pipelines": folder / "pipelines"}


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # A batch recommendation job in the ETL that imports the recommender, deferred inside
    # a function; the network importing the serving room's checkpoints.
    sources = _write(
        tmp_path,
        {
            "pipelines/job.py": "def run():\n    from gru4rec.serving.recommend import Recommender\n",
            "gru4rec/serving/recommend.py": "",
            "gru4rec/serving/checkpoint.py": "",
            "gru4rec/network/train.py": "from gru4rec.serving import checkpoint\n",
        },
    )
    modules = _scan(sources)
    assert _violations("gru4rec.pipelines.job", modules["gru4rec.pipelines.job"], modules) == {
        "gru4rec.serving.recommend"
    }
    assert _violations("gru4rec.network.train", modules["gru4rec.network.train"], modules) == {
        "gru4rec.serving.checkpoint"
    }


def test_the_checker_sees_a_circle(tmp_path: Path) -> None:
    # The base network's factory importing its repeat-aware subclass, whose scorer imported
    # the scoring contract, which imported the subclass back (deferred imports all); and
    # two ETL modules importing each other, one only for type checking.
    sources = _write(
        tmp_path,
        {
            "gru4rec/model.py": "def from_config():\n    from gru4rec.repeat import RepeatGRU4Rec\n",
            "gru4rec/repeat.py": "from gru4rec.model import GRU4Rec\nfrom gru4rec.scorers import x\n",
            "gru4rec/scorers.py": "def as_scorer():\n    from gru4rec.repeat import RepeatScorer\n",
            "gru4rec/retrieval.py": "from gru4rec.model import GRU4Rec\n",
            "pipelines/buckets.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from gru4rec.pipelines.prepare import PrepareOptions\n"
            ),
            "pipelines/prepare.py": "from gru4rec.pipelines import buckets\n",
        },
    )
    assert _circles(_scan(sources)) == [
        ["gru4rec.model", "gru4rec.repeat", "gru4rec.scorers"],
        ["gru4rec.pipelines.buckets", "gru4rec.pipelines.prepare"],
    ]


def _top_level_imports(folder: Path) -> dict[Path, set[str]]:
    """Each file under `folder` and the top-level names of what it imports."""
    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[path] = names
    return found


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        # The library never needs the benchmarks or the tests to run.
        ("gru4rec", {"benchmarks", "tests"}),
        ("pipelines", {"benchmarks", "tests"}),
        # Helpers that tests and benchmarks share (local servers, the reference's figures)
        # live in benchmarks/, which the tests may import: never the other way round.
        ("benchmarks", {"tests"}),
    ],
)
def test_the_library_imports_neither_benchmarks_nor_tests(folder: str, forbidden: set[str]) -> None:
    bad = {
        str(path.relative_to(ROOT)): sorted(names & forbidden)
        for path, names in _top_level_imports(ROOT / folder).items()
        if names & forbidden
    }
    assert not bad
