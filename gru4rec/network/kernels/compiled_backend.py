"""The kernels as fused C loops: the ctypes bindings of `gru4rec.network._kernels`.

One pass over memory per kernel instead of a chain of torch operations, each with its own
dispatch and pass (1.6-1.8x the training speed of the torch backend on CPU). The C
functions take raw pointers, so every method passes `data_ptr()`s and sizes; their
argument types are declared once (`_SIGNATURES`) for each instruction set's copy. The
library also carries loops used outside the step (negative sampling, dropout masks,
recommendation's top-k, FTZ/DAZ), whose callers keep torch twins. Which library is
loaded, and for which instruction set, is `loader`'s business.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from gru4rec.network.kernels.interface import Kernels, LossScratch, RowScratch, work_floats


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
        stride = work_floats(n_cols)
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
