"""The fast training step: the same update as autograd, with a hand-derived backward pass.

Autograd spends most of a GRU4Rec step on bookkeeping: a graph per step, sparse COO
gradients that must be sorted and coalesced, gradients w.r.t. the carried hidden state
(which is detached, so nobody needs them), fresh allocations for every intermediate.
This step computes exactly the gradients the update needs, in preallocated buffers:

    rows      the distinct items among the columns (targets + negatives), U of them
    forward   x = dropout(E[inputs]);  per layer: gx = x W + b                  (B, 3H)
              r, z = sigmoid(gx_rz + h U_rz);  c = tanh(gx_c + (r h) U_c)
                (reset_after: c = tanh(gx_c + r p), p = h U_c + b_hc)
              h' = h + z (c - h);  out = dropout(h')                             (B, H)
              scores = (out W_items[rows]^T + b_items[rows])[:, column -> row]   (B, C)
    loss      closed-form loss and G = d loss / d scores (`losses.sampled_loss_and_grad`)
    backward  G_rows = G summed over the columns of each row                      (B, U)
              d out = G_rows W_rows;  d W_rows = G_rows^T out;  d b_rows = sum G_rows
              per layer, top to bottom (no d h: the carried state is detached):
              da_c = tanh'(dh' z);  d(rh) = da_c U_c^T;  da_r = sigmoid'(d(rh) h)
              da_z = sigmoid'(dh' (c - h));  dU_c = (rh)^T da_c;  dU_rz = h^T da_rz
              dW = x^T da;  db = sum(da);  dx = da W^T
              (reset_after: dp = da_c r;  da_r = sigmoid'(da_c p);  dU_c = h^T dp;
               db_hc = sum(dp))
    update    Adagrad with momentum: the GRU weights densely, each item table on the
              distinct rows it looked up (the rows of autograd's sparse gradients)

Scoring each distinct item once and summing G per item (instead of scoring every column
and summing the (C, H) row gradients) gives the same numbers with fewer FLOPs: sampled
negatives repeat popular items. Negatives and dropout masks come from the chunked
samplers that the autograd path uses, in the same order, so both paths train the same
model (tests/test_fast_step.py).

Everything between the matmuls (GRU gates, the loss with its gradient, the distinct
rows, the optimiser) goes to a `gru4rec.network.kernels` backend: fused C loops in fp32 on CPU
where they are built, torch operations elsewhere (GPU, float64); the step does not know
which.

precision="bf16" runs the matmuls in bfloat16 (about 4x the fp32 rate with AMX): they
read bf16 copies of the weights that the optimiser refreshes as it updates the fp32
masters. Parameters, optimiser state, the loss and the elementwise steps stay fp32.

The parts, each with one job:
    _Precision  the matmuls' precision against the parameters' (casts, bf16 row padding)
    _Optimiser  the trained parameters (the GRU weights as one flat buffer), their
                Adagrad-momentum state and bf16 copies, and the update
    _Workspace  every buffer of the step, allocated once and viewed per batch size
    _GRUPass    one GRU layer's forward and backward (matmuls here, the rest in kernels)
    FastStep    the step: embedding, layers, scores and loss; their backward; the update

Example:
    >>> step = FastStep(model, config, support, torch.device("cpu"))
    >>> loss, hidden = step.loss(inputs, targets, hidden)  # forward + loss
    >>> step.update(loss)  # backward + sparse update
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gru4rec.network.config import GRU4RecConfig, Precision
from gru4rec.network.kernels import Kernels, LossScratch, RowScratch, kernels_for
from gru4rec.network.model import GRU4Rec, GRULayer
from gru4rec.network.sampling import DropoutMasks, NegativeSampler, logq_shifts

_BF16_ROW_MULTIPLE = 64


@dataclass(frozen=True)
class _Precision:
    """The matmuls' precision ("compute") against the parameters' ("full").

    bf16: the matmuls read bf16 operands and copies of the weights; everything else
    (parameters, optimiser state, the loss, the elementwise steps) stays in full precision.
    """

    compute: torch.dtype
    low: bool  # the matmuls run in a lower precision than the parameters

    def cast(self, tensor: Tensor) -> Tensor:
        """`tensor` in the compute precision (itself in full precision)."""
        return tensor.to(self.compute) if self.low else tensor

    def shadow(self, param: Tensor) -> Tensor | None:
        """A compute-precision copy of `param` (bf16 training), or None in full precision."""
        return param.detach().to(self.compute) if self.low else None

    def padded(self, n_scored: int) -> int:
        """The scored rows rounded up for the matmuls: bf16 matmuls (oneDNN) build a kernel
        per shape, so the varying U is rounded up to a multiple of 64 to reuse them."""
        return -(-n_scored // _BF16_ROW_MULTIPLE) * _BF16_ROW_MULTIPLE if self.low else n_scored


@dataclass(eq=False)
class _Layer:
    """One GRU layer's buffers for B rows: what its forward pass keeps for the backward."""

    gates_x: Tensor  # (B, 3H) input projection (no bias); then the gate gradients
    gates_rz: Tensor  # (B, 2H) sigmoid(r, z)
    reset_hidden: Tensor  # (B, H) r * h; reset_after: p = h U_c + b_hc
    candidate: Tensor  # (B, H) tanh(...)
    diff: Tensor  # (B, H) c - h
    new_hidden: tuple[Tensor, Tensor]  # (B, H) h', two buffers used in turn
    output: tuple[Tensor, Tensor]  # (B, H) dropout(h'), two buffers used in turn
    grad_reset_hidden: Tensor  # (B, H) d (r h); reset_after: d p
    grad_input: Tensor  # (B, I) d x, the layer below's output gradient


