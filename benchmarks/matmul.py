"""The machine's measured matrix-multiply rate: the yardstick of the speed benchmarks."""

from __future__ import annotations

import statistics
import time

import torch


def matmul_rate(
    m: int, k: int, n: int, dtype: torch.dtype = torch.float32, repeats: int = 7
) -> float:
    """Median GFLOP/s of (m, k) @ (k, n) in `dtype` on the CPU, at the current thread count."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: first calls pay for allocation and dispatch
    flops = 2.0 * m * k * n
    # Enough calls per sample for ~50 ms, so timer resolution does not matter.
    calls = max(1, int(0.05 / max(_time_one(a, b, out), 1e-6)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        samples.append(flops * calls / (time.perf_counter() - start) / 1e9)
    return statistics.median(samples)


def _time_one(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> float:
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    return time.perf_counter() - start
