"""Run the notebooks top to bottom and save them with their outputs, plots included, so that
they read without running: `make notebooks` (after `make demo`, whose data they show).

    python notebooks/execute.py [NAME.ipynb ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat

FOLDER = Path(__file__).resolve().parent
NOTEBOOKS = ("explore_data.ipynb", "compare_runs.ipynb")


def execute(name: str) -> Path:
    """Execute `name` in a real kernel from the notebooks' folder and write it back in place
    (a temporary sibling renamed over it, so a failing cell leaves the file as it was)."""
    path = FOLDER / name
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(FOLDER)}}
    )
    client.execute()
    for cell in notebook.cells:  # what a reader needs: no warnings of the kernel's imports
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
    staging = path.with_name(f".{path.name}.tmp")
    nbformat.write(notebook, staging)
    os.replace(staging, path)
    return path


def main(names: list[str]) -> None:
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the plots
    for name in names or NOTEBOOKS:
        print(f"wrote {execute(name)}")


if __name__ == "__main__":
    main(sys.argv[1:])