@dataclass(eq=False)
class _Buffers:
    """Every per-step buffer as views for one batch size B (cached: B changes rarely)."""

    n_rows: int
    n_cols: int  # C = B + n_sample
    columns: Tensor  # (C,) int64: targets, then the shared negatives
    shift: Tensor  # (C,) logQ of each column
    embedded: Tensor  # (B, E) dropped-out input embedding, in the compute precision
    grad_out: Tensor  # (B, H_last)
    grad_inputs: Tensor  # (B, input width) summed gradients of the input table's rows
    layers: list[_Layer]


@dataclass(eq=False)
class _RowState:
    """Adagrad-momentum state of one item table, updated on the rows a step touched."""

    param: Tensor  # (N, d) or (N,)
    acc: Tensor
    velocity: Tensor
    shadow: Tensor | None  # the compute-precision copy kept in step (bf16), or None

    @classmethod
    def zeros(cls, param: Tensor, shadow: Tensor | None = None) -> _RowState:
        """The state of a table no step has updated yet."""
        return cls(param, torch.zeros_like(param), torch.zeros_like(param), shadow)


@dataclass(eq=False)
class _Rows:
    """The item rows of one step: distinct, scored ones first."""

    rows: Tensor  # (U_all,) distinct items: the U scored ones, then input-only ones
    n_scored: int  # U: rows[:U] are the distinct columns
    column_slot: Tensor  # (C,) position in `rows` of each column's item
    input_slot: Tensor  # (B,) position in `rows` of each input item (-1: not there)


@dataclass(eq=False)
class _LayerOperands:
    """One layer's forward inputs that its backward needs."""

    layer_input: Tensor | None  # x (B, I), compute precision; None for one-hot input
    hidden: Tensor  # h (B, H), the incoming state
    hidden_low: Tensor  # h in the compute precision
    operand_c: Tensor  # what multiplied U_c: r h (reset_before) or h (reset_after)


@dataclass(eq=False)
class _Pending:
    """What `FastStep.loss` leaves for `FastStep.update`."""

    buffers: _Buffers
    inputs: Tensor  # (B,) int64
    masks: list[Tensor | None]  # the step's dropout masks, one per site
    rows: _Rows
    operands: list[_LayerOperands]  # per layer, bottom to top
    output_low: Tensor  # (B, H_last) the top layer's output, compute precision


