"""The training loop: session-parallel steps, sampled negatives, sparse Adagrad with momentum.

Per step (B rows, one per active session slot):
    hidden: keep the continuing slots, zero the slots that start a session
    output, hidden = model.forward_step(inputs, hidden)         # (B, H)
    columns = [targets (B), sampled negatives (n_sample)]       # target of row i in column i
    scores = model.score_items(output, columns)                 # (B, B + n_sample)
    loss = sampled_loss(scores - logQ shift)                    # mean over the B rows
    backward, sparse optimiser step, detach hidden (no backpropagation through time)

Two implementations of a step learn the same model (tests/test_fast_step.py):
`gru4rec.network.fast_step.FastStep` (the default: hand-derived backward pass, preallocated
buffers, fused CPU loops, optional bf16 matmuls) and `AutogradStep` here (the plain
autograd reference, `backward="autograd"`). The schedule of steps is computed once per fit
and reused every epoch; negatives and dropout masks come from samplers that draw in
chunks. Tracking and progress bars attach as callbacks.

Example:
    >>> config = get_preset("rsc15")
    >>> model = GRU4Rec.from_config(n_items, config)
    >>> result = fit(model, train_data, config, item_support=items["support"].to_numpy())
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from gru4rec.errors import ConfigError, InputDataError, TrainingDivergedError
from gru4rec.network import kernels
from gru4rec.network.batching import SessionParallelPlan, plan_session_parallel
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import SessionData
from gru4rec.network.fast_step import FastStep, dropout_masks
from gru4rec.network.model import GRU4Rec
from gru4rec.network.optim import SparseAdagradMomentum
from gru4rec.network.sampling import NegativeSampler, logq_shifts

logger = logging.getLogger(__name__)

# An epoch whose mean loss is this many times the lowest earlier epoch's marks a run whose
# scores grow without bound: healthy runs fall or move by a few percent from epoch to epoch,
# while a diverging BPR-max run went 0.49 -> 146 in one epoch and stayed above 30.
DIVERGING_GROWTH = 10.0


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did."""

    epoch: int  # 0-based
    loss: float  # mean loss per training event (row)
    n_events: int  # training events (input, target pairs) in the epoch
    seconds: float
    events_per_s: float


