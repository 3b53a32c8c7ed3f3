"""The kernel interface: what `FastStep` asks of a backend, and the buffers it lends it.

`FastStep` does the matmuls itself and hands everything between them to a `Kernels`
object; the backends (`torch_backend`, `compiled_backend`) implement the same methods with
the same arithmetic, so the step never knows which one runs. The scratch buffers are
allocated by the step once and passed in on every call, so that no backend allocates per
step. The optimiser and row-gradient methods have torch implementations here, which a
backend inherits where it has nothing faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gru4rec.network.optim import adagrad_momentum_dense_, adagrad_momentum_distinct_rows_


@dataclass(eq=False)
class RowScratch:
    """Buffers of `distinct_rows` for up to C columns and B inputs of an n_items catalogue."""

    mark: Tensor  # (n_items,) uint8, all 0 between calls
    slot_of: Tensor  # (n_items,) int64
    rows: Tensor  # (C + B,) int64
    column_slot: Tensor  # (C,) int64
    input_slot: Tensor  # (B,) int64
    counts: Tensor  # (2,) int64, on CPU
    positions: Tensor  # (C + B,) arange

    @classmethod
    def allocate(cls, n_items: int, n_cols: int, n_inputs: int, device: torch.device) -> RowScratch:
        def empty(*shape: int) -> Tensor:
            return torch.empty(shape, device=device, dtype=torch.int64)

        return cls(
            mark=torch.zeros(n_items, device=device, dtype=torch.uint8),
            slot_of=torch.zeros(n_items, device=device, dtype=torch.int64),
            rows=empty(n_cols + n_inputs),
            column_slot=empty(n_cols),
            input_slot=empty(n_inputs),
            counts=torch.zeros(2, dtype=torch.int64),
            positions=torch.arange(n_cols + n_inputs, device=device),
        )


@dataclass(eq=False)
class LossScratch:
    """Buffers of `sampled_loss` for up to B rows, C columns and U scored rows."""

    value: Tensor  # () the mean loss
    scores: Tensor  # (B * C,) the column scores (torch backend)
    row_loss: Tensor  # (B,) float64 (compiled backend)
    work: Tensor  # (threads * 3C,) per-thread scratch (compiled backend)
    index: Tensor  # (U + C,) int64 (compiled backend)

    @classmethod
    def allocate(
        cls, n_rows: int, n_cols: int, n_slots: int, device: torch.device, dtype: torch.dtype
    ) -> LossScratch:
        threads = max(torch.get_num_threads(), 1)
        return cls(
            value=torch.empty((), device=device, dtype=dtype),
            scores=torch.empty(n_rows * n_cols, device=device, dtype=dtype),
            row_loss=torch.empty(n_rows, device=device, dtype=torch.float64),
            work=torch.empty(threads * work_floats(n_cols), device=device, dtype=dtype),
            index=torch.empty(n_slots + n_cols, device=device, dtype=torch.int64),
        )


class Kernels:
    """The step's loops; shapes: B rows, H hidden units, U distinct rows, C columns.

    Every method writes into the buffers it is given (no allocation the caller keeps).
    """

    name = "abstract"

    def gru_gates(
        self,
        gates_rz: Tensor,
        gates_x: Tensor,
        bias: Tensor,
        hidden: Tensor,
        reset_hidden: Tensor | None,
    ) -> None:
        """In place: gates_rz (B, 2H) = sigmoid(gates_rz + gates_x[:, :2H] + bias[:2H]);
        reset_hidden (B, H) = r * hidden (None: not computed, the reset_after form).
        gates_rz comes in as h U_rz; gates_x (B, 3H) is the input's part (x W, or the
        one-hot input's row), without the bias."""
        raise NotImplementedError

    def gru_reset_after(
        self, candidate: Tensor, hidden_part: Tensor, bias_hidden: Tensor, gates_rz: Tensor
    ) -> None:
        """The reset_after form's candidate input, before `gru_output`: hidden_part (B, H),
        in as h U_c, += bias_hidden (H,) (kept for the backward); candidate = r hidden_part."""
        raise NotImplementedError

    def gru_reset_after_backward(
        self,
        grad_gates: Tensor,
        hidden_part: Tensor,
        gates_rz: Tensor,
        grad_hidden_part: Tensor,
    ) -> None:
        """With d a_c = grad_gates[:, 2H:] (from `gru_output_backward`): grad_gates[:, :H] =
        d a_c hidden_part r (1 - r), the pre-activation gradient of r; grad_hidden_part =
        d a_c r, the gradient of h U_c + b_hc."""
        raise NotImplementedError

    def gru_output(
        self,
        candidate: Tensor,
        gates_x: Tensor,
        bias: Tensor,
        hidden: Tensor,
        gates_rz: Tensor,
        diff: Tensor,
        new_hidden: Tensor,
        mask: Tensor | None,
        output: Tensor,
    ) -> None:
        """candidate (B, H), in as (r h) U_c, = tanh(it + gates_x[:, 2H:] + bias[2H:]);
        diff = c - h; new_hidden = h + z diff; output = new_hidden * mask (no mask: not
        written, the caller uses new_hidden)."""
        raise NotImplementedError

    def gru_output_backward(
        self,
        grad_output: Tensor,
        mask: Tensor | None,
        diff: Tensor,
        gates_rz: Tensor,
        candidate: Tensor,
        grad_gates: Tensor,
    ) -> None:
        """With dh' = grad_output * mask: grad_gates[:, H:2H] = dh' diff z (1 - z) and
        grad_gates[:, 2H:] = dh' z (1 - c^2), the pre-activation gradients of z and c.
        grad_output may be overwritten."""
        raise NotImplementedError

    def gru_reset_backward(
        self, grad_reset_hidden: Tensor, hidden: Tensor, gates_rz: Tensor, grad_gates: Tensor
    ) -> None:
        """grad_gates[:, :H] = d(r h) h r (1 - r), the pre-activation gradient of r."""
        raise NotImplementedError

    def sampled_loss(
        self,
        row_scores: Tensor,
        row_bias: Tensor,
        column_slot: Tensor,
        *,
        loss: str,
        logq_shift: Tensor | None,
        bpreg: float,
        elu_param: float,
        grad_rows: Tensor,
        scratch: LossScratch,
    ) -> Tensor:
        """`losses.sampled_loss_and_grad` of `(row_scores + row_bias)[:, column_slot]`.

        row_scores, grad_rows: (B, U); row_bias: (U,); column_slot: (C,) int64, each
        column's row; logq_shift: (C,) or None. The gradient's columns of each row are
        summed into grad_rows (rows no column uses get 0). row_scores may be overwritten.
        Returns the 0-dim mean loss (`scratch.value`).
        """
        raise NotImplementedError

    def distinct_rows(
        self, columns: Tensor, inputs: Tensor, with_inputs: bool, scratch: RowScratch
    ) -> tuple[Tensor, int, Tensor, Tensor]:
        """The distinct items of `columns` (C,), then (`with_inputs`) those of `inputs`
        (B,) not among them, in an order of the backend's choosing.

        Returns (rows (U_all,), U scored, column_slot (C,), input_slot (B,)): each
        column's and input's position in rows (an input not there: -1).
        """
        raise NotImplementedError

    def add_to_rows(self, dst: Tensor, first: int, slot: Tensor, src: Tensor) -> None:
        """dst[first:] = 0, then dst[slot[b]] += src[b] for each row b of src (N, d)."""
        dst[first:].zero_()
        dst.index_add_(0, slot, src.to(dst.dtype))

    def adagrad_dense(
        self,
        param: Tensor,
        grad: Tensor,
        acc: Tensor,
        velocity: Tensor,
        *,
        lr: float,
        momentum: float,
        eps: float,
        shadow: Tensor | None = None,
    ) -> None:
        """Adagrad with momentum on every element (`optim.adagrad_momentum_dense_`);
        grad may be in a lower precision; shadow, if given, gets the new param."""
        with torch.no_grad():
            adagrad_momentum_dense_(
                param, grad.to(param.dtype), acc, velocity, lr=lr, momentum=momentum, eps=eps
            )
            if shadow is not None:
                shadow.copy_(param)

    def adagrad_rows(
        self,
        param: Tensor,
        rows: Tensor,
        grad: Tensor,
        acc: Tensor,
        velocity: Tensor,
        *,
        lr: float,
        momentum: float,
        eps: float,
        shadow: Tensor | None = None,
    ) -> None:
        """The update of param[rows] for distinct rows (U,); grad (U, *row_shape)."""
        with torch.no_grad():
            adagrad_momentum_distinct_rows_(
                param, rows, grad.to(param.dtype), acc, velocity, lr=lr, momentum=momentum, eps=eps
            )
            if shadow is not None:
                shadow.index_copy_(0, rows, param.index_select(0, rows).to(shadow.dtype))


def work_floats(n_cols: int) -> int:
    """Scratch floats per thread that the compiled loss loops need for C columns."""
    return 3 * n_cols