class _Optimiser:
    """Adagrad with momentum over every trained parameter, and its state.

    While it exists the GRU weights are views of one flat buffer (as are their gradients,
    their state and their bf16 copies), so that their update is one pass whatever the
    number of layers; `release()` gives them their own storage back. Each item table is
    updated on the distinct rows a step touched (the rows of autograd's sparse gradients).
    """

    def __init__(
        self,
        model: GRU4Rec,
        config: GRU4RecConfig,
        precision: _Precision,
        kernels: Kernels,
    ) -> None:
        self.model = model
        self.kernels = kernels
        self.hyper = {
            "lr": config.learning_rate,
            "momentum": config.momentum,
            "eps": config.adagrad_eps,
        }
        self.dense = [p for layer in model.gru_layers for p in layer.parameters()]
        self.flat_param = torch.cat([p.detach().reshape(-1) for p in self.dense])
        for param, view in zip(self.dense, self._views(self.flat_param), strict=True):
            param.data = view
        # Gradients come out of the matmuls, so in the compute precision (bf16: the
        # optimiser loop reads them as they are).
        self.flat_grad = torch.zeros_like(self.flat_param, dtype=precision.compute)
        self.flat_acc = torch.zeros_like(self.flat_param)
        self.flat_velocity = torch.zeros_like(self.flat_param)
        self.grad_of = dict(zip(self.dense, self._views(self.flat_grad), strict=True))
        # bf16: the matmuls read bf16 copies of the weights ("shadows") that the optimiser
        # refreshes as it updates the fp32 masters, so no step converts a whole weight.
        self.flat_low = precision.shadow(self.flat_param)
        low_views = self._views(self.flat_low) if self.flat_low is not None else self.dense
        self.low_of = dict(zip(self.dense, low_views, strict=True))
        self.item_low = precision.shadow(model.item_weight)
        self.item_rows = _RowState.zeros(model.item_weight, self.item_low)
        self.bias_rows = _RowState.zeros(model.item_bias.view(-1))
        self.input_rows: _RowState | None = None
        self.input_low: Tensor | None = None
        if model.input_embedding is not None:
            self.input_low = precision.shadow(model.input_embedding)
            self.input_rows = _RowState.zeros(model.input_embedding, self.input_low)
        elif model.input_weight is not None:  # one-hot input: added, never multiplied
            self.input_rows = _RowState.zeros(model.input_weight)

    def update_dense(self) -> None:
        """Adagrad-momentum on the GRU weights, from the gradients in `flat_grad`."""
        self.kernels.adagrad_dense(
            self.flat_param,
            self.flat_grad,
            self.flat_acc,
            self.flat_velocity,
            **self.hyper,
            shadow=self.flat_low,
        )

    def update_rows(self, state: _RowState, rows: Tensor, grad: Tensor) -> None:
        """Adagrad-momentum on the distinct `rows` (U,) of a table; grad (U, d)."""
        self.kernels.adagrad_rows(
            state.param, rows, grad, state.acc, state.velocity, **self.hyper, shadow=state.shadow
        )

    def tensors(self) -> list[tuple[str, Tensor, Tensor]]:
        """(parameter name, acc, velocity) of every parameter, as views shaped like it."""
        model = self.model
        names = {id(p): n for n, p in model.named_parameters()}
        found = [
            (names[id(p)], acc, velocity)
            for p, acc, velocity in zip(
                self.dense, self._views(self.flat_acc), self._views(self.flat_velocity), strict=True
            )
        ]
        tables = [(model.item_weight, self.item_rows), (model.item_bias, self.bias_rows)]
        if self.input_rows is not None:
            table = (
                model.input_embedding if model.input_embedding is not None else model.input_weight
            )
            assert table is not None
            tables.append((table, self.input_rows))
        for parameter, rows in tables:
            found.append(
                (
                    names[id(parameter)],
                    rows.acc.view(parameter.shape),
                    rows.velocity.view(parameter.shape),
                )
            )
        return found

    def release(self) -> None:
        """Give the GRU weights their own storage again."""
        for param in self.dense:
            param.data = param.data.clone()

    def _views(self, flat: Tensor) -> list[Tensor]:
        """`flat` split into views shaped like the GRU weights."""
        sizes = [p.numel() for p in self.dense]
        return [v.view(p.shape) for v, p in zip(flat.split(sizes), self.dense, strict=True)]


