"""The fused C loops agree with the torch operations they replace (and fail over to them)."""

from __future__ import annotations

import pytest
import torch

from gru4rec import native
from gru4rec.losses import sampled_loss_and_grad
from gru4rec.optim import _update_distinct_rows, adagrad_momentum_dense_
from gru4rec.train import _threads

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler for gru4rec.native")
HYPER = {"lr": 0.1, "momentum": 0.3, "eps": 1e-6}


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_dense_update_matches_torch(grad_dtype: torch.dtype) -> None:
    g = _generator()
    param, acc = torch.randn(70_001, generator=g), torch.rand(70_001, generator=g)
    velocity, grad = torch.randn(70_001, generator=g), torch.randn(70_001, generator=g)
    grad = grad.to(grad_dtype)
    expected = [param.clone(), acc.clone(), velocity.clone()]
    adagrad_momentum_dense_(expected[0], grad.float(), expected[1], expected[2], **HYPER)
    shadow = torch.empty(70_001, dtype=torch.bfloat16)
    native.adagrad_momentum_dense_(param, grad, acc, velocity, **HYPER, shadow=shadow)
    for got, want in zip((param, acc, velocity), expected, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.equal(shadow, param.to(torch.bfloat16))  # round to nearest even, as torch


@pytest.mark.parametrize(
    ("n_table", "width", "n_rows"),
    [
        (50, 7, 4),  # one thread
        (50, 1, 30),  # a bias: one element a row
        (6000, 100, 1500),  # the threads split the table where the rows split evenly
        (3000, 33, 2500),
    ],
)
def test_rows_update_matches_torch_and_leaves_other_rows(
    n_table: int, width: int, n_rows: int
) -> None:
    g = _generator(1)
    param, acc = torch.randn(n_table, width, generator=g), torch.rand(n_table, width, generator=g)
    velocity = torch.randn(n_table, width, generator=g)
    # Skewed like sampled items: low indices far more often (the split is not the middle).
    rows = torch.unique((torch.rand(4 * n_rows, generator=g) ** 3 * n_table).long())[:n_rows]
    rows = rows[torch.randperm(len(rows), generator=g)]
    grad = torch.randn(len(rows), width, generator=g)
    if width == 1:
        param, acc, velocity, grad = param.view(-1), acc.view(-1), velocity.view(-1), grad.view(-1)
    expected = [param.clone(), acc.clone(), velocity.clone()]
    _update_distinct_rows(expected[0], rows, grad, expected[1], expected[2], **HYPER)
    before = param.clone()
    with _threads(2):
        native.adagrad_momentum_rows_(param, rows, grad, acc, velocity, **HYPER)
    for got, want in zip((param, acc, velocity), expected, strict=True):
        torch.testing.assert_close(got, want)
    untouched = torch.ones(n_table, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(param[untouched], before[untouched])


def _loss_inputs(n_rows: int, n_cols: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Row scores of U distinct items, and the column -> item slot map with repeats."""
    g = _generator(seed)
    n_slots = n_cols - 5
    slot = torch.cat(
        [torch.randperm(n_slots, generator=g), torch.randint(0, n_slots, (5,), generator=g)]
    )
    slot = slot[torch.randperm(n_cols, generator=g)]
    row_scores = 3 * torch.randn(n_rows, n_slots, generator=g)
    row_bias = torch.randn(n_slots, generator=g)
    shift = torch.randn(n_cols, generator=g)
    return row_scores, row_bias, slot, shift


@pytest.mark.parametrize(
    ("loss", "logq", "bpreg", "elu_param"),
    [("cross-entropy", True, 0.0, 0.0), ("cross-entropy", False, 0.0, 0.5),
     ("cross-entropy", True, 0.0, 1.0), ("bpr-max", False, 0.0, 0.0),
     ("bpr-max", False, 0.9, 1.0), ("bpr-max", False, 1.95, 0.5)],
)  # fmt: skip
def test_loss_over_rows_matches_the_torch_loss(
    loss: str, logq: bool, bpreg: float, elu_param: float
) -> None:
    n_rows, n_cols = 6, 40
    row_scores, row_bias, slot, shift = _loss_inputs(n_rows, n_cols, seed=2)
    # Rows are session slots: the target of row i is column i, an item of its own.
    scores = (row_scores + row_bias)[:, slot]
    options = {"loss": loss, "logq_shift": shift if logq else None, "bpreg": bpreg,
               "elu_param": elu_param}  # fmt: skip
    value, grad = sampled_loss_and_grad(scores, **options)  # type: ignore[arg-type]
    expected_rows = torch.zeros_like(row_scores).index_add_(1, slot, grad)

    grad_rows = torch.empty_like(row_scores)
    loss_out = native.sampled_loss_rows(
        row_scores, slot, row_bias=row_bias, grad_rows=grad_rows, loss_out=torch.empty(()),
        row_loss=torch.empty(n_rows, dtype=torch.float64),
        work=torch.empty(4 * native.work_floats(n_cols)),
        index=torch.empty(row_scores.shape[1] + n_cols, dtype=torch.int64), **options,
    )  # type: ignore[arg-type]  # fmt: skip
    torch.testing.assert_close(loss_out, value)
    torch.testing.assert_close(grad_rows, expected_rows, rtol=1e-5, atol=1e-7)


def test_loss_propagates_nan() -> None:
    row_scores, row_bias, slot, _ = _loss_inputs(3, 12, seed=3)
    row_scores[1, 4] = float("nan")
    for loss in ("cross-entropy", "bpr-max"):
        value = native.sampled_loss_rows(
            row_scores, slot, row_bias=row_bias, loss=loss, logq_shift=None, bpreg=0.5,
            elu_param=1.0, grad_rows=torch.empty_like(row_scores), loss_out=torch.empty(()),
            row_loss=torch.empty(3, dtype=torch.float64), work=torch.empty(4 * 36),
            index=torch.empty(24, dtype=torch.int64),
        )  # fmt: skip
        assert torch.isnan(value), loss


def test_gru_loops_match_torch() -> None:
    g = _generator(4)
    n_rows, size = 5, 33
    pre_rz = 2 * torch.randn(n_rows, 2 * size, generator=g)
    pre_c = 2 * torch.randn(n_rows, size, generator=g)
    hidden = torch.randn(n_rows, size, generator=g)
    mask = (torch.rand(n_rows, size, generator=g) > 0.3).float() / 0.7
    grad_output = torch.randn(n_rows, size, generator=g)
    grad_reset_hidden = torch.randn(n_rows, size, generator=g)

    # Forward, by torch.
    rz = torch.sigmoid(pre_rz)
    r, z = rz[:, :size], rz[:, size:]
    c = torch.tanh(pre_c)
    new_hidden = hidden + z * (c - hidden)
    # Backward of the elementwise parts, by autograd.
    leaf_rz, leaf_c = pre_rz.clone().requires_grad_(), pre_c.clone().requires_grad_()
    gates = torch.sigmoid(leaf_rz)
    out = (hidden + gates[:, size:] * (torch.tanh(leaf_c) - hidden)) * mask
    out.backward(grad_output)
    d_r = grad_reset_hidden * hidden * r * (1 - r)  # sigmoid' of the reset gate, by hand

    got_rz, got_c = pre_rz.clone(), pre_c.clone()
    reset_hidden, diff = torch.empty_like(hidden), torch.empty_like(hidden)
    got_new, got_out = torch.empty_like(hidden), torch.empty_like(hidden)
    native.gru_gates(got_rz, hidden, reset_hidden)
    native.gru_output(got_c, hidden, got_rz, diff, got_new, mask, got_out)
    torch.testing.assert_close(got_rz, rz)
    torch.testing.assert_close(reset_hidden, r * hidden)
    torch.testing.assert_close(got_c, c)
    torch.testing.assert_close(got_new, new_hidden)
    torch.testing.assert_close(got_out, new_hidden * mask)
    # The same pre-activations split into the hidden part, the input part and the bias.
    gates_x = torch.randn(n_rows, 3 * size, generator=g)
    bias = torch.randn(3 * size, generator=g)
    part_rz = pre_rz - gates_x[:, : 2 * size] - bias[: 2 * size]
    part_c = pre_c - gates_x[:, 2 * size :] - bias[2 * size :]
    native.gru_gates(part_rz, hidden, reset_hidden, gates_x=gates_x, bias=bias)
    native.gru_output(part_c, hidden, part_rz, diff, got_new, None, got_new,
                      gates_x=gates_x, bias=bias)  # fmt: skip
    torch.testing.assert_close(part_rz, rz)
    torch.testing.assert_close(part_c, c)
    torch.testing.assert_close(got_new, new_hidden)

    grad_gates = torch.zeros(n_rows, 3 * size)
    native.gru_output_backward(grad_output, mask, diff, got_rz, got_c, grad_gates)
    native.gru_reset_backward(grad_reset_hidden, hidden, got_rz, grad_gates)
    assert leaf_rz.grad is not None and leaf_c.grad is not None
    torch.testing.assert_close(grad_gates[:, size : 2 * size], leaf_rz.grad[:, size:])
    torch.testing.assert_close(grad_gates[:, 2 * size :], leaf_c.grad)
    torch.testing.assert_close(grad_gates[:, :size], d_r)


def test_distinct_rows_in_order_of_first_appearance() -> None:
    columns = torch.tensor([5, 2, 5, 9, 2, 7])
    inputs = torch.tensor([9, 1, 3, 1])
    mark = torch.zeros(12, dtype=torch.uint8)
    slot_of = torch.zeros(12, dtype=torch.int64)
    rows = torch.empty(10, dtype=torch.int64)
    column_slot = torch.empty(6, dtype=torch.int64)
    input_slot = torch.empty(4, dtype=torch.int64)
    counts = torch.zeros(2, dtype=torch.int64)
    args = (mark, slot_of, rows, column_slot, input_slot, counts)
    assert native.distinct_rows(columns, inputs, True, *args) == (4, 6)
    assert rows[:6].tolist() == [5, 2, 9, 7, 1, 3]
    assert column_slot.tolist() == [0, 1, 0, 2, 1, 3]
    assert input_slot.tolist() == [2, 4, 5, 4]
    assert not mark.any()  # left clean for the next step
    assert native.distinct_rows(columns, inputs, False, *args) == (4, 4)
    assert input_slot.tolist() == [2, -1, -1, -1]


def test_elu_matches_torch_around_zero() -> None:
    # The loss loops' exp is a polynomial; check it where ELU switches branches.
    x = torch.linspace(-30, 3, 1001)
    n_cols = len(x)
    row_scores = x[None, :].clone()
    slot = torch.arange(n_cols)
    work = torch.empty(4 * native.work_floats(n_cols))
    grad_rows = torch.empty_like(row_scores)
    # BPR-max with one row: only the ELU of each column enters; compare to torch's.
    value, grad = sampled_loss_and_grad(row_scores, loss="bpr-max", bpreg=1.0, elu_param=1.0)
    got = native.sampled_loss_rows(
        row_scores, slot, loss="bpr-max", logq_shift=None, bpreg=1.0, elu_param=1.0,
        grad_rows=grad_rows, loss_out=torch.empty(()), row_loss=torch.empty(1, dtype=torch.float64),
        work=work, index=torch.empty(2 * n_cols, dtype=torch.int64),
    )  # fmt: skip
    torch.testing.assert_close(got, value)
    torch.testing.assert_close(grad_rows, grad, rtol=1e-5, atol=1e-8)


def test_guided_inverse_cdf_draws_what_searchsorted_draws() -> None:
    g = _generator(6)
    weights = torch.cat([torch.rand(500, generator=g) ** 8, torch.tensor([50.0, 0.0, 1e-9])])
    cumulative = torch.cumsum(weights.double() / weights.sum(), 0)
    cumulative[-1] = 1.0
    n_guide = 4 * len(weights)
    grid = torch.arange(n_guide + 1, dtype=torch.float64) / n_guide
    guide = torch.searchsorted(cumulative, grid, right=True)
    uniform = torch.cat([torch.rand(100_000, generator=g, dtype=torch.float64),
                         cumulative[:50], grid[:50], torch.tensor([0.0, 1.0 - 1e-16])])  # fmt: skip
    expected = torch.searchsorted(cumulative, uniform, right=True).clamp_max_(len(weights) - 1)
    got = native.sample_inverse_cdf(cumulative, guide, uniform, torch.empty_like(expected))
    assert torch.equal(got, expected)


def test_dropout_masks_have_the_same_bits_with_and_without_c() -> None:
    from gru4rec.sampling import dropout_bits

    key, start, threshold, scale = 0x1234_5678_9ABC_DEF0, 987_654_321, 1_288_490_189, 1 / 0.7
    masks = native.dropout_mask(key, start, threshold, scale, torch.empty(70_000))
    keep = dropout_bits(key, start, 70_000) >= threshold
    expected = torch.from_numpy(keep.astype("float32") * torch.tensor(scale).float().item())
    assert torch.equal(masks, expected)
    assert abs((masks == 0).float().mean().item() - 0.3) < 0.01


def test_top_k_rows_matches_torch_topk_and_merges_blocks() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(37, 1000, generator=generator)
    expected = torch.topk(scores, 20, dim=1)
    values, indices = torch.empty(37, 20), torch.empty(37, 20, dtype=torch.int64)
    native.top_k_rows(scores, 20, values, indices)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)
    # The same through blocks of 300 columns (the last one short), merged in order.
    merged_values, merged_indices = torch.empty_like(values), torch.empty_like(indices)
    for first in range(0, 1000, 300):
        block = scores[:, first : first + 300].contiguous()
        native.top_k_rows(block, 20, merged_values, merged_indices, offset=first,
                          merge=first > 0)  # fmt: skip
    assert torch.equal(merged_values, values) and torch.equal(merged_indices, indices)


def test_top_k_rows_ties_nan_and_short_rows() -> None:
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([
        [1.0, 3.0, 3.0, nan, 2.0, 3.0],  # ties: the lower column first; NaN never chosen
        [nan, nan, nan, nan, nan, 0.5],  # one value that is not NaN: the rest stays empty
        [-inf, 0.0, -inf, 0.0, 0.0, 0.0],  # -inf is a value like any other
    ])  # fmt: skip
    values, indices = torch.empty(3, 4), torch.empty(3, 4, dtype=torch.int64)
    native.top_k_rows(scores, 4, values, indices)
    assert indices.tolist() == [[1, 2, 5, 4], [5, -1, -1, -1], [1, 3, 4, 5]]
    assert values[0].tolist() == [3.0, 3.0, 3.0, 2.0]
    assert values[1].tolist() == [0.5, -inf, -inf, -inf]


def test_add_to_rows_matches_index_add() -> None:
    generator = _generator(5)
    dst = torch.randn(10, 7, generator=generator)
    src = torch.randn(6, 7, generator=generator)
    slot = torch.tensor([0, 8, 3, 8, 9, 0])  # repeats add up
    expected = dst.clone()
    expected[4:].zero_()
    expected.index_add_(0, slot, src)
    native.add_to_rows(dst, 4, slot, src)
    torch.testing.assert_close(dst, expected)