# The optimiser's state, per parameter name: (Adagrad's sum of squared gradients, the
# momentum's velocity), each shaped as the parameter, on the CPU.
OptimizerState = dict[str, tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class FitResult:
    """The whole run: one EpochStats per epoch, and the optimiser's final state."""

    epochs: tuple[EpochStats, ...] = ()
    seconds: float = 0.0
    optimizer_state: OptimizerState | None = field(default=None, repr=False)

    @property
    def final_loss(self) -> float:
        return self.epochs[-1].loss if self.epochs else math.nan

    @property
    def diverging_epoch(self) -> int | None:
        """The first epoch whose loss is `DIVERGING_GROWTH` times an earlier one's, if any."""
        return diverging_epoch(self.epochs)


def diverging_epoch(epochs: Sequence[EpochStats]) -> int | None:
    """The first of `epochs` whose loss is `DIVERGING_GROWTH` times an earlier one's, if any."""
    lowest = math.inf
    for stats in epochs:
        if stats.loss > DIVERGING_GROWTH * lowest:
            return stats.epoch
        lowest = min(lowest, stats.loss)
    return None


class Callback:
    """Hooks into `fit`; override what you need (every hook is a no-op here).

    `on_step_end` runs every step: keep it cheap (e.g. update a progress bar every N steps).
    """

    def on_train_start(self, config: GRU4RecConfig) -> None:
        """Before the first epoch."""

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        """Before an epoch of `n_steps` steps."""

    def on_step_end(self, epoch: int, step: int, loss: float) -> None:
        """After each optimiser step, with the step's mean loss."""

    def on_epoch_end(self, epoch: int, stats: EpochStats) -> None:
        """After each epoch."""

    def on_train_end(self, result: FitResult) -> None:
        """After the last epoch."""


@dataclass(frozen=True, eq=False)
class _StepIndex:
    """A plan step on the device: rows [start, stop), reset rows and kept rows (or None)."""

    start: int
    stop: int
    reset_rows: Tensor | None
    keep: Tensor | None
    inputs: Tensor  # (stop - start,) views into the schedule's flat arrays
    targets: Tensor


@dataclass(frozen=True, eq=False)
class _Schedule:
    """The session-parallel plan on the device, built once per fit and replayed every epoch."""

    inputs: Tensor  # (n_rows,) int64
    targets: Tensor  # (n_rows,) int64
    steps: list[_StepIndex]


def fit(
    model: GRU4Rec,
    data: SessionData,
    config: GRU4RecConfig,
    *,
    item_support: np.ndarray,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str = "cpu",
    num_threads: int | None = None,
    backward: Literal["fast", "autograd"] = "fast",
    optimizer_state: OptimizerState | None = None,
) -> FitResult:
    """Train `model` in place on `data` for `config.n_epochs` epochs.

    Args:
        model: e.g. `GRU4Rec.from_config(n_items, config)`; moved to `device`.
        data: training sessions (item indices of the model's item map).
        config: loss, sampling and optimiser settings (the model's own are not re-read).
        item_support: (n_items,) training events per item: the sampling distribution and logQ.
        callbacks: hooks for progress bars and tracking.
        device: where to train.
        num_threads: torch intra-op threads during the fit (restored afterwards); None =
            `default_threads()` on CPU, the idle cores, asked again each epoch; as is on a
            GPU.
        backward: "fast" (`gru4rec.network.fast_step`, hand-derived, the default) or "autograd"
            (the plain reference step, slower; fp32 only). Both learn the same model.
        optimizer_state: where the optimiser starts (a previous fit's, as a warm start
            carries it; parameters it does not name start at zero), else from zero.

    Returns:
        FitResult with per-epoch loss and speed.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (before that step's update).
        InputDataError: no session has two events, or items/supports do not fit the model.
    """
    device = torch.device(device)
    support = _check_inputs(model, data, item_support)
    schedule = _build_schedule(data, config.batch_size, device)
    model.to(device)
    was_training = model.training
    model.train(True)
    epochs: list[EpochStats] = []
    started = time.perf_counter()
    step: TrainStep | None = None
    try:
        adaptive = num_threads is None and device.type == "cpu"
        if adaptive:
            num_threads = default_threads()
        flush = kernels.subnormals_flushed() if device.type == "cpu" else contextlib.nullcontext()
        with _threads(num_threads), _seeded(config.seed, device), flush:
            step = _make_step(model, config, support, device, backward)
            if optimizer_state is not None:
                step.load_optimizer_state(optimizer_state)
            for callback in callbacks:
                callback.on_train_start(config)
            for epoch in range(config.n_epochs):
                if adaptive and epoch > 0:  # other jobs may have come or gone
                    torch.set_num_threads(default_threads())
                    kernels.flush_subnormals(True)  # on any new thread too
                stats = _run_epoch(epoch, schedule, model, step, callbacks, device)
                epochs.append(stats)
                _log_epoch(stats, epochs)
                for callback in callbacks:
                    callback.on_epoch_end(epoch, stats)
        final_state = step.optimizer_state()
    finally:
        model.train(was_training)
        if isinstance(step, FastStep):
            step.release()
    result = FitResult(
        epochs=tuple(epochs), seconds=time.perf_counter() - started, optimizer_state=final_state
    )
    for callback in callbacks:
        callback.on_train_end(result)
    return result


def _build_schedule(data: SessionData, batch_size: int, device: torch.device) -> _Schedule:
    """The session-parallel plan of `data` for `batch_size` slots, on `device`."""
    plan = plan_session_parallel(data, batch_size)
    inputs = torch.from_numpy(plan.inputs).to(device)
    targets = torch.from_numpy(plan.targets).to(device)
    return _Schedule(
        inputs=inputs, targets=targets, steps=_device_steps(plan, device, inputs, targets)
    )


def _make_step(
    model: GRU4Rec,
    config: GRU4RecConfig,
    support: Tensor,
    device: torch.device,
    backward: Literal["fast", "autograd"],
) -> TrainStep:
    """The step `backward` names; the autograd step for a model the fast step does not cover
    (said in a warning)."""
    if backward == "fast" and not model.fused_step:
        logger.warning(
            "%s trains with the autograd step (the fused fast step covers plain "
            "GRU4Rec): about 2-3x slower per event",
            type(model).__name__,
        )
        backward = "autograd"
    if backward == "fast":
        return FastStep(model, config, support, device)
    if backward == "autograd":
        return AutogradStep(model, config, support, device)
    raise ValueError(f"backward must be 'fast' or 'autograd', got {backward!r}")


def _log_epoch(stats: EpochStats, epochs: Sequence[EpochStats]) -> None:
    """Log an epoch's figures, and warn at the first epoch whose loss says the training
    diverges (`epochs`: every epoch so far, `stats` the last)."""
    logger.info(
        "epoch %d: loss %.4f, %.1f s, %.0f events/s, %d threads",
        stats.epoch,
        stats.loss,
        stats.seconds,
        stats.events_per_s,
        torch.get_num_threads(),
    )
    if diverging_epoch(epochs) == stats.epoch:  # said once, at the first such epoch
        logger.warning(
            "epoch %d: loss %.4g is over %g times the lowest earlier epoch's "
            "(%.4g): the training is diverging and the model will score poorly; "
            "lower learning_rate or momentum (--set learning_rate=...), or try "
            "another preset",
            stats.epoch,
            stats.loss,
            DIVERGING_GROWTH,
            min(e.loss for e in epochs[:-1]),
        )


class TrainStep(Protocol):
    """What `fit` needs of a step: the forward pass and loss, then backward and update."""

    def loss(
        self, inputs: Tensor, targets: Tensor, hidden: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]: ...

    def update(self, loss: Tensor) -> None: ...

    def optimizer_state(self) -> OptimizerState: ...

    def load_optimizer_state(self, state: OptimizerState) -> None: ...


class AutogradStep:
    """One optimiser step over the sampled score matrix, differentiated by autograd.

    Holds what persists across steps: the optimiser state, the negative sampler and the
    logQ tables. `loss` runs the forward pass, `update` the backward pass and the sparse
    update, so the caller can check the loss in between.
    """

    def __init__(
        self, model: GRU4Rec, config: GRU4RecConfig, support: Tensor, device: torch.device
    ) -> None:
        if config.precision != "fp32":
            raise ConfigError(
                f"precision={config.precision!r} needs the fast step; the autograd step "
                "computes in the parameters' own dtype (use precision=fp32)."
            )
        self.model = model
        self.config = config
        self.masks = dropout_masks(model, config, device)
        self.parameters = tuple(model.parameters())
        self.optimizer = SparseAdagradMomentum(
            self.parameters,
            lr=config.learning_rate,
            momentum=config.momentum,
            eps=config.adagrad_eps,
        )
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
        # logQ: in-batch targets follow the data (support^1), sampled columns support^alpha.
        self.logq_targets: Tensor | None = None
        self.logq_samples: Tensor | None = None
        shifts = logq_shifts(support, config)
        if shifts is not None:
            self.logq_targets, self.logq_samples = (shift.to(device) for shift in shifts)

    def loss(
        self, inputs: Tensor, targets: Tensor, hidden: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """Forward pass. inputs, targets: (B,) int64; hidden: (B, H_l) per layer.

        Returns the 0-dim mean loss over the B rows and the new hidden state.
        """
        columns = targets  # (B,): the in-batch negatives are the other rows' targets
        logq_shift = self.logq_targets[targets] if self.logq_targets is not None else None
        if self.sampler is not None:
            negatives = self.sampler.next()  # (n_sample,) shared by the whole batch
            columns = torch.cat((targets, negatives))  # (B + n_sample,)
            if logq_shift is not None and self.logq_samples is not None:
                logq_shift = torch.cat((logq_shift, self.logq_samples[negatives]))
        masks = self.masks.next()  # the same stream as the fast step's
        output, hidden = self.model.forward_step(inputs, hidden, masks)  # (B, H)
        scores = self.model.score_items(output, columns)  # (B, C); targets on the diagonal
        loss = self.model.step_loss(output, hidden, scores, targets, logq_shift, self.config)
        return loss, hidden

    def update(self, loss: Tensor) -> None:
        """Backward pass and one sparse Adagrad-momentum update."""
        # Plain assignment: Optimizer.zero_grad costs more per step, and its first call
        # imports torch._dynamo (about a second).
        for parameter in self.parameters:
            parameter.grad = None
        loss.backward()
        self.optimizer.step()

    def optimizer_state(self) -> OptimizerState:
        """Every parameter's (acc, velocity) by name; zeros where no step has run yet."""
        state = {}
        for name, parameter in self.model.named_parameters():
            held = self.optimizer.state.get(parameter) or {}
            zeros = torch.zeros_like(parameter)
            state[name] = (
                held.get("acc", zeros).detach().cpu().clone(),
                held.get("velocity", zeros).detach().cpu().clone(),
            )
        return state

    def load_optimizer_state(self, state: OptimizerState) -> None:
        """Start from `state` (`optimizer_state`'s form) for the parameters it names."""
        for name, parameter in self.model.named_parameters():
            if name in state:
                acc, velocity = (t.to(parameter.device, parameter.dtype) for t in state[name])
                self.optimizer.state[parameter] = {"acc": acc.clone(), "velocity": velocity.clone()}


def _run_epoch(
    epoch: int,
    schedule: _Schedule,
    model: GRU4Rec,
    step: TrainStep,
    callbacks: Sequence[Callback],
    device: torch.device,
) -> EpochStats:
    """One pass over the schedule; the hidden state starts at zero."""
    steps = schedule.steps
    n_rows = len(schedule.inputs)
    for callback in callbacks:
        callback.on_epoch_start(epoch, len(steps))
    started = time.perf_counter()
    hidden = model.init_hidden(steps[0].stop, device)
    loss_sum = 0.0
    for index, rows in enumerate(steps):
        if rows.keep is not None:  # the batch shrinks: drop the finished slots
            hidden = [layer.index_select(0, rows.keep) for layer in hidden]
        if rows.reset_rows is not None:  # slots that took a new session start from zero
            for layer in hidden:
                layer.index_fill_(0, rows.reset_rows, 0.0)
        loss, hidden = step.loss(rows.inputs, rows.targets, hidden)
        value = loss.item()  # the one sync per step: the NaN check needs it anyway
        if not math.isfinite(value):
            raise TrainingDivergedError(epoch, index, value)
        step.update(loss)
        if hidden[0].requires_grad:  # no backpropagation through time
            hidden = [layer.detach() for layer in hidden]
        loss_sum += value * (rows.stop - rows.start)
        for callback in callbacks:
            callback.on_step_end(epoch, index, value)
    seconds = time.perf_counter() - started
    return EpochStats(
        epoch=epoch,
        loss=loss_sum / n_rows,
        n_events=n_rows,
        seconds=seconds,
        events_per_s=n_rows / seconds if seconds > 0 else math.inf,
    )


def _check_inputs(model: GRU4Rec, data: SessionData, item_support: np.ndarray) -> Tensor:
    """(n_items,) float64 support, after checking that data and supports fit the model."""
    support = torch.as_tensor(np.asarray(item_support, dtype=np.float64))
    if support.shape != (model.n_items,):
        raise InputDataError(
            f"item_support has shape {tuple(support.shape)} but the model has {model.n_items} "
            "items; pass the support column of the items.parquet the model was built from."
        )
    if not bool((data.session_lengths >= 2).any()):
        raise InputDataError(
            "no training session has 2 or more events, so there is nothing to learn from."
        )
    if data.n_events and (data.item_idx.min() < 0 or data.item_idx.max() >= model.n_items):
        raise InputDataError(
            f"training item indices must lie in 0..{model.n_items - 1}; the data and the "
            "model were built from different item maps."
        )
    return support


def _device_steps(
    plan: SessionParallelPlan,
    device: torch.device,
    inputs: Tensor | None = None,
    targets: Tensor | None = None,
) -> list[_StepIndex]:
    """The plan's steps with reset rows and kept rows as index tensors on `device`, and
    views of each step's inputs and targets (of `plan`'s arrays moved there, if not given)."""
    inputs = torch.from_numpy(plan.inputs).to(device) if inputs is None else inputs
    targets = torch.from_numpy(plan.targets).to(device) if targets is None else targets
    offsets = plan.step_offsets.tolist()
    reset_step = np.searchsorted(plan.step_offsets, np.flatnonzero(plan.reset), side="right") - 1
    reset_rows = np.flatnonzero(plan.reset) - plan.step_offsets[reset_step]
    bounds = np.searchsorted(reset_step, np.arange(plan.n_steps + 1))
    steps = []
    for t in range(plan.n_steps):
        rows = reset_rows[bounds[t] : bounds[t + 1]]
        keep = plan.keeps.get(t)
        steps.append(
            _StepIndex(
                start=offsets[t],
                stop=offsets[t + 1],
                reset_rows=torch.from_numpy(rows).to(device) if len(rows) else None,
                keep=torch.from_numpy(keep).to(device) if keep is not None else None,
                inputs=inputs[offsets[t] : offsets[t + 1]],
                targets=targets[offsets[t] : offsets[t + 1]],
            )
        )
    return steps


def default_threads(sample_seconds: float = 0.1) -> int:
    """The CPU threads `fit` trains with unless told otherwise: the idle cores.

    The matmuls (MKL / oneDNN) and the compiled loops of `gru4rec.network.kernels` split across
    torch's OpenMP threads, which wait for each other at the end of every parallel
    region. On an idle machine one thread per core is fastest (1.2-1.8x one thread on
    2 cores). When other jobs keep cores busy, a thread that has to share a core holds
    up every region (measured: 3-5x slower than one thread), so `fit` uses only the
    cores left idle: every core this process may run on, minus the cores the rest of
    the machine kept busy over `sample_seconds` (psutil's CPU load), at least one. `fit`
    asks again before each epoch. Pass `num_threads` for a fixed count (e.g. for
    bit-identical reruns: the matmuls' sums depend on the thread count).
    """
    try:
        cores = max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)
    busy = _busy_cores(sample_seconds)
    return max(1, min(cores, round(cores - busy)))


def _busy_cores(seconds: float) -> float:
    """Cores kept busy by all processes over `seconds` (this one sleeps meanwhile)."""
    import psutil

    return psutil.cpu_percent(interval=seconds) / 100 * (psutil.cpu_count() or 1)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block only."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generator (dropout draws from it), restoring it afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
