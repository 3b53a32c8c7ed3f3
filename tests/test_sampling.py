"""Negative sampling: the support^alpha distribution, chunked caching, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gru4rec.network.sampling import (
    DropoutMasks,
    NegativeSampler,
    log_probabilities,
    sampling_probabilities,
)

SUPPORT = np.array([1, 4, 9, 16, 100, 0, 25, 2], dtype=np.int64)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_draws_follow_support_to_the_alpha(alpha: float) -> None:
    sampler = NegativeSampler(SUPPORT, alpha, n_sample=1000, cache_size=50, seed=3)
    draws = torch.cat([sampler.next() for _ in range(120)]).numpy()  # 120k, over 3 chunks
    counts = np.bincount(draws, minlength=len(SUPPORT))
    weights = np.ones(len(SUPPORT)) if alpha == 0 else SUPPORT.astype(float) ** alpha
    expected = len(draws) * weights / weights.sum()
    if alpha > 0:
        assert counts[5] == 0  # support 0 is never drawn
    seen = expected > 0
    chi_square = float(np.sum((counts[seen] - expected[seen]) ** 2 / expected[seen]))
    # 99.9% quantile of chi-square with <= 7 degrees of freedom is 24.3: a wrong alpha
    # (e.g. 0.5 vs 1) gives thousands here.
    assert chi_square < 24.3


def test_wrong_alpha_would_be_caught() -> None:
    sampler = NegativeSampler(SUPPORT, 1.0, n_sample=1000, cache_size=100, seed=3)
    draws = torch.cat([sampler.next() for _ in range(100)]).numpy()
    counts = np.bincount(draws, minlength=len(SUPPORT))
    wrong = np.sqrt(SUPPORT.astype(float))
    expected = len(draws) * wrong / wrong.sum()
    seen = expected > 0
    assert float(np.sum((counts[seen] - expected[seen]) ** 2 / expected[seen])) > 1000


def test_slices_are_n_sample_long_and_seeded() -> None:
    first = NegativeSampler(SUPPORT, 0.5, n_sample=7, cache_size=3, seed=11)
    second = NegativeSampler(SUPPORT, 0.5, n_sample=7, cache_size=3, seed=11)
    other = NegativeSampler(SUPPORT, 0.5, n_sample=7, cache_size=3, seed=12)
    a = [first.next().clone() for _ in range(10)]  # crosses several chunk refills
    b = [second.next().clone() for _ in range(10)]
    c = [other.next().clone() for _ in range(10)]
    assert all(x.shape == (7,) and x.dtype == torch.int64 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[3])  # a refill draws new items, it does not repeat the chunk


def test_log_probabilities() -> None:
    support = np.array([1, 3, 0])
    assert torch.allclose(
        log_probabilities(support, 1.0), torch.log(torch.tensor([0.25, 0.75, 1e-24]))
    )
    assert torch.allclose(log_probabilities(support, 0.0), torch.log(torch.full((3,), 1 / 3)))
    half = np.sqrt([1.0, 3.0, 0.0])
    assert torch.allclose(sampling_probabilities(support, 0.5), torch.tensor(half / half.sum()))


def test_dropout_masks_drop_with_probability_p_and_scale_the_rest() -> None:
    masks = DropoutMasks([(64, 0.3), (32, 0.0), (16, 0.5)], batch_size=40, seed=5)
    draws = [masks.next() for _ in range(masks.chunk_steps + 3)]  # crosses a chunk refill
    first = torch.stack([step[0] for step in draws])  # type: ignore[misc]
    assert first.shape == (len(draws), 40, 64)
    values = torch.unique(first).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert abs((first == 0).float().mean().item() - 0.3) < 0.01
    assert all(step[1] is None for step in draws)  # p == 0: no mask at all
    assert draws[0][2] is not None and draws[0][2].shape == (40, 16)
    assert not torch.equal(draws[0][0], draws[1][0])  # type: ignore[arg-type]


def test_dropout_masks_are_seeded() -> None:
    def stream(seed: int) -> list[torch.Tensor]:
        masks = DropoutMasks([(8, 0.4)], batch_size=3, seed=seed)
        return [masks.next()[0].clone() for _ in range(5)]  # type: ignore[union-attr]

    a, b, c = stream(1), stream(1), stream(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_dropout_masks_reject_bad_sites() -> None:
    with pytest.raises(ValueError, match="invalid"):
        DropoutMasks([(8, 1.0)], batch_size=3, seed=0)


def test_logq_shifts_of_both_forms_by_hand() -> None:
    import dataclasses

    from gru4rec.network.config import GRU4RecConfig
    from gru4rec.network.sampling import logq_shifts

    support = np.array([1.0, 3.0, 4.0, 0.0])
    config = GRU4RecConfig(logq=0.5, sample_alpha=0.5, logq_form="normalised")
    targets, samples = logq_shifts(support, config)  # type: ignore[misc]
    # normalised: half the log of each column's own probability
    np.testing.assert_allclose(targets[:3], 0.5 * np.log([1 / 8, 3 / 8, 4 / 8]), rtol=1e-6)
    roots = np.sqrt(support[:3])
    np.testing.assert_allclose(samples[:3], 0.5 * np.log(roots / roots.sum()), rtol=1e-6)
    counts = dataclasses.replace(config, logq_form="counts")
    targets_c, samples_c = logq_shifts(support, counts)  # type: ignore[misc]
    np.testing.assert_allclose(targets_c[:3], 0.5 * np.log([1.0, 3.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(samples_c[:3], 0.5 * 0.5 * np.log([1.0, 3.0, 4.0]), rtol=1e-6)
    # The forms differ by one constant per block: the block balance is what changes.
    np.testing.assert_allclose(targets_c[:3] - targets[:3], 0.5 * np.log(8.0), rtol=1e-6)
    np.testing.assert_allclose(samples_c[:3] - samples[:3], 0.5 * np.log(roots.sum()), rtol=1e-6)
    assert torch.isfinite(targets).all() and torch.isfinite(targets_c).all()  # support 0
    assert logq_shifts(support, dataclasses.replace(config, logq=0.0)) is None
    assert logq_shifts(support, dataclasses.replace(config, loss="bpr-max")) is None
