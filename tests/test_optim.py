"""Adagrad with momentum: one and two steps worked out by hand, dense, by rows and sparse."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from gru4rec.errors import ConfigError
from gru4rec.network.optim import SparseAdagradMomentum, adagrad_momentum_dense_

LR, MOMENTUM, EPS = 0.1, 0.5, 1e-6


def adagrad_momentum_rows_(
    param: torch.Tensor,
    rows: torch.Tensor,
    grad_rows: torch.Tensor,
    acc: torch.Tensor,
    velocity: torch.Tensor,
    *,
    lr: float,
    momentum: float,
) -> None:
    """One step of the optimiser on the row-sparse gradient `grad_rows` (R, ...) of `rows`
    (R,) (duplicates summed, as in autograd's sparse gradients), in place on `param` and
    its state `acc`, `velocity`."""
    leaf = torch.nn.Parameter(param)  # shares param's storage: the update lands in it
    optimizer = SparseAdagradMomentum([leaf], lr=lr, momentum=momentum, eps=EPS)
    optimizer.state[leaf] = {"acc": acc, "velocity": velocity}
    leaf.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), grad_rows, param.shape)
    optimizer.step()


def f64(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_dense_two_steps_by_hand() -> None:
    param, acc, velocity = f64([1.0, -2.0]), f64([0.0, 0.0]), f64([0.0, 0.0])

    adagrad_momentum_dense_(param, f64([0.5, -1.0]), acc, velocity, lr=LR, momentum=MOMENTUM)
    v1 = [-LR * 0.5 / math.sqrt(0.25 + EPS), -LR * -1.0 / math.sqrt(1.0 + EPS)]
    assert acc.tolist() == pytest.approx([0.25, 1.0], abs=1e-15)
    assert velocity.tolist() == pytest.approx(v1, abs=1e-15)
    assert param.tolist() == pytest.approx([1.0 + v1[0], -2.0 + v1[1]], abs=1e-15)

    # Second step: the zero gradient of element 1 still lets its momentum carry it.
    adagrad_momentum_dense_(param, f64([0.5, 0.0]), acc, velocity, lr=LR, momentum=MOMENTUM)
    v2 = [MOMENTUM * v1[0] - LR * 0.5 / math.sqrt(0.5 + EPS), MOMENTUM * v1[1]]
    assert acc.tolist() == pytest.approx([0.5, 1.0], abs=1e-15)
    assert velocity.tolist() == pytest.approx(v2, abs=1e-15)
    assert param.tolist() == pytest.approx([1.0 + v1[0] + v2[0], -2.0 + v1[1] + v2[1]], abs=1e-15)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_momentum_zero_versus_positive(momentum: float) -> None:
    param, acc, velocity = f64([0.0]), f64([0.0]), f64([0.0])
    for _ in range(2):
        adagrad_momentum_dense_(param, f64([2.0]), acc, velocity, lr=LR, momentum=momentum)
    step1 = -LR * 2.0 / math.sqrt(4.0 + EPS)
    step2 = momentum * step1 - LR * 2.0 / math.sqrt(8.0 + EPS)
    assert param.item() == pytest.approx(step1 + step2, abs=1e-15)


def test_rows_sum_duplicates_and_leave_other_rows_alone() -> None:
    param = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    before = param.clone()
    acc, velocity = torch.zeros_like(param), torch.zeros_like(param)

    # Row 2 appears twice: one update with the summed gradient [1.5, 1.0].
    rows = torch.tensor([2, 0, 2])
    grads = f64([[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]])
    adagrad_momentum_rows_(param, rows, grads, acc, velocity, lr=LR, momentum=MOMENTUM)
    v_row2 = [-LR * 1.5 / math.sqrt(2.25 + EPS), -LR * 1.0 / math.sqrt(1.0 + EPS)]
    v_row0 = [-LR * 3.0 / math.sqrt(9.0 + EPS), -LR * 4.0 / math.sqrt(16.0 + EPS)]
    expected_acc = f64([[9.0, 16.0], [0.0, 0.0], [2.25, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(acc, expected_acc, rtol=0, atol=1e-15)
    assert velocity[2].tolist() == pytest.approx(v_row2, abs=1e-15)
    assert param[0].tolist() == pytest.approx([0.0 + v_row0[0], 1.0 + v_row0[1]], abs=1e-15)
    assert param[2].tolist() == pytest.approx([4.0 + v_row2[0], 5.0 + v_row2[1]], abs=1e-15)
    for untouched in (1, 3):
        assert torch.equal(param[untouched], before[untouched])
        assert velocity[untouched].tolist() == [0.0, 0.0]

    # Second step touches row 0 only: row 2 keeps its velocity but does not move.
    row2_after_step1 = param[2].clone()
    adagrad_momentum_rows_(
        param, torch.tensor([0]), f64([[1.0, 0.0]]), acc, velocity, lr=LR, momentum=MOMENTUM
    )
    v2_row0 = [MOMENTUM * v_row0[0] - LR * 1.0 / math.sqrt(10.0 + EPS), MOMENTUM * v_row0[1]]
    assert param[0].tolist() == pytest.approx(
        [v_row0[0] + v2_row0[0], 1.0 + v_row0[1] + v2_row0[1]], abs=1e-15
    )
    assert acc[0].tolist() == pytest.approx([10.0, 16.0], abs=1e-15)
    assert torch.equal(param[2], row2_after_step1)
    assert velocity[2].tolist() == pytest.approx(v_row2, abs=1e-15)


def test_rows_on_a_bias_vector() -> None:
    bias, acc, velocity = f64([0.0, 1.0, 2.0]), f64([0.0, 0.0, 0.0]), f64([0.0, 0.0, 0.0])
    adagrad_momentum_rows_(
        bias, torch.tensor([1, 1]), f64([0.2, 0.3]), acc, velocity, lr=LR, momentum=MOMENTUM
    )
    expected_step = -LR * 0.5 / math.sqrt(0.25 + EPS)
    assert bias.tolist() == pytest.approx([0.0, 1.0 + expected_step, 2.0], abs=1e-15)
    assert acc.tolist() == pytest.approx([0.0, 0.25, 0.0], abs=1e-15)


def test_rows_kernel_equals_dense_kernel_on_the_touched_rows() -> None:
    generator = torch.Generator().manual_seed(0)
    param = torch.randn(50, 3, generator=generator)
    rows = torch.randint(0, 50, (40,), generator=generator)
    grad_rows = torch.randn(40, 3, generator=generator)
    dense_grad = torch.zeros_like(param).index_add_(0, rows, grad_rows)
    by_rows = [param.clone(), torch.zeros_like(param), torch.zeros_like(param)]
    dense = [param.clone(), torch.zeros_like(param), torch.zeros_like(param)]
    for _ in range(3):
        adagrad_momentum_rows_(by_rows[0], rows, grad_rows, *by_rows[1:], lr=LR, momentum=0.3)
        adagrad_momentum_dense_(dense[0], dense_grad, *dense[1:], lr=LR, momentum=0.3)
    touched = torch.unique(rows)
    for got, expected in zip(by_rows, dense, strict=True):
        torch.testing.assert_close(got[touched], expected[touched])


def test_optimizer_sparse_embedding_gradient_updates_only_looked_up_rows() -> None:
    weight = torch.nn.Parameter(torch.arange(10, dtype=torch.float64).reshape(5, 2))
    bias = torch.nn.Parameter(f64([0.5]))  # a dense parameter in the same optimizer
    optimizer = SparseAdagradMomentum([weight, bias], lr=LR, momentum=MOMENTUM)
    before = weight.detach().clone()

    embedded = F.embedding(torch.tensor([1, 3, 1]), weight, sparse=True)  # (3, 2)
    coefficients = f64([[1.0, 2.0], [3.0, 4.0], [-0.5, 1.0]])
    ((embedded * coefficients).sum() + 2.0 * bias.sum()).backward()
    assert weight.grad is not None and weight.grad.is_sparse
    optimizer.step()

    # Row 1 was looked up twice: gradient [0.5, 3.0]; row 3: [3.0, 4.0]; bias: 2.0.
    for row, grad in ((1, [0.5, 3.0]), (3, [3.0, 4.0])):
        expected = [
            before[row, d].item() - LR * g / math.sqrt(g * g + EPS) for d, g in enumerate(grad)
        ]
        assert weight[row].tolist() == pytest.approx(expected, abs=1e-15)
    for untouched in (0, 2, 4):
        assert torch.equal(weight[untouched], before[untouched])
        assert optimizer.state[weight]["acc"][untouched].tolist() == [0.0, 0.0]
    assert bias.item() == pytest.approx(0.5 - LR * 2.0 / math.sqrt(4.0 + EPS), abs=1e-15)
    assert optimizer.state[weight]["velocity"].shape == weight.shape


def test_optimizer_skips_parameters_without_gradient() -> None:
    used, unused = torch.nn.Parameter(f64([1.0])), torch.nn.Parameter(f64([1.0]))
    optimizer = SparseAdagradMomentum([used, unused], lr=LR)
    (3.0 * used).sum().backward()
    optimizer.step()
    assert unused.item() == 1.0 and unused not in optimizer.state
    assert used.item() == pytest.approx(1.0 - LR * 3.0 / math.sqrt(9.0 + EPS), abs=1e-15)


def test_state_dict_round_trip_continues_identically() -> None:
    def make() -> tuple[torch.nn.Embedding, SparseAdagradMomentum]:
        torch.manual_seed(0)
        embedding = torch.nn.Embedding(6, 3, sparse=True)
        return embedding, SparseAdagradMomentum(embedding.parameters(), lr=LR, momentum=0.4)

    def step(embedding: torch.nn.Embedding, optimizer: SparseAdagradMomentum, rows: list) -> None:
        optimizer.zero_grad()
        embedding(torch.tensor(rows)).square().sum().backward()
        optimizer.step()

    original, original_optimizer = make()
    step(original, original_optimizer, [0, 2, 2])
    # Through bytes, as a checkpoint would: an in-memory state_dict shares its tensors.
    saved = io.BytesIO()
    torch.save({"model": original.state_dict(), "optim": original_optimizer.state_dict()}, saved)
    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=True)
    restored, restored_optimizer = make()
    restored.load_state_dict(checkpoint["model"])
    restored_optimizer.load_state_dict(checkpoint["optim"])
    for embedding, optimizer in ((original, original_optimizer), (restored, restored_optimizer)):
        step(embedding, optimizer, [2, 5])
    assert torch.equal(original.weight, restored.weight)
    state = restored_optimizer.state_dict()["state"][0]
    assert set(state) == {"acc", "velocity"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lr": 0.0}, "learning rate"), ({"lr": 0.1, "momentum": 1.0}, "momentum")],
)
def test_bad_hyperparameters_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SparseAdagradMomentum([torch.nn.Parameter(torch.zeros(1))], **kwargs)
