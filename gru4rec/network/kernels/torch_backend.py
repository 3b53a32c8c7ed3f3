"""The kernels as torch operations: the backend for every device and float type.

GPUs, float64 and bf16 parameters train on these; CPU fp32 training falls back to them
where the compiled loops are not built (GRU4REC_KERNELS=torch forces them). They are also
the reference the compiled loops are tested against (tests/test_kernels.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gru4rec.network.kernels.interface import Kernels, LossScratch, RowScratch
from gru4rec.network.losses import sampled_loss_and_grad

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input


class TorchKernels(Kernels):
    """The loops as torch operations: any device, any float type."""

    name = "torch"

    def gru_gates(
        self,
        gates_rz: Tensor,
        gates_x: Tensor,
        bias: Tensor,
        hidden: Tensor,
        reset_hidden: Tensor | None,
    ) -> None:
        size = hidden.shape[1]
        gates_rz.add_(gates_x[:, : 2 * size]).add_(bias[: 2 * size]).sigmoid_()
        if reset_hidden is not None:
            torch.mul(gates_rz[:, :size], hidden, out=reset_hidden)

    def gru_reset_after(
        self, candidate: Tensor, hidden_part: Tensor, bias_hidden: Tensor, gates_rz: Tensor
    ) -> None:
        size = hidden_part.shape[1]
        torch.mul(gates_rz[:, :size], hidden_part.add_(bias_hidden), out=candidate)

    def gru_reset_after_backward(
        self,
        grad_gates: Tensor,
        hidden_part: Tensor,
        gates_rz: Tensor,
        grad_hidden_part: Tensor,
    ) -> None:
        size = hidden_part.shape[1]
        grad_candidate, reset = grad_gates[:, 2 * size :], gates_rz[:, :size]
        grad_reset = grad_gates[:, :size]
        torch.mul(grad_candidate, hidden_part, out=grad_reset)  # d r, then the sigmoid
        _sigmoid_backward(grad_reset, reset, grad_input=grad_reset)
        torch.mul(grad_candidate, reset, out=grad_hidden_part)

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
        size = hidden.shape[1]
        candidate.add_(gates_x[:, 2 * size :]).add_(bias[2 * size :]).tanh_()
        torch.sub(candidate, hidden, out=diff)
        torch.addcmul(hidden, gates_rz[:, size:], diff, out=new_hidden)  # h + z (c - h)
        if mask is not None:
            torch.mul(new_hidden, mask, out=output)

    def gru_output_backward(
        self,
        grad_output: Tensor,
        mask: Tensor | None,
        diff: Tensor,
        gates_rz: Tensor,
        candidate: Tensor,
        grad_gates: Tensor,
    ) -> None:
        size = diff.shape[1]
        update = gates_rz[:, size:]
        if mask is not None:
            grad_output.mul_(mask)  # d h'
        grad_update = grad_gates[:, size : 2 * size]
        torch.mul(grad_output, diff, out=grad_update)  # d z, then through the sigmoid
        _sigmoid_backward(grad_update, update, grad_input=grad_update)
        grad_candidate = grad_output.mul_(update)  # d c, then through tanh
        _tanh_backward(grad_candidate, candidate, grad_input=grad_gates[:, 2 * size :])

    def gru_reset_backward(
        self, grad_reset_hidden: Tensor, hidden: Tensor, gates_rz: Tensor, grad_gates: Tensor
    ) -> None:
        size = hidden.shape[1]
        grad_reset = grad_gates[:, :size]
        torch.mul(grad_reset_hidden, hidden, out=grad_reset)  # d r
        _sigmoid_backward(grad_reset, gates_rz[:, :size], grad_input=grad_reset)

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
        n_rows, n_cols = row_scores.shape[0], column_slot.shape[0]
        row_scores.add_(row_bias)
        scores = scratch.scores[: n_rows * n_cols].view(n_rows, n_cols)
        torch.index_select(row_scores, 1, column_slot, out=scores)  # (B, C)
        value, grad_scores = sampled_loss_and_grad(
            scores,
            loss=loss,  # type: ignore[arg-type]
            logq_shift=logq_shift,
            bpreg=bpreg,
            elu_param=elu_param,
        )
        grad_rows.zero_().index_add_(1, column_slot, grad_scores)
        return scratch.value.copy_(value)

    def distinct_rows(
        self, columns: Tensor, inputs: Tensor, with_inputs: bool, scratch: RowScratch
    ) -> tuple[Tensor, int, Tensor, Tensor]:
        # Mark the items in an (n_items,) mask and scan it: ascending order.
        mark = scratch.mark  # all 0 between calls
        mark.index_fill_(0, columns, 1)
        scored = mark.nonzero().view(-1)
        rows = scored
        if with_inputs:
            mark.index_fill_(0, inputs, 1)
            mark.index_fill_(0, scored, 0)
            rows = torch.cat((scored, mark.nonzero().view(-1)))
        mark.index_fill_(0, rows, 0)
        scratch.slot_of.fill_(-1).index_copy_(0, rows, scratch.positions[: rows.shape[0]])
        column_slot = scratch.column_slot[: columns.shape[0]]
        input_slot = scratch.input_slot[: inputs.shape[0]]
        torch.index_select(scratch.slot_of, 0, columns, out=column_slot)
        torch.index_select(scratch.slot_of, 0, inputs, out=input_slot)
        return rows, scored.shape[0], column_slot, input_slot
