"""The README works as written: a new user's own log reaches recommendations with the three
commands at its top, and its Python example runs; it is a manual of the product as it is
(at most 400 lines, no record of how the work went)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
HISTORY = re.compile(
    r"\bsession [0-9]+\b|\bissue [0-9]+\b|\bthe old code\b|\bused to\b|\bbefore that change\b"
    r"|\bthe final code\b|\b[0-9a-f]{7,40}\b(?= \()",
    re.IGNORECASE,
)


def _block(heading: str, language: str) -> str:
    """The first fenced block of `language` under the README's `heading`."""
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def users_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated log written as a user's CSV: session_id, item_id, timestamp."""
    root = tmp_path_factory.mktemp("user")
    clicks = generate_clicks(SyntheticLog(n_sessions=1500, n_items=80, days=10, seed=3))
    clicks.select("session_id", "item_id", pl.col("time").alias("timestamp")).write_csv(
        root / "clicks.csv"
    )
    return root


def test_the_readme_is_a_manual() -> None:
    assert len(README.splitlines()) <= 400
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = HISTORY.findall(path.read_text())
        assert not found, f"{path.name} tells history: {found}"


def test_three_commands_from_the_top_of_the_readme(users_csv: Path) -> None:
    commands = _block("Your own log in three commands", "bash").replace("\\\n", " ")
    lines = [line.split() for line in commands.splitlines() if line.strip()]
    assert [line[:2] for line in lines] == [
        ["gru4rec", "prepare"],
        ["gru4rec", "select"],
        ["gru4rec", "recommend"],
    ]
    for line in lines:
        done = subprocess.run(
            [sys.executable, "-m", "gru4rec", *line[1:]],
            cwd=users_csv,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (line, done.stderr[-3000:])
    recommendations = pl.read_parquet(users_csv / "recommendations.parquet")
    test_sessions = pl.read_parquet(users_csv / "data" / "test.parquet")["session_id"].n_unique()
    assert recommendations["session_id"].n_unique() == test_sessions
    assert recommendations.columns == ["session_id", "rank", "item_id", "score"]
    assert recommendations["rank"].max() == 20


def test_the_python_example_runs(
    users_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _block("In Python", "python")
    ids = pl.read_csv(users_csv / "clicks.csv")["item_id"].unique().sort().to_list()
    example = re.sub(
        r"\[\[214536502, 214577561\], \[214577561\]\]", f"[[{ids[0]}, {ids[1]}], [{ids[1]}]]", code
    )
    assert example != code  # the ids were found and replaced by the log's own
    example = example.replace('"clicks.csv"', repr(str(users_csv / "clicks.csv")))
    example = example.replace(
        'result = gru4rec.select("data", "model")',
        'result = gru4rec.select("data", "model", settings={"n_epochs": 2})',
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    recommendations = namespace["recommendations"]
    assert recommendations["session"].to_list() == [0] * 10 + [1] * 10
    assert namespace["result"].chosen in namespace["result"].candidates
