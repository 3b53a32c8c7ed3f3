"""Negative items drawn with probability proportional to support^alpha, in large cached chunks.

Drawing a few thousand items every step costs more than the step itself, so, like
the reference, the sampler draws `cache_size` steps' worth at once and hands out one
(n_sample,) slice per step.
"""

from __future__ import annotations

import numpy as np
import torch

# Guards the logs of probabilities (an item with support 0 has probability 0).
LOG_EPS = 1e-24


def sampling_probabilities(support: np.ndarray | torch.Tensor, alpha: float) -> torch.Tensor:
    """(n_items,) float64 probabilities proportional to support^alpha (alpha 0: uniform)."""
    weights = torch.as_tensor(support, dtype=torch.float64).clamp_min(0.0)
    weights = torch.ones_like(weights) if alpha == 0 else weights.pow(alpha)
    total = weights.sum()
    if not total > 0:
        raise ValueError("item supports sum to zero: there is nothing to sample from")
    return weights / total


def log_probabilities(support: np.ndarray | torch.Tensor, alpha: float) -> torch.Tensor:
    """(n_items,) float32 log of `sampling_probabilities` (epsilon-guarded), for logQ.

    alpha=1 gives log(support / total support): the distribution of in-batch targets.
    """
    probabilities = sampling_probabilities(support, alpha)
    return torch.log(probabilities + LOG_EPS).to(torch.float32)


class NegativeSampler:
    """Hands out (n_sample,) int64 item indices per step, drawn in chunks of `cache_size` steps.

    Deterministic given `seed`: the same seed yields the same sequence of slices.

    Example:
        >>> sampler = NegativeSampler(support, alpha=0.5, n_sample=2048, cache_size=1024, seed=1)
        >>> negatives = sampler.next()  # (2048,)
    """

    def __init__(
        self,
        support: np.ndarray | torch.Tensor,
        alpha: float,
        n_sample: int,
        cache_size: int,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.alpha = alpha
        self.n_sample = n_sample
        self.cache_size = cache_size
        self.device = torch.device(device)
        probabilities = sampling_probabilities(support, alpha)
        self.n_items = len(probabilities)
        # Inverse-CDF sampling: searchsorted of uniform draws on the cumulative distribution.
        self._cumulative = torch.cumsum(probabilities, 0)
        self._cumulative[-1] = 1.0  # rounding must not leave a gap above the last item
        self._generator = torch.Generator().manual_seed(seed)
        self._cache = torch.empty(0, n_sample, dtype=torch.int64)
        self._position = 0

    def next(self) -> torch.Tensor:
        """The next (n_sample,) int64 negatives, on `device` (a view into the cached chunk)."""
        if self._position == len(self._cache):
            self._cache = self._draw(self.cache_size).to(self.device)
            self._position = 0
        negatives = self._cache[self._position]
        self._position += 1
        return negatives

    def _draw(self, n_steps: int) -> torch.Tensor:
        """(n_steps, n_sample) int64 fresh draws."""
        shape = (n_steps, self.n_sample)
        if self.alpha == 0:
            return torch.randint(self.n_items, shape, generator=self._generator)
        uniform = torch.rand(shape, generator=self._generator, dtype=torch.float64)
        return torch.searchsorted(self._cumulative, uniform, right=True).clamp_max_(
            self.n_items - 1
        )
