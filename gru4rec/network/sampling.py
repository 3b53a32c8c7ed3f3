"""Training's random draws, made in large chunks off the per-step path.

- Negative items, drawn with probability proportional to support^alpha. Drawing a few
  thousand items every step costs more than the step itself, so, like the reference,
  the sampler draws `cache_size` steps' worth at once and hands out one (n_sample,)
  slice per step.
- Dropout masks: one (batch_size, width) mask per dropout site and step, drawn a chunk
  of steps at a time. Both training paths (`gru4rec.network.train`'s autograd step and
  `gru4rec.network.fast_step`) take their masks from here, so they see the same masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gru4rec.network import kernels

# Guards the logs of probabilities (an item with support 0 has probability 0).
LOG_EPS = 1e-24


def sampling_probabilities(support: np.ndarray | torch.Tensor, alpha: float) -> torch.Tensor:
    """(n_items,) float64 probabilities proportional to support^alpha (alpha 0: uniform)."""
    if isinstance(support, np.ndarray):  # may be read-only (a Polars column): copy it
        support = torch.from_numpy(np.array(support, dtype=np.float64))
    weights = support.to(torch.float64).clamp_min(0.0)
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


def logq_shifts(
    support: np.ndarray | torch.Tensor, config: Any
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(n_items,) float32 logQ shifts of the in-batch (target) and the sampled columns, each
    times `config.logq`; None without the correction (logq 0, or not cross-entropy).

    logq_form "normalised": log(support / total) and log(support^alpha / its total), each
    column's own sampling probability; "counts" (the reference's): log(support) and
    alpha * log(support). They differ by a constant per block, which moves the balance
    between the in-batch and the sampled block (the softmax ignores one constant for all).
    """
    if config.logq == 0 or config.loss != "cross-entropy":
        return None
    alpha = config.sample_alpha
    if config.logq_form == "counts":
        counts = torch.as_tensor(np.asarray(support), dtype=torch.float64)
        log_counts = torch.log(counts + LOG_EPS)
        targets, samples = log_counts, alpha * log_counts
    else:
        targets, samples = log_probabilities(support, 1.0), log_probabilities(support, alpha)
    return (
        (config.logq * targets).to(torch.float32),
        (config.logq * samples).to(torch.float32),
    )


class _BufferPair:
    """Two buffers of one shape handed out in turn: a chunk is drawn into the buffer that
    was not handed out last, so the previous chunk (a caller may still hold a row of it)
    stays intact, and no chunk costs fresh pages."""

    def __init__(self) -> None:
        self._pair: list[torch.Tensor] = []

    def next(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if not self._pair or self._pair[0].shape != shape:
            self._pair = [torch.empty(shape, dtype=dtype) for _ in range(2)]
        self._pair.reverse()
        return self._pair[0]


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
        # With the fused loops, a guide table narrows each search to a few items (the
        # same draws, several times faster than a binary search over all of them).
        self._guide: torch.Tensor | None = None
        self._compiled = kernels.compiled()
        if self._compiled is not None:
            n_guide = 4 * self.n_items
            grid = torch.arange(n_guide + 1, dtype=torch.float64) / n_guide
            self._guide = torch.searchsorted(self._cumulative, grid, right=True)
        self._rng = np.random.Generator(np.random.PCG64(seed))  # (several times torch's speed)
        self._cache = torch.empty(0, n_sample, dtype=torch.int64)
        self._position = 0
        # Chunks are drawn into the same buffers each time: fresh pages for 16 MB of draws
        # cost more than the draws.
        self._uniform: np.ndarray | None = None
        self._outputs = _BufferPair()

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
            return torch.from_numpy(self._rng.integers(0, self.n_items, shape, dtype=np.int64))
        if self._uniform is None or self._uniform.shape != shape:
            self._uniform = np.empty(shape, dtype=np.float64)
        uniform = torch.from_numpy(self._rng.random(out=self._uniform))
        if self._compiled is not None and self._guide is not None:
            out = self._outputs.next(shape, torch.int64)
            return self._compiled.sample_inverse_cdf(self._cumulative, self._guide, uniform, out)
        return torch.searchsorted(self._cumulative, uniform, right=True).clamp_max_(
            self.n_items - 1
        )


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_U64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z &= _U64
    z = ((z ^ (z >> 30)) * _MIX1) & _U64
    z = ((z ^ (z >> 27)) * _MIX2) & _U64
    return z ^ (z >> 31)


def dropout_bits(key: int, start: int, count: int) -> np.ndarray:
    """(count,) uint32: the top 32 bits of outputs start+1 .. start+count of splitmix64
    seeded with `key` (the NumPy form of `the compiled `dropout_mask`'s generator)."""
    with np.errstate(over="ignore"):
        index = np.arange(start + 1, start + count + 1, dtype=np.uint64)
        z = np.uint64(key) + index * np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(32)).astype(np.uint32)


