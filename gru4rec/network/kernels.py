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

Backends:
    TorchKernels     torch operations: any device and dtype (GPU, float64, bf16 ...).
    CompiledKernels  fused C loops (gru4rec/network/csrc), one pass each instead of a chain of
                     torch operations, each with its dispatch and its pass over memory
                     (1.6-1.8x the training speed of the torch backend on CPU). Built with the
                     package as the extension `gru4rec.network._kernels` (setup.py), loaded only
                     from the package's own directory, compiled once per instruction set
                     (baseline x86-64, AVX2, AVX-512) with the best the CPU runs chosen at
                     load time. With OpenMP they run on torch's own thread pool.

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

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from gru4rec.network.losses import sampled_loss_and_grad
from gru4rec.network.optim import adagrad_momentum_dense_, adagrad_momentum_distinct_rows_

logger = logging.getLogger(__name__)

ISAS = ("base", "avx2", "avx512")  # the builds in gru4rec/network/csrc/kernels_<isa>.c, in order
_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input


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
            work=torch.empty(threads * _work_floats(n_cols), device=device, dtype=dtype),
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


class CompiledKernels(Kernels):
    """The fused C loops of `gru4rec.network._kernels` for one instruction set (contiguous CPU
    tensors; fp32, bf16 where a docstring says so, int64 indices)."""

    name = "compiled"

    def __init__(self, library: ctypes.CDLL, isa: str, path: Path) -> None:
        self.isa = isa
        self.path = path
        self.name = f"compiled-{isa}"
        self.openmp = bool(library.gru4rec_openmp())
        functions = {}
        for name, argtypes in _SIGNATURES.items():
            function = getattr(library, f"{name}_{isa}")
            function.argtypes = argtypes
            if name == "flush_subnormals":
                function.restype = ctypes.c_int64
            functions[name] = function
        self._c: Any = SimpleNamespace(**functions)  # the C functions of this instruction set

    def gru_gates(
        self,
        gates_rz: Tensor,
        gates_x: Tensor,
        bias: Tensor,
        hidden: Tensor,
        reset_hidden: Tensor | None,
    ) -> None:
        n_rows, size = hidden.shape
        self._c.gru_gates(
            gates_rz.data_ptr(),
            gates_x.data_ptr(),
            bias.data_ptr(),
            hidden.contiguous().data_ptr(),
            _pointer(reset_hidden),
            n_rows,
            size,
        )

    def gru_reset_after(
        self, candidate: Tensor, hidden_part: Tensor, bias_hidden: Tensor, gates_rz: Tensor
    ) -> None:
        n_rows, size = hidden_part.shape
        self._c.gru_reset_after(
            candidate.data_ptr(),
            hidden_part.data_ptr(),
            bias_hidden.data_ptr(),
            gates_rz.data_ptr(),
            n_rows,
            size,
        )

    def gru_reset_after_backward(
        self,
        grad_gates: Tensor,
        hidden_part: Tensor,
        gates_rz: Tensor,
        grad_hidden_part: Tensor,
    ) -> None:
        n_rows, size = hidden_part.shape
        self._c.gru_reset_after_backward(
            grad_gates.data_ptr(),
            hidden_part.data_ptr(),
            gates_rz.data_ptr(),
            grad_hidden_part.data_ptr(),
            n_rows,
            size,
        )

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
        n_rows, size = hidden.shape
        self._c.gru_output(
            candidate.data_ptr(),
            gates_x.data_ptr(),
            bias.data_ptr(),
            hidden.contiguous().data_ptr(),
            gates_rz.data_ptr(),
            diff.data_ptr(),
            new_hidden.data_ptr(),
            _pointer(mask),
            output.data_ptr(),
            n_rows,
            size,
        )

    def gru_output_backward(
        self,
        grad_output: Tensor,
        mask: Tensor | None,
        diff: Tensor,
        gates_rz: Tensor,
        candidate: Tensor,
        grad_gates: Tensor,
    ) -> None:
        n_rows, size = diff.shape
        self._c.gru_output_backward(
            grad_output.data_ptr(),
            _pointer(mask),
            diff.data_ptr(),
            gates_rz.data_ptr(),
            candidate.data_ptr(),
            grad_gates.data_ptr(),
            n_rows,
            size,
        )

    def gru_reset_backward(
        self, grad_reset_hidden: Tensor, hidden: Tensor, gates_rz: Tensor, grad_gates: Tensor
    ) -> None:
        n_rows, size = hidden.shape
        self._c.gru_reset_backward(
            grad_reset_hidden.data_ptr(),
            hidden.contiguous().data_ptr(),
            gates_rz.data_ptr(),
            grad_gates.data_ptr(),
            n_rows,
            size,
        )

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
        n_rows, n_slots = row_scores.shape
        n_cols = column_slot.numel()
        stride = _work_floats(n_cols)
        n_threads = max(1, min(torch.get_num_threads(), scratch.work.numel() // stride))
        common = (
            n_rows,
            n_slots,
            n_cols,
            grad_rows.data_ptr(),
            scratch.value.data_ptr(),
            scratch.row_loss.data_ptr(),
            scratch.work.data_ptr(),
            stride,
            scratch.index.data_ptr(),
            n_threads,
        )
        if loss == "cross-entropy":
            self._c.cross_entropy(
                row_scores.data_ptr(),
                row_bias.data_ptr(),
                column_slot.data_ptr(),
                _pointer(logq_shift),
                elu_param,
                *common,
            )
        else:
            self._c.bpr_max(
                row_scores.data_ptr(),
                row_bias.data_ptr(),
                column_slot.data_ptr(),
                bpreg,
                elu_param,
                *common,
            )
        return scratch.value

    def distinct_rows(
        self, columns: Tensor, inputs: Tensor, with_inputs: bool, scratch: RowScratch
    ) -> tuple[Tensor, int, Tensor, Tensor]:
        column_slot = scratch.column_slot[: columns.shape[0]]
        input_slot = scratch.input_slot[: inputs.shape[0]]
        self._c.distinct_rows(
            columns.data_ptr(),
            columns.numel(),
            inputs.data_ptr(),
            inputs.numel(),
            int(with_inputs),
            scratch.mark.data_ptr(),
            scratch.slot_of.data_ptr(),
            scratch.rows.data_ptr(),
            column_slot.data_ptr(),
            input_slot.data_ptr(),
            scratch.counts.data_ptr(),
        )
        n_scored, n_all = scratch.counts.tolist()
        return scratch.rows[:n_all], n_scored, column_slot, input_slot

    def add_to_rows(self, dst: Tensor, first: int, slot: Tensor, src: Tensor) -> None:
        if dst.dtype != torch.float32 or src.dtype != torch.float32:  # bf16 gradients
            super().add_to_rows(dst, first, slot, src)
            return
        n_dst, width = dst.shape
        self._c.add_to_rows(
            dst.data_ptr(),
            first,
            n_dst,
            slot.data_ptr(),
            src.contiguous().data_ptr(),
            src.shape[0],
            width,
        )

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
        """param, acc, velocity fp32; grad fp32 or bf16; shadow bf16 or None."""
        self._c.adagrad_dense(
            param.data_ptr(),
            acc.data_ptr(),
            velocity.data_ptr(),
            grad.data_ptr(),
            int(grad.dtype == torch.bfloat16),
            _pointer(shadow),
            param.numel(),
            lr,
            momentum,
            eps,
        )

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
        """As `adagrad_dense`; rows contiguous int64, grad (U, d) contiguous."""
        if not (rows.is_contiguous() and grad.is_contiguous()):
            super().adagrad_rows(
                param, rows, grad, acc, velocity, lr=lr, momentum=momentum, eps=eps, shadow=shadow
            )
            return
        width = param[0].numel() if param.ndim > 1 else 1
        self._c.adagrad_rows(
            param.data_ptr(),
            acc.data_ptr(),
            velocity.data_ptr(),
            rows.data_ptr(),
            grad.data_ptr(),
            int(grad.dtype == torch.bfloat16),
            _pointer(shadow),
            rows.numel(),
            width,
            param.shape[0],
            lr,
            momentum,
            eps,
        )

    # ------------------------------------------------------- loops used outside the step

    def sample_inverse_cdf(
        self, cumulative: Tensor, guide: Tensor, uniform: Tensor, out: Tensor
    ) -> Tensor:
        """out = searchsorted(cumulative, uniform, right=True) capped at n_items - 1, using
        the guide table `guide` (n_guide + 1,) = that search for arange(n_guide + 1) /
        n_guide. cumulative, uniform: float64; guide, out: int64."""
        self._c.sample_inverse_cdf(
            cumulative.data_ptr(),
            cumulative.numel(),
            guide.data_ptr(),
            guide.numel() - 1,
            uniform.data_ptr(),
            uniform.numel(),
            out.data_ptr(),
        )
        return out

    def dropout_mask(
        self, key: int, start: int, threshold: int, scale: float, out: Tensor
    ) -> Tensor:
        """out (fp32) = the masks of elements start.. of a site (`sampling.dropout_bits`)."""
        self._c.dropout_mask(key, start, out.numel(), threshold, scale, out.data_ptr())
        return out

    def top_k_rows(
        self,
        scores: Tensor,
        k: int,
        values: Tensor,
        indices: Tensor,
        *,
        offset: int = 0,
        merge: bool = False,
    ) -> None:
        """The k best of each row of `scores` (R, N) fp32 into `values` (R, k) fp32 and
        `indices` (R, k) int64, best first, ties to the lower column, NaN never chosen
        (its places stay -inf / -1): `torch.topk` up to the order of ties.

        To go through the columns in blocks: each block's columns are numbered from
        `offset`, and `merge` keeps the top k of earlier blocks (lower columns) in play.
        """
        n_rows, n_cols = scores.shape
        self._c.top_k_rows(
            scores.data_ptr(),
            n_rows,
            n_cols,
            k,
            offset,
            int(merge),
            values.data_ptr(),
            indices.data_ptr(),
        )

    def flush_subnormals(self, on: bool) -> bool:
        """Set (or clear) FTZ/DAZ on this thread and every thread of torch's CPU pool;
        returns whether this thread had it."""
        return bool(self._c.flush_subnormals(int(on)) == 1)


_P, _I, _F, _U = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_uint64
_SIGNATURES: dict[str, list[type]] = {
    "adagrad_dense": [_P, _P, _P, _P, _I, _P, _I, _F, _F, _F],
    "adagrad_rows": [_P, _P, _P, _P, _P, _I, _P, _I, _I, _I, _F, _F, _F],
    "flush_subnormals": [_I],
    "sample_inverse_cdf": [_P, _I, _P, _I, _P, _I, _P],
    "dropout_mask": [_U, _U, _I, _U, _F, _P],
    "distinct_rows": [_P, _I, _P, _I, _I, _P, _P, _P, _P, _P, _P],
    "cross_entropy": [_P, _P, _P, _P, _F, _I, _I, _I, _P, _P, _P, _P, _I, _P, _I],
    "bpr_max": [_P, _P, _P, _F, _F, _I, _I, _I, _P, _P, _P, _P, _I, _P, _I],
    "gru_gates": [_P, _P, _P, _P, _P, _I, _I],
    "gru_output": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _I, _I],
    "gru_output_backward": [_P, _P, _P, _P, _P, _P, _I, _I],
    "gru_reset_backward": [_P, _P, _P, _P, _I, _I],
    "gru_reset_after": [_P, _P, _P, _P, _I, _I],
    "gru_reset_after_backward": [_P, _P, _P, _P, _I, _I],
    "top_k_rows": [_P, _I, _I, _I, _I, _I, _P, _P],
    "add_to_rows": [_P, _I, _I, _P, _P, _I, _I],
}


def _pointer(tensor: Tensor | None) -> int | None:
    """The address of an optional tensor (NULL for None)."""
    return tensor.data_ptr() if tensor is not None else None


def _work_floats(n_cols: int) -> int:
    """Scratch floats per thread that the compiled loss loops need for C columns."""
    return 3 * n_cols


# ------------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class _Library:
    """The loaded extension, or why there is none."""

    library: ctypes.CDLL | None
    path: Path | None
    levels: tuple[str, ...]  # the instruction sets this CPU runs, best last
    reason: str  # why there is no library ("" when there is)


@cache
def _load() -> _Library:
    """Load `gru4rec.network._kernels` from the package's own directory (never anywhere else)."""
    if os.environ.get("GRU4REC_KERNELS", "auto") == "torch":
        return _Library(None, None, (), "GRU4REC_KERNELS=torch is set")
    try:
        from gru4rec.network import _kernels  # type: ignore[attr-defined]  # built by setup.py
    except ImportError as error:
        return _Library(
            None, None, (), f"the extension gru4rec.network._kernels is not built ({error})"
        )
    path = Path(_kernels.__file__).resolve()
    package = Path(__file__).resolve().parent
    if path.parent != package:  # the import system found it elsewhere: refuse it
        return _Library(None, path, (), f"{path} is not inside the package ({package})")
    library = ctypes.CDLL(str(path))  # the module already loaded: dlopen returns it
    library.gru4rec_isa_level.restype = ctypes.c_int64
    level = int(library.gru4rec_isa_level())
    return _Library(library, path, ISAS[: level + 1], "")


def isa_levels() -> tuple[str, ...]:
    """The instruction sets of the compiled loops this CPU runs, best last (() if none)."""
    return _load().levels


@cache
def compiled(isa: str | None = None) -> CompiledKernels | None:
    """The compiled loops for `isa` (default: the best the CPU runs, capped by
    GRU4REC_ISA), or None where they are not built or the CPU cannot run them."""
    loaded = _load()
    if loaded.library is None or not loaded.levels:
        return None
    if isa is None:
        cap = os.environ.get("GRU4REC_ISA")
        usable = loaded.levels[: loaded.levels.index(cap) + 1] if cap in loaded.levels else ()
        isa = (usable or loaded.levels)[-1]
    if isa not in loaded.levels:
        return None
    assert loaded.path is not None
    return CompiledKernels(loaded.library, isa, loaded.path)


def unavailable_reason() -> str:
    """Why `compiled()` is None ("" when it is not)."""
    return _load().reason


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


def flush_subnormals(on: bool) -> bool:
    """Set (or clear) FTZ/DAZ, subnormal floats read and written as zero, on this thread
    and every thread of torch's CPU pool; returns whether this thread had it. Without the
    compiled loops, torch's switch (this thread only) is used."""
    kernels = compiled()
    if kernels is None:
        torch.set_flush_denormal(on)
        return False
    return kernels.flush_subnormals(on)


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """`flush_subnormals(True)` for the block, restored on exit.

    Gradients of far-off softmax columns underflow towards subnormals (below 1.2e-38),
    and x86 matmuls and loops over them run several times slower (3-4x on the rsc15
    preset's backward matmuls); flushed to 0, no float32 update can tell the difference.
    """
    previous = flush_subnormals(True)
    try:
        yield
    finally:
        flush_subnormals(previous)


def main() -> int:
    """`python -m gru4rec.network.kernels`: say which kernels training uses; exit 1 without the
    compiled ones (the Docker image's build runs this)."""
    kernels = compiled()
    if kernels is None:
        print(f"compiled kernels: not available ({unavailable_reason()})")
        return 1
    openmp = "OpenMP" if kernels.openmp else "one thread (no OpenMP)"
    print(
        f"compiled kernels: {kernels.path} ({kernels.isa}, of {', '.join(isa_levels())}; {openmp})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
