"""Functions stay readable in one sitting: a command parses, calls and prints (a body of at
most 40 lines, its option declarations aside); a library function's body is at most 60
lines and takes at most 12 parameters (options travel as `gru4rec.options` objects). The
commands and the public API may take more parameters: each is an option of the contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted((ROOT / "gru4rec" / "commands").glob("*_commands.py"))
OPEN = {ROOT / "gru4rec" / "api.py", ROOT / "gru4rec" / "cli.py", *COMMANDS}


def _functions(path: Path) -> list[tuple[str, int, int]]:
    """(name, body lines without the docstring, parameters without self/cls) of each
    function in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant
        ):
            body = body[1:] or body
        lines = (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1
        args = node.args
        names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        params = len([n for n in names if n not in ("self", "cls")])
        found.append((f"{path.name}:{node.lineno} {node.name}", lines, params))
    return found


LIBRARY = sorted(
    path
    for folder in (ROOT / "gru4rec", ROOT / "pipelines")
    for path in folder.rglob("*.py")
    if path not in OPEN
)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_functions_are_short_and_take_few_parameters(path: Path) -> None:
    long = [(name, lines) for name, lines, _ in _functions(path) if lines > 60]
    wide = [(name, params) for name, _, params in _functions(path) if params > 12]
    assert not long and not wide


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_commands_are_thin(path: Path) -> None:
    commands = [f for f in _functions(path) if not f[0].rpartition(" ")[2].startswith("_")]
    assert not [(name, lines) for name, lines, _ in commands if lines > 40]


def test_the_measure_counts_what_it_should(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    path.write_text(
        f'def f(self, {", ".join(f"a{i}" for i in range(13))}):\n    """Doc."""\n{body}\n'
    )
    ((_, lines, params),) = _functions(path)
    assert (lines, params) == (61, 13)