class DropoutMasks:
    """Inverted-dropout masks, per step one (batch_size, width) tensor per dropout site.

    A mask holds 0 (dropped, probability p) or 1 / (1 - p) (kept), so `x * mask` is
    `F.dropout(x, p)`. Sites with p == 0 get None. Each site draws from a counter-based
    generator (splitmix64, keyed by the seed and the site): element e of the site's
    stream is dropped when the top 32 bits of its draw are below p * 2^32. Masks are made
    `chunk_steps` steps at a time, by a compiled loop where `gru4rec.network.kernels` has one
    and by NumPy otherwise, with the same bits either way; a step with fewer rows uses
    the first rows.

    Example:
        >>> masks = DropoutMasks([(512, 0.5), (512, 0.3)], batch_size=128, seed=1)
        >>> embed_mask, hidden_mask = masks.next()  # (128, 512) each
    """

    # Floats per chunk (all sites together): 4M floats = 16 MB, a few dozen steps at
    # the largest presets; the draw costs the same per mask at any chunk size.
    CHUNK_FLOATS = 1 << 22

    def __init__(
        self,
        sites: list[tuple[int, float]],
        batch_size: int,
        seed: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        for width, p in sites:
            if not 0.0 <= p < 1.0 or width < 1:
                raise ValueError(f"dropout site (width {width}, p {p}) is invalid")
        self.sites = list(sites)
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = torch.device(device)
        floats_per_step = batch_size * sum(width for width, p in sites if p > 0)
        self.chunk_steps = max(1, self.CHUNK_FLOATS // max(floats_per_step, 1))
        self._keys = [_splitmix64((seed << 16) + site + 1) for site in range(len(sites))]
        self._drawn = [0] * len(sites)  # elements of each site's stream used so far
        self._chunk: list[torch.Tensor | None] = []
        self._position = self.chunk_steps  # empty: the first call draws
        self._buffers = [_BufferPair() for _ in sites]

    def next(self) -> list[torch.Tensor | None]:
        """This step's mask per site: (batch_size, width) on `device`, or None where p == 0."""
        if self._position == self.chunk_steps:
            self._chunk = [self._draw(site) for site in range(len(self.sites))]
            self._position = 0
        step = self._position
        self._position += 1
        return [None if chunk is None else chunk[step] for chunk in self._chunk]

    def _draw(self, site: int) -> torch.Tensor | None:
        """(chunk_steps, batch_size, width) masks of one site, or None for p == 0."""
        width, p = self.sites[site]
        if p == 0:
            return None
        shape = (self.chunk_steps, self.batch_size, width)
        count = self.chunk_steps * self.batch_size * width
        start, self._drawn[site] = self._drawn[site], self._drawn[site] + count
        threshold = min(round(p * 2.0**32), 2**32 - 1)
        scale = 1.0 / (1.0 - p)
        compiled = kernels.compiled()
        if compiled is not None:
            out = self._buffers[site].next(shape, torch.float32)
            masks = compiled.dropout_mask(self._keys[site], start, threshold, scale, out)
        else:
            keep = dropout_bits(self._keys[site], start, count) >= np.uint32(threshold)
            masks = torch.from_numpy(
                np.multiply(keep, np.float32(scale), dtype=np.float32).reshape(shape)
            )
        return masks.to(device=self.device, dtype=self.dtype)
