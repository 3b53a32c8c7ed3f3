"""Losses over a step's sampled score matrix: cross-entropy (with logQ correction) and BPR-max.

A training step scores every session slot against the batch's own targets and a set of
sampled negatives shared by the batch, so `scores` is (B, C) with C = B + n_sample and
the target of row i is column i: the in-batch block comes first, its diagonal holds the
targets, then the sampled columns follow.

`sampled_loss` is the autograd form; `sampled_loss_and_grad` returns the same loss with
its gradient w.r.t. the scores from closed-form formulas, for a training step that does
not build a graph.

Example:
    >>> scores = torch.randn(32, 32 + 2048)
    >>> loss, grad = sampled_loss_and_grad(scores, loss="bpr-max", bpreg=1.0, elu_param=0.5)
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from gru4rec.errors import ConfigError

LossName = Literal["cross-entropy", "bpr-max"]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)

# BPR-max takes the log of a weighted sum of sigmoids, which underflows to 0 when every
# negative outscores the target by far; the epsilon keeps that loss finite (about 55).
LOG_EPS = 1e-24


def elu(scores: Tensor, alpha: float) -> Tensor:
    """ELU on the scores before the loss; `alpha == 0` means linear (identity), not ReLU."""
    return scores if alpha == 0 else F.elu(scores, alpha)


def cross_entropy(scores: Tensor, logq_shift: Tensor | None = None) -> Tensor:
    """Mean over rows of -log softmax(row)[target].

    Args:
        scores: (B, C) scores, the target of row i in column i.
        logq_shift: (C,) subtracted from every row before the softmax, i.e.
            `logq * log(sampling probability of each column)` (logQ correction).

    Returns:
        The loss, a 0-dim tensor.
    """
    _check_scores(scores, logq_shift)
    logits = scores if logq_shift is None else scores - logq_shift  # (B, C)
    return -F.log_softmax(logits, dim=1).diagonal().mean()


def bpr_max(scores: Tensor, bpreg: float) -> Tensor:
    """BPR-max: the target against a softmax-weighted mix of the row's negatives.

    Per row, with softmax weights s_j over the other columns (the target's weight is 0):
    `-log(sum_j s_j * sigmoid(r_target - r_j) + 1e-24) + bpreg * sum_j s_j * r_j^2`.
    Gradients flow through the weights too. Mean over rows.

    Args:
        scores: (B, C) scores, the target of row i in column i.
        bpreg: weight of the score regulariser on the negatives.

    Returns:
        The loss, a 0-dim tensor (0 when C == 1: a row with no negatives ranks nothing).
    """
    _check_scores(scores, None)
    if scores.shape[1] < 2:
        return scores.sum() * 0.0
    weights = _negative_weights(scores)  # (B, C)
    target = scores.diagonal().unsqueeze(1)  # (B, 1)
    hit = (weights * torch.sigmoid(target - scores)).sum(dim=1)  # (B,)
    row_loss = -torch.log(hit + LOG_EPS)
    if bpreg != 0:
        row_loss = row_loss + bpreg * (weights * scores.square()).sum(dim=1)
    return row_loss.mean()


def sampled_loss(
    scores: Tensor,
    *,
    loss: LossName,
    logq_shift: Tensor | None = None,
    bpreg: float = 0.0,
    elu_param: float = 0.0,
) -> Tensor:
    """ELU (`elu_param`, 0 = linear) then the named loss; differentiable by autograd.

    `logq_shift` is used by cross-entropy only and `bpreg` by BPR-max only: logQ corrects
    a softmax over sampled columns, the regulariser is part of BPR-max's definition.
    """
    _check_loss_name(loss)
    activated = elu(scores, elu_param)
    if loss == "cross-entropy":
        return cross_entropy(activated, logq_shift)
    return bpr_max(activated, bpreg)


def sampled_loss_and_grad(
    scores: Tensor,
    *,
    loss: LossName,
    logq_shift: Tensor | None = None,
    bpreg: float = 0.0,
    elu_param: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """`sampled_loss` and its gradient w.r.t. `scores`, by closed-form formulas (no autograd).

    Args:
        scores: (B, C) raw scores (before the ELU), the target of row i in column i.
        loss, logq_shift, bpreg, elu_param: as in `sampled_loss`.

    Returns:
        `(loss, grad)`: the 0-dim loss and d loss / d scores, (B, C), same dtype as scores.
    """
    _check_loss_name(loss)
    _check_scores(scores, logq_shift)
    with torch.no_grad():
        activated = elu(scores, elu_param)
        if loss == "cross-entropy":
            value, grad = _cross_entropy_and_grad(activated, logq_shift)
        else:
            value, grad = _bpr_max_and_grad(activated, bpreg)
        if elu_param != 0:
            # d elu / d x is 1 above 0 and alpha * exp(x) = elu(x) + alpha below; ATen's
            # fused ELU backward computes exactly that from the ELU's output, in one pass.
            grad = torch.ops.aten.elu_backward(grad, elu_param, 1, 1, True, activated)
    return value, grad


def _cross_entropy_and_grad(scores: Tensor, logq_shift: Tensor | None) -> tuple[Tensor, Tensor]:
    """Cross-entropy and its gradient: (softmax - one-hot(target)) / B."""
    n_rows = scores.shape[0]
    logits = scores if logq_shift is None else scores - logq_shift  # (B, C)
    log_probs = F.log_softmax(logits, dim=1)
    value = -log_probs.diagonal().mean()
    grad = log_probs.exp_()  # reuses the buffer: the loss above is already reduced
    grad.diagonal().sub_(1.0)
    return value, grad.div_(n_rows)


def _bpr_max_and_grad(scores: Tensor, bpreg: float) -> tuple[Tensor, Tensor]:
    """BPR-max and its gradient.

    With weights s_j (softmax over the negatives), sigma_j = sigmoid(r_t - r_j),
    P = sum_j s_j sigma_j and Q = sum_j s_j r_j^2, the row loss is
    -log(P + eps) + bpreg * Q, and (using d s_j / d r_k = s_j (delta_jk - s_k)):
        d / d r_k (k negative) = s_k (P - sigma_k^2) / (P + eps)
                                 + bpreg * s_k (r_k^2 + 2 r_k - Q)
        d / d r_t (target)     = -(P - sum_j s_j sigma_j^2) / (P + eps)
    """
    n_rows, n_cols = scores.shape
    if n_cols < 2:
        return scores.new_zeros(()), torch.zeros_like(scores)
    weights = _negative_weights(scores)  # (B, C), 0 on the target column
    sigma = torch.sigmoid(scores.diagonal().unsqueeze(1) - scores)  # (B, C)
    # The buffer is reused in place below: each (B, C) pass costs as much as the maths.
    grad = weights * sigma  # s_j sigma_j
    hit = grad.sum(dim=1, keepdim=True)  # (B, 1): P
    grad.mul_(sigma)  # s_j sigma_j^2
    hit_squared = grad.sum(dim=1, keepdim=True)  # (B, 1)
    denom = hit + LOG_EPS
    row_loss = -torch.log(denom)  # (B, 1)
    row_scale = 1.0 / (denom * n_rows)  # (B, 1); folds in the mean over rows
    grad.mul_(-row_scale).addcmul_(weights, hit * row_scale)
    target_grad = (hit_squared - hit) * row_scale  # (B, 1)
    if bpreg != 0:
        squares = scores.square()
        penalty = (weights * squares).sum(dim=1, keepdim=True)  # (B, 1): Q
        row_loss += bpreg * penalty
        squares.add_(scores, alpha=2.0).sub_(penalty).mul_(weights)
        grad.add_(squares, alpha=bpreg / n_rows)
    grad.diagonal().add_(target_grad.squeeze(1))
    return row_loss.mean(), grad


def _negative_weights(scores: Tensor) -> Tensor:
    """(B, C) softmax of each row over its negatives; the target column gets weight 0."""
    masked = scores.clone()
    masked.diagonal().fill_(float("-inf"))
    return torch.softmax(masked, dim=1)


def _check_scores(scores: Tensor, logq_shift: Tensor | None) -> None:
    if scores.ndim != 2 or scores.shape[1] < scores.shape[0]:
        raise ValueError(
            "scores must be (B, C) with C >= B (targets on the diagonal), "
            f"got {tuple(scores.shape)}"
        )
    if logq_shift is not None and logq_shift.shape != (scores.shape[1],):
        raise ValueError(
            f"logq_shift must be ({scores.shape[1]},), one value per column, "
            f"got {tuple(logq_shift.shape)}"
        )


def _check_loss_name(loss: str) -> None:
    if loss not in LOSS_NAMES:
        raise ConfigError(f"unknown loss {loss!r}; use one of {', '.join(LOSS_NAMES)}")
