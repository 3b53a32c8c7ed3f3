"""Loading the compiled loops and choosing their instruction set.

The extension `gru4rec.network._kernels` (setup.py) is taken from the package's own
directory and nowhere else, so that no library planted on the import path runs inside
training. It holds each loop compiled once per instruction set (`ISAS`: baseline x86-64,
AVX2, AVX-512); the best one this CPU runs is chosen at load time, capped by GRU4REC_ISA
(to compare them). GRU4REC_KERNELS=torch disables the compiled loops altogether. Where
they cannot be had, `unavailable_reason()` says why.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gru4rec.network.kernels.compiled_backend import CompiledKernels

ISAS = ("base", "avx2", "avx512")  # the builds in gru4rec/network/csrc/kernels_<isa>.c, in order


@dataclass(frozen=True)
class _Library:
    """The loaded extension, or why there is none."""

    library: ctypes.CDLL | None
    path: Path | None
    levels: tuple[str, ...]  # the instruction sets this CPU runs, best last
    reason: str  # why there is no library ("" when there is)


@cache
def _load() -> _Library:
    """Load `gru4rec.network._kernels` from the package's own directory (never anywhere else)."""
    if os.environ.get("GRU4REC_KERNELS", "auto") == "torch":
        return _Library(None, None, (), "GRU4REC_KERNELS=torch is set")
    try:
        from gru4rec.network import _kernels  # type: ignore[attr-defined]  # built by setup.py
    except ImportError as error:
        return _Library(
            None, None, (), f"the extension gru4rec.network._kernels is not built ({error})"
        )
    path = Path(_kernels.__file__).resolve()
    package = Path(__file__).resolve().parents[1]  # gru4rec/network, where setup.py builds it
    if path.parent != package:  # the import system found it elsewhere: refuse it
        return _Library(None, path, (), f"{path} is not inside the package ({package})")
    library = ctypes.CDLL(str(path))  # the module already loaded: dlopen returns it
    library.gru4rec_isa_level.restype = ctypes.c_int64
    level = int(library.gru4rec_isa_level())
    return _Library(library, path, ISAS[: level + 1], "")


def isa_levels() -> tuple[str, ...]:
    """The instruction sets of the compiled loops this CPU runs, best last (() if none)."""
    return _load().levels


@cache
def compiled(isa: str | None = None) -> CompiledKernels | None:
    """The compiled loops for `isa` (default: the best the CPU runs, capped by
    GRU4REC_ISA), or None where they are not built or the CPU cannot run them."""
    loaded = _load()
    if loaded.library is None or not loaded.levels:
        return None
    if isa is None:
        cap = os.environ.get("GRU4REC_ISA")
        usable = loaded.levels[: loaded.levels.index(cap) + 1] if cap in loaded.levels else ()
        isa = (usable or loaded.levels)[-1]
    if isa not in loaded.levels:
        return None
    assert loaded.path is not None
    return CompiledKernels(loaded.library, isa, loaded.path)


def unavailable_reason() -> str:
    """Why `compiled()` is None ("" when it is not)."""
    return _load().reason
