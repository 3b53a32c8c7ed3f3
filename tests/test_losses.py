"""Losses: values worked out by hand, the closed-form gradient against autograd, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from gru4rec.errors import ConfigError
from gru4rec.network.losses import (
    LossName,
    bpr_max,
    cross_entropy,
    elu,
    sampled_loss,
    sampled_loss_and_grad,
)

# Two session slots, one sampled negative: row 0's target is column 0, row 1's is column 1.
SCORES = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softmax_xe(row: list[float], target: int) -> float:
    return -math.log(math.exp(row[target]) / sum(math.exp(x) for x in row))


def bpr_max_row(row: list[float], target: int, bpreg: float) -> float:
    negatives = [x for j, x in enumerate(row) if j != target]
    norm = sum(math.exp(x) for x in negatives)
    weights = [math.exp(x) / norm for x in negatives]
    hit = sum(w * sigmoid(row[target] - x) for w, x in zip(weights, negatives, strict=True))
    penalty = sum(w * x * x for w, x in zip(weights, negatives, strict=True))
    return -math.log(hit + 1e-24) + bpreg * penalty


def test_cross_entropy_by_hand() -> None:
    # row 0: -log(e^1 / (e^1 + e^2 + e^0)); row 1: -log(e^-1 / (e^0.5 + e^-1 + e^3))
    row0 = -math.log(math.e / (math.e + math.exp(2) + 1.0))
    row1 = -math.log(math.exp(-1) / (math.exp(0.5) + math.exp(-1) + math.exp(3)))
    got = cross_entropy(torch.tensor(SCORES, dtype=torch.float64))
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_cross_entropy_subtracts_logq_shift_from_every_row() -> None:
    shift = [0.1, -0.2, 0.3]
    shifted = [[x - s for x, s in zip(row, shift, strict=True)] for row in SCORES]
    # row 0 shifted: [0.9, 2.2, -0.3]; row 1 shifted: [0.4, -0.8, 2.7]
    assert shifted[0] == pytest.approx([0.9, 2.2, -0.3])
    row0 = -math.log(math.exp(0.9) / (math.exp(0.9) + math.exp(2.2) + math.exp(-0.3)))
    row1 = -math.log(math.exp(-0.8) / (math.exp(0.4) + math.exp(-0.8) + math.exp(2.7)))
    got = cross_entropy(
        torch.tensor(SCORES, dtype=torch.float64), torch.tensor(shift, dtype=torch.float64)
    )
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_bpr_max_by_hand() -> None:
    # row 0: target 1, negatives 2 and 0 with weights e^2/(e^2+1), 1/(e^2+1)
    w_a, w_b = math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)
    row0 = -math.log(w_a * sigmoid(1 - 2) + w_b * sigmoid(1 - 0)) + 0.5 * (w_a * 4 + w_b * 0)
    # row 1: target -1, negatives 0.5 and 3
    norm = math.exp(0.5) + math.exp(3)
    w_c, w_d = math.exp(0.5) / norm, math.exp(3) / norm
    row1 = -math.log(w_c * sigmoid(-1 - 0.5) + w_d * sigmoid(-1 - 3)) + 0.5 * (w_c * 0.25 + w_d * 9)
    got = bpr_max(torch.tensor(SCORES, dtype=torch.float64), bpreg=0.5)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_bpr_max_gives_the_target_no_weight() -> None:
    # Were the target in its own softmax, its weight would be ~1 and bpreg * 100^2 would dominate.
    got = bpr_max(torch.tensor([[100.0, 0.0, 0.0]], dtype=torch.float64), bpreg=1.0)
    assert got.item() == pytest.approx(-math.log(sigmoid(100.0)), abs=1e-12)


def test_elu_zero_is_linear_and_otherwise_elu() -> None:
    scores = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    assert torch.equal(elu(scores, 0.0), scores)  # linear, not ReLU
    assert elu(scores, 0.5).tolist() == pytest.approx([0.5 * (math.exp(-2) - 1), 0.0, 3.0])


def test_sampled_loss_applies_elu_before_the_loss() -> None:
    # elu(x, 1) = e^x - 1 below 0: row 1 becomes [0.5, e^-1 - 1, 3]
    activated = [[1.0, 2.0, 0.0], [0.5, math.exp(-1) - 1, 3.0]]
    expected = (bpr_max_row(activated[0], 0, 1.5) + bpr_max_row(activated[1], 1, 1.5)) / 2
    got = sampled_loss(
        torch.tensor(SCORES, dtype=torch.float64), loss="bpr-max", bpreg=1.5, elu_param=1.0
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)
    expected_xe = (softmax_xe(activated[0], 0) + softmax_xe(activated[1], 1)) / 2
    got_xe = sampled_loss(
        torch.tensor(SCORES, dtype=torch.float64), loss="cross-entropy", elu_param=1.0
    )
    assert got_xe.item() == pytest.approx(expected_xe, rel=1e-12)


def test_bpr_max_3x5_matches_the_row_formula() -> None:
    scores = [
        [0.3, -0.2, 1.1, 0.0, -1.5],
        [2.0, 0.7, -0.4, 0.9, 0.1],
        [-0.6, 1.3, 0.2, 2.2, -0.8],
    ]
    expected = sum(bpr_max_row(row, i, 0.9) for i, row in enumerate(scores)) / 3
    got = bpr_max(torch.tensor(scores, dtype=torch.float64), bpreg=0.9)
    assert got.item() == pytest.approx(expected, rel=1e-12)


# (loss, logq?, bpreg, elu): every option of each loss, with and without the ELU.
GRAD_CASES = [
    ("cross-entropy", logq, 0.0, elu_param) for logq in (False, True) for elu_param in (0, 0.5, 1)
] + [("bpr-max", False, bpreg, elu_param) for bpreg in (0.0, 1.5) for elu_param in (0, 0.5, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("loss", "logq", "bpreg", "elu_param"), GRAD_CASES)
def test_closed_form_gradient_matches_autograd(
    loss: LossName, logq: bool, bpreg: float, elu_param: float, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(7)
    n_rows, n_cols = 6, 6 + 9
    scores = (2.0 * torch.randn(n_rows, n_cols, generator=generator)).to(dtype)
    logq_shift = torch.log(torch.rand(n_cols, generator=generator)).to(dtype) if logq else None

    leaf = scores.clone().requires_grad_()
    expected = sampled_loss(
        leaf, loss=loss, logq_shift=logq_shift, bpreg=bpreg, elu_param=elu_param
    )
    expected.backward()
    before = scores.clone()
    value, grad = sampled_loss_and_grad(
        scores, loss=loss, logq_shift=logq_shift, bpreg=bpreg, elu_param=elu_param
    )
    assert torch.equal(scores, before)  # in-place work stays on its own buffers

    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-10, 1e-13)
    assert value.shape == () and grad.shape == scores.shape and grad.dtype == dtype
    torch.testing.assert_close(value, expected.detach(), rtol=rtol, atol=atol)
    assert leaf.grad is not None
    torch.testing.assert_close(grad, leaf.grad, rtol=rtol, atol=atol)


def test_closed_form_builds_no_graph() -> None:
    scores = torch.randn(3, 5, requires_grad=True)
    value, grad = sampled_loss_and_grad(scores, loss="bpr-max", bpreg=1.0, elu_param=0.5)
    assert not value.requires_grad and not grad.requires_grad


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
@pytest.mark.parametrize("elu_param", [0.0, 1.0])
def test_large_scores_stay_finite(loss: LossName, elu_param: float) -> None:
    generator = torch.Generator().manual_seed(3)
    scores = 1e4 * torch.randn(4, 10, generator=generator)
    scores[0, 0] = -1e4  # a target far below every negative: BPR-max's hit term underflows
    logq_shift = torch.log(torch.rand(10, generator=generator)) if loss == "cross-entropy" else None
    value, grad = sampled_loss_and_grad(
        scores, loss=loss, logq_shift=logq_shift, bpreg=1.0, elu_param=elu_param
    )
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    leaf = scores.clone().requires_grad_()
    sampled_loss(leaf, loss=loss, logq_shift=logq_shift, bpreg=1.0, elu_param=elu_param).backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_single_column_has_zero_loss_and_gradient(loss: LossName) -> None:
    # The last step of an epoch can hold one row and, with n_sample = 0, no negative at all.
    value, grad = sampled_loss_and_grad(torch.tensor([[0.7]]), loss=loss)
    assert value.item() == 0.0 and grad.tolist() == [[0.0]]
    assert sampled_loss(torch.tensor([[0.7]]), loss=loss).item() == 0.0


def test_unknown_loss_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="top1"):
        sampled_loss(torch.zeros(2, 2), loss="top1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        sampled_loss_and_grad(torch.zeros(2, 2), loss="top1")  # type: ignore[arg-type]


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="C >= B"):
        cross_entropy(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="logq_shift"):
        cross_entropy(torch.zeros(2, 3), torch.zeros(2))