class _Workspace:
    """Every buffer of the step, allocated once.

    The per-row buffers (`_Buffers`) are allocated for the configured batch size on first
    use and viewed for each smaller B; the buffers of the scored rows are sized for the
    most columns a step can have (B + n_sample), padded for bf16.
    """

    def __init__(
        self, model: GRU4Rec, config: GRU4RecConfig, device: torch.device, precision: _Precision
    ) -> None:
        self.model, self.device, self.precision = model, device, precision
        self.batch_size, self.n_sample = config.batch_size, config.n_sample
        dtype = self.dtype = model.item_weight.dtype
        n_cols = config.batch_size + config.n_sample  # at most
        n_rows = config.batch_size
        width = model.layers[-1]
        self.row_scratch = RowScratch.allocate(model.n_items, n_cols, n_rows, device)
        n_padded = n_cols + _BF16_ROW_MULTIPLE
        self.weight_rows = torch.empty(n_padded, width, device=device, dtype=precision.compute)
        self.bias_rows = torch.empty(n_padded, device=device, dtype=dtype)
        self.grad_bias = torch.empty(n_padded, device=device, dtype=dtype)
        self.grad_items = torch.empty(
            n_padded + n_rows, width, device=device, dtype=precision.compute
        )
        # Flat, so that (B, U) and (B, C) views of any U, C are contiguous.
        self.row_scores = torch.empty(n_rows * n_padded, device=device, dtype=dtype)
        self.grad_row_scores = torch.empty(n_rows * n_padded, device=device, dtype=dtype)
        self.loss_scratch = LossScratch.allocate(n_rows, n_cols, n_padded, device, dtype)
        self._by_rows: dict[int, _Buffers] = {}
        self._full: _Buffers | None = None

    def for_rows(self, n_rows: int) -> _Buffers:
        """The step buffers for B = n_rows, allocated once for the largest B and viewed."""
        if n_rows in self._by_rows:
            return self._by_rows[n_rows]
        if self._full is None:
            self._full = self._allocate(self.batch_size)
        full = self._full
        n_cols = n_rows + self.n_sample
        buffers = _Buffers(
            n_rows=n_rows,
            n_cols=n_cols,
            columns=full.columns[:n_cols],
            shift=full.shift[:n_cols],
            embedded=full.embedded[:n_rows],
            grad_out=full.grad_out[:n_rows],
            grad_inputs=full.grad_inputs[:n_rows],
            layers=[
                _Layer(**{name: _first_rows(value, n_rows) for name, value in vars(layer).items()})
                for layer in full.layers
            ],
        )
        self._by_rows[n_rows] = buffers
        return buffers

    def _allocate(self, n_rows: int) -> _Buffers:
        model, device, dtype = self.model, self.device, self.dtype
        n_cols = n_rows + self.n_sample

        def empty(*shape: int, dtype: torch.dtype = dtype) -> Tensor:
            return torch.empty(shape, device=device, dtype=dtype)

        embed_width = model.dropout_sites()[0][0]
        input_width = 3 * model.layers[0] if model.embedding == "none" else embed_width
        widths_in = [embed_width, *model.layers[:-1]]
        return _Buffers(
            n_rows=n_rows,
            n_cols=n_cols,
            columns=empty(n_cols, dtype=torch.int64),
            shift=empty(n_cols),
            embedded=empty(n_rows, embed_width, dtype=self.precision.compute),
            grad_out=empty(n_rows, model.layers[-1]),
            grad_inputs=empty(n_rows, input_width),
            layers=[
                _Layer(
                    gates_x=empty(n_rows, 3 * size),
                    gates_rz=empty(n_rows, 2 * size),
                    reset_hidden=empty(n_rows, size),
                    candidate=empty(n_rows, size),
                    diff=empty(n_rows, size),
                    new_hidden=(empty(n_rows, size), empty(n_rows, size)),
                    output=(empty(n_rows, size), empty(n_rows, size)),
                    grad_reset_hidden=empty(n_rows, size),
                    grad_input=empty(n_rows, width_in),
                )
                for size, width_in in zip(model.layers, widths_in, strict=True)
            ],
        )


