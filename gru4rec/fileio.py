"""Atomic writes: an output directory or a JSON file appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gru4rec.errors import Gru4RecError


def swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished `staging` directory to `target`.

    An existing `target` is moved aside first and removed only once the new one is in
    place; if the rename fails, the old one is put back.
    """
    if not target.exists():
        staging.rename(target)
        return
    if not target.is_dir():
        raise Gru4RecError(f"{target} exists and is not a directory; choose another path.")
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    backup.rmdir()
    target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a temporary file in the same directory, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)
