"""Shared fixtures: where the real click logs live, and skipping cleanly without them."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or a skip that says which file is missing and why."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(
            f"real data {path} is absent: the real-data checks need ../shared/data beside "
            "the project (see ../shared/data/README.md)"
        )
    return path
