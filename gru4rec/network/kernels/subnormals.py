"""Subnormal floats flushed to zero (FTZ/DAZ) while training on CPU, on every thread.

`train.fit` turns this on for its whole run. The compiled library sets the flags on every
thread of torch's CPU pool, which torch's own switch cannot do (it covers the calling
thread only), so torch's switch is what remains without the compiled loops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from gru4rec.network.kernels.loader import compiled


def flush_subnormals(on: bool) -> bool:
    """Set (or clear) FTZ/DAZ, subnormal floats read and written as zero, on this thread
    and every thread of torch's CPU pool; returns whether this thread had it. Without the
    compiled loops, torch's switch (this thread only) is used."""
    kernels = compiled()
    if kernels is None:
        torch.set_flush_denormal(on)
        return False
    return kernels.flush_subnormals(on)


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """`flush_subnormals(True)` for the block, restored on exit.

    Gradients of far-off softmax columns underflow towards subnormals (below 1.2e-38),
    and x86 matmuls and loops over them run several times slower (3-4x on the rsc15
    preset's backward matmuls); flushed to 0, no float32 update can tell the difference.
    """
    previous = flush_subnormals(True)
    try:
        yield
    finally:
        flush_subnormals(previous)
