"""notebooks/: both run top to bottom in a real kernel (nbclient) on a generated, prepared data
set and on two MLflow runs made by `gru4rec train`; the committed files are kept with their
outputs (`make notebooks`: run in order, plots included, no error, no machine's paths) and a
markdown cell before every plot."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gru4rec.cli import app

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (dev extras)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (dev extras)")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (dev extras)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["explore_data.ipynb", "compare_runs.ipynb"]
EXPERIMENT = "notebook-tests"
TINY = ["--set", "n_epochs=2", "--set", "layers=16", "--set", "n_sample=32"]
RUNS = {  # run name -> extra options: batch sizes differ, one run has a validation curve
    "bs16-valid": ["--set", "batch_size=16", "--valid-split", "valid"],
    "bs32": ["--set", "batch_size=32"],
}


@pytest.fixture(scope="module")
def tracking_uri(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two finished training runs, logged by the CLI into an SQLite store."""
    root = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for name, extra in RUNS.items():
        result = CliRunner().invoke(
            app,
            [
                "train",
                str(tiny_prepared),
                "--out",
                str(root / name),
                *TINY,
                *extra,
                "--tracking-uri",
                uri,
                "--experiment",
                EXPERIMENT,
                "--run-name",
                name,
                "--threads",
                "1",
            ],
        )
        assert result.exit_code == 0, result.output
    return uri


def execute(name: str) -> Any:
    """Run a notebook from its own folder, as Jupyter would; raises on the first failing cell."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return notebook


def outputs(notebook: Any) -> tuple[int, str]:
    """The number of images, and all the text (plain, HTML, streams) the cells printed."""
    images, texts = 0, []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            data = output.get("data", {})
            images += "image/png" in data
            texts += [output.get("text", ""), data.get("text/plain", ""), data.get("text/html", "")]
    return images, html.unescape("\n".join(texts))


@pytest.fixture()
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The kernel inherits this process's environment: the inline backend draws the plots."""
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return monkeypatch


def test_explore_data_runs_on_a_prepared_directory(
    tiny_prepared: Path, kernel_env: pytest.MonkeyPatch
) -> None:
    kernel_env.setenv("GRU4REC_DATA_DIR", str(tiny_prepared))
    images, text = outputs(execute("explore_data.ipynb"))
    assert images == 4  # session lengths, popularity, events over time, cleaning steps
    manifest = json.loads((tiny_prepared / "manifest.json").read_text())
    assert str(tiny_prepared) in text and "unix seconds" in text
    for step in manifest["steps"]:  # the step table is shown in full
        assert step["step"] in text
    assert "first event" in text and "the top 10% of items" in text


def test_compare_runs_runs_on_an_experiment(
    tracking_uri: str, kernel_env: pytest.MonkeyPatch
) -> None:
    kernel_env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    kernel_env.setenv("GRU4REC_EXPERIMENT", EXPERIMENT)
    images, text = outputs(execute("compare_runs.ipynb"))
    assert images == 2  # metrics against the cutoff, training curves
    assert f"2 finished runs with test metrics in {EXPERIMENT!r}" in text
    assert all(name in text for name in RUNS)
    assert "batch_size" in text and "recall@20" in text  # the differing setting, the metrics
    assert "1 of 2 runs have a validation curve" in text


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_read_without_running(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown"  # a title and what the notebook needs
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    images, text = outputs(notebook)  # fails on an error output
    assert images == {"explore_data.ipynb": 4, "compare_runs.ipynb": 2}[name]
    assert str(NOTEBOOKS.parent) not in text, "outputs with this machine's paths"
    for previous, cell in zip(notebook.cells, notebook.cells[1:], strict=False):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert previous.cell_type == "markdown", "explain each plot in markdown"
