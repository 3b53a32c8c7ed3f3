"""The elementwise and memory-bound parts of a training step, behind one interface.

`FastStep` does the matmuls itself and leaves everything between them to a `Kernels`
backend, with the same arithmetic in both:

    gru_gates / gru_output         a GRU layer's gates and state update (forward)
    gru_output_backward /          their backward, to the gates' pre-activations
      gru_reset_backward
    gru_reset_after (+ _backward)  the reset_after form's candidate input and its backward
    sampled_loss                   cross-entropy (+ logQ) or BPR-max (+ ELU, bpreg) and its
                                   gradient, summed per distinct item
    distinct_rows                  the distinct items of a step
    add_to_rows                    the input rows' gradients into the item rows'
    adagrad_dense / adagrad_rows   the optimiser on the flat GRU weights / on item rows

The package, by concern:
    interface         `Kernels` and the scratch buffers the step lends it
    torch_backend     `TorchKernels`: torch operations, any device and dtype (GPU, float64,
                      bf16 ...)
    compiled_backend  `CompiledKernels`: fused C loops (gru4rec/network/csrc), one pass each
                      instead of a chain of torch operations, each with its dispatch and its
                      pass over memory (1.6-1.8x the training speed of the torch backend on
                      CPU). With OpenMP they run on torch's own thread pool.
    loader            the extension `gru4rec.network._kernels` (setup.py), loaded only from
                      the package's own directory, compiled once per instruction set
                      (baseline x86-64, AVX2, AVX-512) with the best the CPU runs chosen at
                      load time: `compiled()`, `isa_levels()`, `unavailable_reason()`
    subnormals        FTZ/DAZ on every training thread
    __main__          `python -m gru4rec.network.kernels`: which kernels training uses

This module re-exports what callers use and chooses the backend a step gets:
`kernels_for(device, dtype)` gives the compiled backend for fp32 on CPU where it is built,
the torch backend otherwise, and says once (a warning) when CPU training falls back to
torch. The compiled library also carries loops used outside the step (`compiled()`):
negative sampling, dropout masks, FTZ/DAZ and recommendation's top-k; their callers keep
torch twins. tests/test_kernels.py checks every backend against the torch one and the
step against autograd. Environment: GRU4REC_KERNELS=torch forces the torch backend;
GRU4REC_ISA=base|avx2|avx512 caps the instruction set (to compare them).

Example:
    >>> kernels = kernels_for(torch.device("cpu"), torch.float32)
    >>> kernels.adagrad_dense(param, grad, acc, velocity, lr=0.05, momentum=0.1, eps=1e-6)
"""

from __future__ import annotations

import logging
from functools import cache

import torch

from gru4rec.network.kernels.compiled_backend import CompiledKernels
from gru4rec.network.kernels.interface import Kernels, LossScratch, RowScratch
from gru4rec.network.kernels.loader import ISAS, compiled, isa_levels, unavailable_reason
from gru4rec.network.kernels.subnormals import flush_subnormals, subnormals_flushed
from gru4rec.network.kernels.torch_backend import TorchKernels

__all__ = [
    "ISAS",
    "CompiledKernels",
    "Kernels",
    "LossScratch",
    "RowScratch",
    "TorchKernels",
    "compiled",
    "flush_subnormals",
    "isa_levels",
    "kernels_for",
    "subnormals_flushed",
    "unavailable_reason",
]

logger = logging.getLogger(__name__)

_TORCH = TorchKernels()


def kernels_for(device: torch.device, dtype: torch.dtype) -> Kernels:
    """The compiled loops for fp32 on CPU where they are built; the torch ones otherwise."""
    if device.type != "cpu" or dtype != torch.float32:
        return _TORCH
    kernels = compiled()
    if kernels is None:
        _warn_torch_fallback()
        return _TORCH
    return kernels


@cache
def _warn_torch_fallback() -> None:
    """Say once that CPU training runs on the torch loops, why, and what it costs."""
    reason = unavailable_reason()
    if "GRU4REC_KERNELS" in reason:
        logger.info("training on CPU with the torch kernels (%s)", reason)
        return
    logger.warning(
        "gru4rec's compiled CPU kernels are not available (%s): training on CPU uses the "
        "torch kernels, about 1.6-1.8x slower per step. Reinstall gru4rec from a wheel built for "
        "this platform, or from source with a C compiler (pip install --force-reinstall "
        "--no-binary gru4rec gru4rec).",
        reason,
    )