class _GRUPass:
    """One GRU layer's forward pass and hand-derived backward pass over its `_Layer` buffers.

    The matmuls run here, in the compute precision, against the optimiser's copies of the
    weights; the gradients go into the optimiser's flat gradient buffer. The elementwise
    parts are the kernels'.
    """

    def __init__(self, kernels: Kernels, precision: _Precision, optimiser: _Optimiser) -> None:
        self.kernels = kernels
        self.precision = precision
        self.low_of = optimiser.low_of  # weight -> the copy the matmuls read
        self.grad_of = optimiser.grad_of  # weight -> its gradient's view in flat_grad

    def forward(
        self,
        buffers: _Layer,
        layer: GRULayer,
        gates_x: Tensor,
        hidden: Tensor,
        hidden_low: Tensor,
        mask: Tensor | None,
        turn: int,
    ) -> Tensor:
        """One GRU layer: (B, 3H) projected input, (B, H) state -> (B, H) dropped-out output.

        hidden_low: the state in the compute precision (the matmul's copy); turn: which of
        the two output buffers this step writes."""
        low = self.precision.cast
        n_rows = hidden.shape[0]
        gates_rz, reset_hidden = buffers.gates_rz, buffers.reset_hidden
        candidate, diff = buffers.candidate, buffers.diff
        new_hidden = buffers.new_hidden[turn]
        output = new_hidden if mask is None else buffers.output[turn]
        mask = None if mask is None else mask[:n_rows]
        weight_c = self.low_of[layer.weight_hidden_c]
        _mm(hidden_low, self.low_of[layer.weight_hidden_rz], gates_rz)
        if layer.bias_hidden_c is None:  # reset_before: c's hidden part is (r h) U_c
            self.kernels.gru_gates(gates_rz, gates_x, layer.bias, hidden, reset_hidden)
            _mm(low(reset_hidden), weight_c, candidate)
        else:  # reset_after: r (h U_c + b_hc), the latter kept in reset_hidden
            self.kernels.gru_gates(gates_rz, gates_x, layer.bias, hidden, None)
            _mm(hidden_low, weight_c, reset_hidden)
            self.kernels.gru_reset_after(candidate, reset_hidden, layer.bias_hidden_c, gates_rz)
        self.kernels.gru_output(
            candidate, gates_x, layer.bias, hidden, gates_rz, diff, new_hidden, mask, output
        )
        return output

    def backward(
        self,
        buffers: _Layer,
        layer: GRULayer,
        operands: _LayerOperands,
        grad_output: Tensor,
        mask: Tensor | None,
    ) -> Tensor | None:
        """Gradients of one layer's weights (into `flat_grad`); returns d input (B, I),
        None for one-hot input (the gate gradients are then the input rows')."""
        low, grad_of = self.precision.cast, self.grad_of
        hidden = operands.hidden
        n_rows, size = hidden.shape
        mask = None if mask is None else mask[:n_rows]
        gates_rz, diff, candidate = buffers.gates_rz, buffers.diff, buffers.candidate
        grad_gates = buffers.gates_x  # the forward's projection is spent: reuse it
        grad_reset_hidden = buffers.grad_reset_hidden
        self.kernels.gru_output_backward(grad_output, mask, diff, gates_rz, candidate, grad_gates)
        if layer.bias_hidden_c is None:  # reset_before: through (r h) U_c to r
            weight_c = self.low_of[layer.weight_hidden_c]
            _mm(low(grad_gates[:, 2 * size :]), weight_c.T, grad_reset_hidden)
            self.kernels.gru_reset_backward(grad_reset_hidden, hidden, gates_rz, grad_gates)
        else:  # reset_after: d r and d p, p = h U_c + b_hc (in reset_hidden)
            self.kernels.gru_reset_after_backward(
                grad_gates, buffers.reset_hidden, gates_rz, grad_reset_hidden
            )
            _sum_rows(grad_reset_hidden, grad_of[layer.bias_hidden_c])

        _sum_rows(grad_gates, grad_of[layer.bias])
        grad_gates_low = low(grad_gates)
        # d of U_c's matmul output: d a_c (reset_before) or d p (reset_after)
        grad_c = grad_gates_low[:, 2 * size :]
        if layer.bias_hidden_c is not None:
            grad_c = low(grad_reset_hidden)
        _mm(operands.operand_c.T, grad_c, grad_of[layer.weight_hidden_c])
        _mm(operands.hidden_low.T, grad_gates_low[:, : 2 * size], grad_of[layer.weight_hidden_rz])
        if layer.weight_input is None:  # one-hot input: the rows of the input table
            return None
        assert operands.layer_input is not None
        _mm(operands.layer_input.T, grad_gates_low, grad_of[layer.weight_input])
        _mm(grad_gates_low, self.low_of[layer.weight_input].T, buffers.grad_input)
        return buffers.grad_input


