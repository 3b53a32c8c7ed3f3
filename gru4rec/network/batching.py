"""Session-parallel mini-batches, exactly as GRU4Rec consumes sessions.

`batch_size` slots each run through one session at a time, one event per step: the
input is the current item and the target is the next item of the same session. When
a slot's session ends, the next unused session (file order) takes the slot and the
slot's hidden state is reset. When no session is left, finished slots are dropped
and the batch shrinks until every session is fully consumed: no event is dropped.

The whole schedule is computed once, in NumPy, into a `SessionParallelPlan`: slots
finish at known steps, so assigning sessions to slots is a merge of per-slot finish
times; every (step, slot) row then follows from vectorised index arithmetic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from gru4rec.network.data import SessionData


@dataclass(frozen=True, eq=False)
class Step:
    """One minibatch step of B_t rows (one per active slot, in slot order).

    inputs: (B_t,) int64 item index fed at this step.
    targets: (B_t,) int64 the next item, to be predicted.
    reset: (B_t,) bool rows whose hidden state is zeroed before this step (a new session).
    keep: (B_t,) int64 indices into the previous step's rows that continue into this step,
        applied to the hidden state BEFORE `reset`; None when the rows are unchanged.
    sessions: (B_t,) int64 each row's session, its index in the data (None unless planned
        `with_sessions`).
    """

    inputs: np.ndarray
    targets: np.ndarray
    reset: np.ndarray
    keep: np.ndarray | None
    sessions: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SessionParallelPlan:
    """Every step of one epoch as flat arrays; step t is rows `step_offsets[t]:step_offsets[t+1]`.

    inputs, targets: (n_rows,) int64; reset: (n_rows,) bool; n_rows = sum of (length - 1).
    step_offsets: (n_steps + 1,) int64.
    keeps: {step: (B_t,) int64} for the steps where the batch shrinks.
    sessions: (n_rows,) int64 each row's session (its index in the data), or None.
    """

    inputs: np.ndarray
    targets: np.ndarray
    reset: np.ndarray
    step_offsets: np.ndarray
    keeps: dict[int, np.ndarray]
    sessions: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return len(self.step_offsets) - 1

    @property
    def n_rows(self) -> int:
        return len(self.inputs)

    def steps(self) -> Iterator[Step]:
        """The steps in order, as views into the flat arrays (no copies)."""
        offsets = self.step_offsets
        for t in range(self.n_steps):
            rows = slice(offsets[t], offsets[t + 1])
            yield Step(
                self.inputs[rows],
                self.targets[rows],
                self.reset[rows],
                self.keeps.get(t),
                None if self.sessions is None else self.sessions[rows],
            )


def plan_session_parallel(
    data: SessionData, batch_size: int, *, with_sessions: bool = False
) -> SessionParallelPlan:
    """Schedule every session of `data` onto `batch_size` slots (see the module docstring).

    Sessions shorter than 2 events hold no (input, target) pair and are skipped.
    `with_sessions` also records each row's session (8 bytes a row: evaluation wants it,
    training does not).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = data.session_lengths
    sessions = np.flatnonzero(lengths >= 2)
    n_transitions = lengths[sessions] - 1  # rows each session contributes
    slot, start_step = _assign_slots(n_transitions, batch_size)
    n_slots = int(slot.max()) + 1 if len(slot) else 0

    # One row per transition: its step and its slot; rows of a step are ordered by slot.
    row_session = np.repeat(np.arange(len(sessions)), n_transitions)
    position = np.arange(len(row_session)) - np.repeat(
        np.cumsum(n_transitions) - n_transitions, n_transitions
    )  # 0 .. length-2 within the session
    row_step = start_step[row_session] + position
    row_slot = slot[row_session]
    order = np.lexsort((row_slot, row_step))
    event = data.session_offsets[sessions][row_session] + position
    inputs = data.item_idx[event[order]]
    targets = data.item_idx[event[order] + 1]
    reset = (position == 0)[order]

    n_steps = int(row_step.max()) + 1 if len(row_step) else 0
    step_offsets = np.zeros(n_steps + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_step, minlength=n_steps), out=step_offsets[1:])

    # A slot is active from step 0 until its last session ends: the active sets are nested,
    # so the batch shrinks only by dropping slots, and `keep` is a mask over the last step.
    slot_end = np.zeros(n_slots, dtype=np.int64)
    np.maximum.at(slot_end, row_slot, row_step + 1)
    keeps: dict[int, np.ndarray] = {}
    for t in np.unique(slot_end[slot_end < n_steps]):
        active_before = np.flatnonzero(slot_end >= t)  # slots active at step t-1, in order
        keeps[int(t)] = np.flatnonzero(slot_end[active_before] > t).astype(np.int64)

    return SessionParallelPlan(
        inputs=np.ascontiguousarray(inputs, dtype=np.int64),
        targets=np.ascontiguousarray(targets, dtype=np.int64),
        reset=reset,
        step_offsets=step_offsets,
        keeps=keeps,
        sessions=sessions[row_session[order]].astype(np.int64) if with_sessions else None,
    )


def session_parallel_steps(
    data: SessionData, batch_size: int, *, with_sessions: bool = False
) -> Iterator[Step]:
    """Iterate the session-parallel steps of one pass over `data` (see `plan_session_parallel`)."""
    return plan_session_parallel(data, batch_size, with_sessions=with_sessions).steps()


def _assign_slots(n_transitions: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot and first step of each session: the next session goes to the slot that frees first.

    A slot frees when its session's last transition is done; slots freeing at the same step
    take new sessions in slot order, as the reference refills them. Returns two (n,) int64.
    """
    n = len(n_transitions)
    n_slots = min(batch_size, n)
    slot = np.empty(n, dtype=np.int64)
    start = np.empty(n, dtype=np.int64)
    slot[:n_slots] = np.arange(n_slots)
    start[:n_slots] = 0
    free_at = [(int(n_transitions[s]), s) for s in range(n_slots)]
    heapq.heapify(free_at)
    # Only the order of (finish step, slot) matters, so the rest is one heap pass.
    lengths = n_transitions.tolist()
    for session in range(n_slots, n):
        step, s = free_at[0]
        heapq.heapreplace(free_at, (step + lengths[session], s))
        slot[session] = s
        start[session] = step
    return slot, start
