"""Session-parallel batching against a hand-traced schedule and a step-by-step simulation."""

from __future__ import annotations

import numpy as np
import pytest

from gru4rec.network.batching import plan_session_parallel, session_parallel_steps
from gru4rec.network.data import SessionData


def test_hand_traced_schedule() -> None:
    # Lengths [3, 2, 4, 2], two slots. Slot 0 runs session 0 (steps 0-1) then session 3
    # (step 2); slot 1 runs session 1 (step 0) then session 2 (steps 1-3). After step 2 no
    # session is left and slot 0 is done: the batch shrinks to slot 1 (keep = [1]).
    data = SessionData.from_sessions([[0, 1, 2], [3, 4], [5, 6, 7, 8], [9, 10]])
    steps = list(session_parallel_steps(data, batch_size=2))
    expected = [
        # inputs, targets, reset, keep
        ([0, 3], [1, 4], [True, True], None),
        ([1, 5], [2, 6], [False, True], None),
        ([9, 6], [10, 7], [True, False], None),
        ([7], [8], [False], [1]),
    ]
    assert len(steps) == len(expected)
    for step, (inputs, targets, reset, keep) in zip(steps, expected, strict=True):
        assert step.inputs.tolist() == inputs
        assert step.targets.tolist() == targets
        assert step.reset.tolist() == reset
        assert (step.keep is None and keep is None) or step.keep.tolist() == keep  # type: ignore[union-attr]
        assert step.inputs.dtype == np.int64 and step.targets.dtype == np.int64


def test_each_row_knows_its_session_when_asked() -> None:
    # The schedule of the hand-traced test: sessions by (step, slot).
    data = SessionData.from_sessions([[0, 1, 2], [3, 4], [5, 6, 7, 8], [9, 10]])
    steps = list(session_parallel_steps(data, batch_size=2, with_sessions=True))
    assert [step.sessions.tolist() for step in steps] == [[0, 1], [0, 2], [3, 2], [2]]  # type: ignore[union-attr]
    assert all(step.sessions is None for step in session_parallel_steps(data, batch_size=2))


def test_short_sessions_contribute_nothing() -> None:
    data = SessionData.from_sessions([[0], [1, 2], [], [3], [4, 5, 6]])
    steps = list(session_parallel_steps(data, batch_size=1, with_sessions=True))
    assert [s.inputs.tolist() for s in steps] == [[1], [4], [5]]
    assert [s.reset.tolist() for s in steps] == [[True], [True], [False]]
    assert [s.sessions.tolist() for s in steps] == [[1], [4], [4]]  # type: ignore[union-attr]


def test_more_slots_than_sessions() -> None:
    data = SessionData.from_sessions([[0, 1, 2], [3, 4]])
    steps = list(session_parallel_steps(data, batch_size=8))
    assert [s.inputs.tolist() for s in steps] == [[0, 3], [1]]
    assert steps[1].keep is not None and steps[1].keep.tolist() == [0]


def _simulate(
    data: SessionData, batch_size: int
) -> list[tuple[list[int], list[int], list[bool], list[int] | None]]:
    """The reference's rule, one step at a time: slots in order, refill in slot order."""
    lengths = data.session_lengths
    queue = [s for s in range(data.n_sessions) if lengths[s] >= 2]
    slots: list[list[int]] = []  # [session, position]
    for _ in range(min(batch_size, len(queue))):
        slots.append([queue.pop(0), 0])
    fresh = [True] * len(slots)
    keep: list[int] | None = None
    steps = []
    while slots:
        inputs, targets = [], []
        for session, position in slots:
            start = data.session_offsets[session] + position
            inputs.append(int(data.item_idx[start]))
            targets.append(int(data.item_idx[start + 1]))
        steps.append((inputs, targets, fresh, keep))
        keep, fresh, survivors = None, [], []
        for index, slot in enumerate(slots):
            slot[1] += 1
            if slot[1] < lengths[slot[0]] - 1:
                survivors.append((index, slot, False))
            elif queue:
                survivors.append((index, [queue.pop(0), 0], True))
        if len(survivors) < len(slots):
            keep = [index for index, _, _ in survivors]
        slots = [slot for _, slot, _ in survivors]
        fresh = [is_new for _, _, is_new in survivors]
    return steps


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_step_by_step_simulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, size=int(rng.integers(1, 40)))
    data = SessionData.from_sessions([list(rng.integers(0, 50, n)) for n in lengths])
    batch_size = int(rng.integers(1, 10))
    got = [
        (
            s.inputs.tolist(),
            s.targets.tolist(),
            s.reset.tolist(),
            None if s.keep is None else s.keep.tolist(),
        )
        for s in session_parallel_steps(data, batch_size)
    ]
    assert got == _simulate(data, batch_size)


def test_every_transition_is_used_once() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=3000)
    data = SessionData(rng.integers(0, 100, lengths.sum()), np.r_[0, np.cumsum(lengths)])
    plan = plan_session_parallel(data, batch_size=37)
    assert plan.n_rows == int(np.sum(lengths - 1))
    assert plan.reset.sum() == int(np.sum(lengths >= 2))
    widths = np.diff(plan.step_offsets)
    assert widths[0] == 37 and np.all(np.diff(widths) <= 0)  # the batch only ever shrinks
    assert sum(len(k) for k in plan.keeps.values()) == int(np.sum(widths[list(plan.keeps)]))
