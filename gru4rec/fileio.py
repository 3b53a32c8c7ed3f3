"""Atomic replacement of an output directory: nothing half-written is ever visible."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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