class FastStep:
    """One optimiser step with a hand-derived backward pass (see the module docstring).

    The interface of `train.AutogradStep`: `loss` runs the forward pass and the loss
    (with its gradient), `update` the backward pass and the sparse update, so the caller
    can check the loss in between. While it exists the GRU weights are views of one
    flat buffer; `release()` gives them their own storage back.
    """

    def __init__(
        self,
        model: GRU4Rec,
        config: GRU4RecConfig,
        support: Tensor,
        device: torch.device,
        precision: Precision | None = None,
        kernels: Kernels | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.dtype = model.item_weight.dtype
        precision = precision or config.precision
        compute_dtype = torch.bfloat16 if precision == "bf16" else self.dtype
        self.precision = _Precision(compute_dtype, low=compute_dtype != self.dtype)
        self.kernels: Kernels = kernels or kernels_for(device, self.dtype)
        self.layers: tuple[GRULayer, ...] = model.gru_layers
        self.n_sample = config.n_sample
        self.sampler: NegativeSampler | None = None
        if config.n_sample > 0:
            self.sampler = NegativeSampler(
                support,
                config.sample_alpha,
                config.n_sample,
                config.sample_cache_size,
                seed=config.seed,
                device=device,
            )
        self.masks = dropout_masks(model, config, device)
        self.logq_targets: Tensor | None = None
        self.logq_samples: Tensor | None = None
        shifts = logq_shifts(support, config)
        if shifts is not None:
            self.logq_targets, self.logq_samples = (s.to(device, self.dtype) for s in shifts)
        self.optimiser = _Optimiser(model, config, self.precision, self.kernels)
        self.workspace = _Workspace(model, config, device, self.precision)
        self.gru = _GRUPass(self.kernels, self.precision, self.optimiser)
        self._turn = 0
        self._pending: _Pending | None = None

    # ----------------------------------------------------------------------------- forward

    @torch.no_grad()
    def loss(
        self, inputs: Tensor, targets: Tensor, hidden: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """Forward pass and loss. inputs, targets: (B,) int64; hidden: (B, H_l) per layer.

        Returns the 0-dim mean loss over the B rows and the new hidden state (views into
        this step's buffers, valid until the step after next).
        """
        model = self.model
        buffers = self.workspace.for_rows(inputs.shape[0])
        self._turn ^= 1
        masks = self.masks.next()
        negatives = self.sampler.next() if self.sampler is not None else None
        columns = buffers.columns
        if negatives is None:
            columns.copy_(targets)
        else:
            torch.cat((targets, negatives), out=columns)
        rows = self._distinct(columns, inputs, with_inputs=model.embedding == "shared")
        outputs, operands = self._layers_forward(buffers, inputs, hidden, masks)
        output_low = self.precision.cast(outputs[-1])
        value = self._score_and_loss(buffers, rows, output_low, targets, negatives)
        self._pending = _Pending(buffers, inputs, masks, rows, operands, output_low)
        return value, outputs

    def _layers_forward(
        self, buffers: _Buffers, inputs: Tensor, hidden: list[Tensor], masks: list[Tensor | None]
    ) -> tuple[list[Tensor], list[_LayerOperands]]:
        """The embedding and every GRU layer, bottom to top: each layer's output (B, H_l)
        and what its backward needs, the matmul operands x, h and U_c's (r h, or h with
        reset_after) in the compute precision (converted once) and h itself."""
        low = self.precision.cast
        layer_input = self._embed(buffers, inputs, masks[0])
        outputs: list[Tensor] = []
        operands: list[_LayerOperands] = []
        for index, layer in enumerate(self.layers):
            layer_buffers = buffers.layers[index]
            gates_x = self._project_input(layer_buffers, layer, layer_input, inputs)
            hidden_low = low(hidden[index])
            output = self.gru.forward(
                layer_buffers,
                layer,
                gates_x,
                hidden[index],
                hidden_low,
                masks[index + 1],
                self._turn,
            )
            operand_c = hidden_low
            if layer.bias_hidden_c is None:
                operand_c = low(layer_buffers.reset_hidden)
            operands.append(_LayerOperands(layer_input, hidden[index], hidden_low, operand_c))
            outputs.append(output)
            layer_input = low(output)
        return outputs, operands

    def _embed(self, buffers: _Buffers, inputs: Tensor, mask: Tensor | None) -> Tensor | None:
        """(B, E) dropped-out input embedding; None with one-hot input."""
        model, optimiser = self.model, self.optimiser
        if model.embedding == "none":
            return None
        table: Tensor | None = model.item_weight
        if model.embedding == "shared" and optimiser.item_low is not None:
            table = optimiser.item_low
        elif model.embedding == "separate":
            table = (
                optimiser.input_low if optimiser.input_low is not None else model.input_embedding
            )
        assert table is not None
        x = torch.index_select(table, 0, inputs, out=buffers.embedded)
        if mask is not None:
            x.mul_(mask[: buffers.n_rows])
        return x

    def _project_input(
        self, buffers: _Layer, layer: GRULayer, x: Tensor | None, inputs: Tensor
    ) -> Tensor:
        """(B, 3H) gates' input part, without the bias (the kernels add both to the hidden
        state's part in one pass)."""
        gates_x = buffers.gates_x
        if x is None:  # one-hot input: the projection is a row of the input table
            assert self.model.input_weight is not None
            torch.index_select(self.model.input_weight, 0, inputs, out=gates_x)
        else:
            assert layer.weight_input is not None
            _mm(x, self.optimiser.low_of[layer.weight_input], gates_x)
        return gates_x

    def _score_and_loss(
        self,
        buffers: _Buffers,
        rows: _Rows,
        output: Tensor,
        targets: Tensor,
        negatives: Tensor | None,
    ) -> Tensor:
        """The mean loss over the (B, C) scores; its gradient w.r.t. the scores of the
        distinct rows (B, U), the columns of an item summed, goes to the workspace's
        `grad_row_scores`."""
        model, config, space = self.model, self.config, self.workspace
        n_rows, n_scored = buffers.n_rows, rows.n_scored
        scored = rows.rows[:n_scored]
        n_padded = self.precision.padded(n_scored)  # (padding rows score 0, get gradient 0)
        item_low = self.optimiser.item_low
        table = item_low if item_low is not None else model.item_weight
        weight_rows = space.weight_rows[:n_padded]
        torch.index_select(table, 0, scored, out=weight_rows[:n_scored])
        bias_rows = space.bias_rows[:n_padded]
        torch.index_select(model.item_bias.view(-1), 0, scored, out=bias_rows[:n_scored])
        if n_padded > n_scored:
            weight_rows[n_scored:].zero_()
            bias_rows[n_scored:].zero_()
        logq_shift = self._logq_shift(buffers, targets, negatives)
        row_scores = _matrix(space.row_scores, n_rows, n_padded)  # (B, U)
        _mm(output, weight_rows.T, row_scores)
        return self.kernels.sampled_loss(
            row_scores,
            bias_rows,
            rows.column_slot,
            loss=config.loss,
            logq_shift=logq_shift,
            bpreg=config.bpreg,
            elu_param=config.elu_param,
            grad_rows=_matrix(space.grad_row_scores, n_rows, n_padded),
            scratch=space.loss_scratch,
        )

    def _logq_shift(
        self, buffers: _Buffers, targets: Tensor, negatives: Tensor | None
    ) -> Tensor | None:
        """(C,) logQ of each column, or None without the correction."""
        if self.logq_targets is None or self.logq_samples is None:
            return None
        shift = buffers.shift
        torch.index_select(self.logq_targets, 0, targets, out=shift[: buffers.n_rows])
        if negatives is not None:
            torch.index_select(self.logq_samples, 0, negatives, out=shift[buffers.n_rows :])
        return shift

    def _distinct(self, columns: Tensor, inputs: Tensor, with_inputs: bool) -> _Rows:
        """The distinct items of `columns`, then (`with_inputs`) of `inputs` not among them."""
        scratch = self.workspace.row_scratch
        return _Rows(*self.kernels.distinct_rows(columns, inputs, with_inputs, scratch))

    # ---------------------------------------------------------------------------- backward

    @torch.no_grad()
    def update(self, loss: Tensor) -> None:
        """Backward pass and one Adagrad-momentum update (dense GRU, sparse item rows)."""
        assert self._pending is not None, "update() needs a loss() first"
        pending, self._pending = self._pending, None
        grad_items, grad_bias, grad_top = self._scores_backward(pending)
        grad_out: Tensor | None = grad_top
        for index in range(len(self.layers) - 1, -1, -1):
            assert grad_out is not None  # only the bottom layer may have no input gradient
            grad_out = self.gru.backward(
                pending.buffers.layers[index],
                self.layers[index],
                pending.operands[index],
                grad_out,
                pending.masks[index + 1],
            )
        input_grads = self._input_grads(pending, grad_out, grad_items)
        self._update_parameters(pending, grad_items, grad_bias, input_grads)

    def _scores_backward(self, pending: _Pending) -> tuple[Tensor, Tensor, Tensor]:
        """From the loss's gradient w.r.t. the row scores: the gradients of the item rows
        (U_all, H) (the scored rows, then the inputs', padding rows in between 0) and item
        biases (U,), and d out (B, H) of the top layer."""
        space, rows = self.workspace, pending.rows
        n_rows, n_scored, n_all = pending.buffers.n_rows, rows.n_scored, rows.rows.shape[0]
        n_padded = self.precision.padded(n_scored)
        grad_row_scores = _matrix(space.grad_row_scores, n_rows, n_padded)  # (B, U)
        grad_bias = torch.sum(grad_row_scores[:, :n_scored], dim=0, out=space.grad_bias[:n_scored])
        grad_row_scores = self.precision.cast(grad_row_scores)
        grad_items = space.grad_items[: max(n_all, n_padded)]
        _mm(grad_row_scores.T, pending.output_low, grad_items[:n_padded])
        grad_out = pending.buffers.grad_out
        _mm(grad_row_scores, space.weight_rows[:n_padded], grad_out)  # (B, H)
        return grad_items[:n_all], grad_bias, grad_out

    def _input_grads(
        self, pending: _Pending, grad_out: Tensor | None, grad_items: Tensor
    ) -> Tensor:
        """The gradients of the input table's rows (B, I): the first layer's gate gradients
        (one-hot) or d x; with a shared table also added into `grad_items`' rows."""
        model, masks = self.model, pending.masks
        if model.embedding == "none":
            input_grads = pending.buffers.layers[0].gates_x
        else:
            assert grad_out is not None
            n_rows = pending.buffers.n_rows
            input_grads = grad_out if masks[0] is None else grad_out.mul_(masks[0][:n_rows])
        if model.embedding == "shared":
            self.kernels.add_to_rows(
                grad_items, pending.rows.n_scored, pending.rows.input_slot, input_grads
            )
        return input_grads

    def _update_parameters(
        self, pending: _Pending, grad_items: Tensor, grad_bias: Tensor, input_grads: Tensor
    ) -> None:
        """The optimiser's step: the GRU weights, then the item rows and biases the step
        scored, then the distinct rows of the input table (their gradients summed)."""
        optimiser, rows = self.optimiser, pending.rows
        optimiser.update_dense()
        optimiser.update_rows(optimiser.item_rows, rows.rows, grad_items)
        optimiser.update_rows(optimiser.bias_rows, rows.rows[: rows.n_scored], grad_bias)
        if optimiser.input_rows is not None:
            input_rows = self._distinct(pending.inputs, pending.inputs, with_inputs=False)
            summed = pending.buffers.grad_inputs[: input_rows.n_scored]
            summed.zero_().index_add_(0, input_rows.column_slot, input_grads)
            optimiser.update_rows(optimiser.input_rows, input_rows.rows, summed)

    # ------------------------------------------------------------------- optimiser state

    def optimizer_state(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Every parameter's (acc, velocity) by name, copied to the CPU."""
        return {
            name: (acc.detach().cpu().clone(), velocity.detach().cpu().clone())
            for name, acc, velocity in self.optimiser.tensors()
        }

    def load_optimizer_state(self, state: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Start from `state` (`optimizer_state`'s form) for the parameters it names."""
        for name, acc, velocity in self.optimiser.tensors():
            if name in state:
                acc.copy_(state[name][0])
                velocity.copy_(state[name][1])

    def release(self) -> None:
        """Give the GRU weights their own storage again (call when training ends)."""
        self.optimiser.release()


def _mm(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = a @ b, a and b in the compute precision, out in it or in full precision."""
    if out.dtype == a.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(torch.mm(a, b))


def _first_rows(value: Tensor | tuple[Tensor, ...], n_rows: int) -> Any:
    """The first `n_rows` rows of a buffer, or of each buffer of a pair."""
    if isinstance(value, tuple):
        return tuple(t[:n_rows] for t in value)
    return value[:n_rows]


def _sum_rows(grad: Tensor, out: Tensor) -> None:
    """out (in full precision) = the sum of grad's (B, n) rows."""
    if out.dtype == grad.dtype:
        torch.sum(grad, dim=0, out=out)
    else:
        out.copy_(grad.sum(dim=0))


def _matrix(flat: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """A contiguous (n_rows, n_cols) view of the start of a flat buffer."""
    return flat[: n_rows * n_cols].view(n_rows, n_cols)


def dropout_masks(model: GRU4Rec, config: GRU4RecConfig, device: torch.device) -> DropoutMasks:
    """The mask stream both training paths draw from (seeded apart from the negatives)."""
    return DropoutMasks(
        model.dropout_sites(),
        batch_size=config.batch_size,
        seed=config.seed + 1,
        dtype=model.item_weight.dtype,
        device=device,
    )
