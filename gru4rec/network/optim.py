"""Adagrad with momentum, updating only the rows that received a gradient.

The update, per element of a row that has a gradient g this step:
    acc += g^2
    velocity = momentum * velocity - lr * g / sqrt(acc + eps)
    param += velocity
The reference calls this Nesterov; it is plain heavy-ball momentum. Rows without a
gradient keep their parameters, accumulator and velocity: their momentum does not coast.
That is what makes item embeddings cheap to train with sampled negatives.

Example:
    >>> embedding = torch.nn.Embedding(1000, 64, sparse=True)
    >>> optimizer = SparseAdagradMomentum(embedding.parameters(), lr=0.05, momentum=0.4)
    >>> embedding(torch.tensor([3, 7, 3])).sum().backward()
    >>> optimizer.step()  # rows 3 and 7 move, every other row is untouched
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from gru4rec.errors import ConfigError

DEFAULT_EPS = 1e-6


@torch.no_grad()
def adagrad_momentum_dense_(
    param: Tensor,
    grad: Tensor,
    acc: Tensor,
    velocity: Tensor,
    *,
    lr: float,
    momentum: float,
    eps: float = DEFAULT_EPS,
) -> None:
    """Update every element of `param` in place; `grad`, `acc`, `velocity` have its shape."""
    acc.addcmul_(grad, grad)
    velocity.mul_(momentum).addcdiv_(grad, (acc + eps).sqrt_(), value=-lr)
    param.add_(velocity)


def adagrad_momentum_distinct_rows_(
    param: Tensor,
    rows: Tensor,
    grad: Tensor,
    acc: Tensor,
    velocity: Tensor,
    lr: float,
    momentum: float,
    eps: float,
) -> None:
    """The row update for distinct `rows` (U,) with gradients `grad` (U, ...)."""
    row_acc = acc.index_select(0, rows).addcmul_(grad, grad)  # (U, ...)
    acc.index_copy_(0, rows, row_acc)
    row_velocity = velocity.index_select(0, rows).mul_(momentum)
    row_velocity.addcdiv_(grad, row_acc.add_(eps).sqrt_(), value=-lr)
    velocity.index_copy_(0, rows, row_velocity)
    param.index_add_(0, rows, row_velocity)


class SparseAdagradMomentum(torch.optim.Optimizer):
    """Adagrad with (heavy-ball) momentum for dense and sparse gradients.

    Dense gradients update the whole parameter; sparse COO gradients (from
    `F.embedding(..., sparse=True)` or `nn.Embedding(sparse=True)`) update only their
    rows. State per parameter: `acc` and `velocity`, zeros of the parameter's shape.
    Item tables must therefore produce sparse gradients: a dense gradient updates every
    row, and rows with a zero gradient would coast on their momentum.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (> 0).
        momentum: weight of the previous velocity, in [0, 1).
        eps: added to the accumulator under the square root.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        eps: float = DEFAULT_EPS,
    ) -> None:
        if not lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        if not eps > 0:
            raise ConfigError(f"eps must be > 0, got {eps}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            hyper = {"lr": group["lr"], "momentum": group["momentum"], "eps": group["eps"]}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:  # lazily, so that parameter groups added later get state too
                    state["acc"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["velocity"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                grad = param.grad
                if grad.is_sparse:
                    if grad.sparse_dim() != 1:
                        raise ValueError(
                            "sparse gradients must be row-sparse (sparse_dim 1), "
                            f"got sparse_dim {grad.sparse_dim()}"
                        )
                    grad = grad.coalesce()  # distinct, sorted rows with summed values
                    adagrad_momentum_distinct_rows_(
                        param,
                        grad.indices()[0],
                        grad.values(),
                        state["acc"],
                        state["velocity"],
                        **hyper,
                    )
                else:
                    adagrad_momentum_dense_(param, grad, state["acc"], state["velocity"], **hyper)
        return loss
