"""Every kernel backend computes what the plain torch operations compute.

The interface's methods run on every backend: the torch backend and the compiled loops for
each instruction set (baseline, AVX2, AVX-512), all against torch or autograd; an
instruction set this CPU lacks is a skip that names it. The loops only the compiled library has (sampling, dropout, top-k) run on
each of its instruction sets. Float32 tolerances: the loops' exp is a polynomial within
about 1 ulp, and the AVX-512 optimiser's 1/sqrt is an estimate refined to within 2 ulp;
sums run in another order; so agreement to a few ulp relative (1.3e-6, torch's float32
default) with small absolute slack for values near 0 is what must hold.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import pytest
import torch

import gru4rec.network
from gru4rec.network import kernels
from gru4rec.network.kernels import CompiledKernels, Kernels, LossScratch, RowScratch, loader
from gru4rec.network.losses import sampled_loss_and_grad
from gru4rec.network.optim import adagrad_momentum_dense_, adagrad_momentum_distinct_rows_
from gru4rec.network.train import _threads

HYPER = {"lr": 0.1, "momentum": 0.3, "eps": 1e-6}
COMPILED = [f"compiled-{isa}" for isa in kernels.isa_levels()]  # those this host runs
# Every instruction set is a test of its own, run or skipped with the reason: the report
# says which ISAs this host covered and which it did not.
EVERY_COMPILED = [f"compiled-{isa}" for isa in kernels.ISAS]
BACKENDS = ["torch", *EVERY_COMPILED]
ISA_NAMES = {"base": "x86-64 baseline", "avx2": "AVX2 (x86-64-v3)", "avx512": "AVX-512 (x86-64-v4)"}
_CPU32 = (torch.device("cpu"), torch.float32)
ROOT = Path(__file__).resolve().parents[1]


def _compiled_or_skip(isa: str) -> CompiledKernels:
    """The compiled loops of `isa`, or a skip naming the ISA and why this host cannot run them."""
    if not kernels.isa_levels():
        pytest.skip(
            f"the compiled kernels are not loaded ({kernels.unavailable_reason()}): the {isa} "
            "kernels are not tested on this host"
        )
    if isa not in kernels.isa_levels():
        pytest.skip(
            f"this CPU has no {ISA_NAMES[isa]}: the {isa} kernels are not tested on this host"
        )
    backend = kernels.compiled(isa)
    assert backend is not None and backend.isa == isa  # that ISA's loops, not another's
    return backend


def _backend(name: str) -> Kernels:
    if name == "torch":
        return kernels.TorchKernels()
    return _compiled_or_skip(name.removeprefix("compiled-"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Kernels:
    """Each backend: torch, and the compiled loops per instruction set (skipped, with the
    reason, where this host cannot run them)."""
    return _backend(request.param)


@pytest.fixture(params=EVERY_COMPILED)
def compiled(request: pytest.FixtureRequest) -> CompiledKernels:
    """The compiled loops per instruction set (skipped, with the reason, where this host
    cannot run them)."""
    backend = _backend(request.param)
    assert isinstance(backend, CompiledKernels)
    return backend


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_dense_update_matches_torch(backend: Kernels, grad_dtype: torch.dtype) -> None:
    g = _generator()
    param, acc = torch.randn(70_001, generator=g), torch.rand(70_001, generator=g)
    velocity, grad = torch.randn(70_001, generator=g), torch.randn(70_001, generator=g)
    grad = grad.to(grad_dtype)
    expected = [param.clone(), acc.clone(), velocity.clone()]
    adagrad_momentum_dense_(expected[0], grad.float(), expected[1], expected[2], **HYPER)
    shadow = torch.empty(70_001, dtype=torch.bfloat16)
    backend.adagrad_dense(param, grad, acc, velocity, **HYPER, shadow=shadow)
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
    backend: Kernels, n_table: int, width: int, n_rows: int
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
    adagrad_momentum_distinct_rows_(expected[0], rows, grad, expected[1], expected[2], **HYPER)
    before = param.clone()
    with _threads(2):
        backend.adagrad_rows(param, rows, grad, acc, velocity, **HYPER)
    for got, want in zip((param, acc, velocity), expected, strict=True):
        torch.testing.assert_close(got, want)
    untouched = torch.ones(n_table, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(param[untouched], before[untouched])


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_rows_update_keeps_the_bf16_copy_in_step(backend: Kernels, grad_dtype: torch.dtype) -> None:
    g = _generator(3)
    param = torch.randn(30, 4, generator=g)
    shadow = param.to(torch.bfloat16)
    acc, velocity = torch.zeros_like(param), torch.zeros_like(param)
    expected = [param.clone(), torch.zeros_like(param), torch.zeros_like(param)]
    for step in range(3):
        rows = torch.tensor([1, 7, 27]) + step
        grad = torch.randn(3, 4, generator=g).to(grad_dtype)
        adagrad_momentum_distinct_rows_(expected[0], rows, grad.float(), *expected[1:], **HYPER)
        backend.adagrad_rows(param, rows, grad, acc, velocity, **HYPER, shadow=shadow)
    for got, want in zip((param, acc, velocity), expected, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.equal(shadow, param.to(torch.bfloat16))  # the bf16 copy follows


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
    [
        ("cross-entropy", True, 0.0, 0.0),
        ("cross-entropy", False, 0.0, 0.5),
        ("cross-entropy", True, 0.0, 1.0),
        ("bpr-max", False, 0.0, 0.0),
        ("bpr-max", False, 0.9, 1.0),
        ("bpr-max", False, 1.95, 0.5),
    ],
)
def test_loss_over_rows_matches_the_torch_loss(
    backend: Kernels, loss: str, logq: bool, bpreg: float, elu_param: float
) -> None:
    n_rows, n_cols = 6, 40
    row_scores, row_bias, slot, shift = _loss_inputs(n_rows, n_cols, seed=2)
    # Rows are session slots: the target of row i is column i, an item of its own.
    scores = (row_scores + row_bias)[:, slot]
    options = {
        "loss": loss,
        "logq_shift": shift if logq else None,
        "bpreg": bpreg,
        "elu_param": elu_param,
    }
    value, grad = sampled_loss_and_grad(scores, **options)  # type: ignore[arg-type]
    expected_rows = torch.zeros_like(row_scores).index_add_(1, slot, grad)

    grad_rows = torch.empty_like(row_scores)
    scratch = LossScratch.allocate(n_rows, n_cols, row_scores.shape[1], *_CPU32)
    loss_out = backend.sampled_loss(
        row_scores.clone(), row_bias, slot, grad_rows=grad_rows, scratch=scratch, **options
    )  # type: ignore[arg-type]
    torch.testing.assert_close(loss_out, value)
    torch.testing.assert_close(grad_rows, expected_rows, rtol=1e-5, atol=1e-7)


def test_loss_propagates_nan(backend: Kernels) -> None:
    for loss in ("cross-entropy", "bpr-max"):
        row_scores, row_bias, slot, _ = _loss_inputs(3, 12, seed=3)
        row_scores[1, 4] = float("nan")
        value = backend.sampled_loss(
            row_scores,
            row_bias,
            slot,
            loss=loss,
            logq_shift=None,
            bpreg=0.5,
            elu_param=1.0,
            grad_rows=torch.empty_like(row_scores),
            scratch=LossScratch.allocate(3, 12, row_scores.shape[1], *_CPU32),
        )
        assert torch.isnan(value), loss


def test_gru_loops_match_autograd(backend: Kernels) -> None:
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

    # The pre-activations split into the hidden part, the input part and the bias.
    gates_x = torch.randn(n_rows, 3 * size, generator=g)
    bias = torch.randn(3 * size, generator=g)
    got_rz = pre_rz - gates_x[:, : 2 * size] - bias[: 2 * size]
    got_c = pre_c - gates_x[:, 2 * size :] - bias[2 * size :]
    reset_hidden, diff = torch.empty_like(hidden), torch.empty_like(hidden)
    got_new, got_out = torch.empty_like(hidden), torch.empty_like(hidden)
    backend.gru_gates(got_rz, gates_x, bias, hidden, reset_hidden)
    backend.gru_output(got_c, gates_x, bias, hidden, got_rz, diff, got_new, mask, got_out)
    torch.testing.assert_close(got_rz, rz)
    torch.testing.assert_close(reset_hidden, r * hidden)
    torch.testing.assert_close(got_c, c)
    torch.testing.assert_close(got_new, new_hidden)
    torch.testing.assert_close(got_out, new_hidden * mask)

    grad_gates = torch.zeros(n_rows, 3 * size)
    backend.gru_output_backward(grad_output.clone(), mask, diff, got_rz, got_c, grad_gates)
    backend.gru_reset_backward(grad_reset_hidden, hidden, got_rz, grad_gates)
    assert leaf_rz.grad is not None and leaf_c.grad is not None
    torch.testing.assert_close(grad_gates[:, size : 2 * size], leaf_rz.grad[:, size:])
    torch.testing.assert_close(grad_gates[:, 2 * size :], leaf_c.grad)
    torch.testing.assert_close(grad_gates[:, :size], d_r)


def test_reset_after_loops_match_autograd(backend: Kernels) -> None:
    """c's input r (h U_c + b_hc) and its backward against autograd; gru_gates without r h."""
    g = _generator(5)
    n_rows, size = 6, 35
    pre_rz = 2 * torch.randn(n_rows, 2 * size, generator=g)
    matmul_c = torch.randn(n_rows, size, generator=g)  # h U_c
    bias_hidden = torch.randn(size, generator=g)
    grad_c = torch.randn(n_rows, size, generator=g)  # d a_c, from gru_output_backward

    leaf_rz = pre_rz.clone().requires_grad_()
    leaf_part = matmul_c.clone().requires_grad_()
    part = leaf_part + bias_hidden
    candidate = torch.sigmoid(leaf_rz)[:, :size] * part
    candidate.backward(grad_c)

    gates_rz, zeros = pre_rz.clone(), torch.zeros(n_rows, 3 * size)
    backend.gru_gates(gates_rz, zeros, torch.zeros(3 * size), torch.randn(n_rows, size), None)
    got_candidate, got_part = torch.empty(n_rows, size), matmul_c.clone()
    backend.gru_reset_after(got_candidate, got_part, bias_hidden, gates_rz)
    torch.testing.assert_close(got_part, part.detach())
    torch.testing.assert_close(got_candidate, candidate.detach())

    grad_gates = torch.zeros(n_rows, 3 * size)
    grad_gates[:, 2 * size :] = grad_c
    grad_part = torch.empty(n_rows, size)
    backend.gru_reset_after_backward(grad_gates, got_part, gates_rz, grad_part)
    assert leaf_rz.grad is not None and leaf_part.grad is not None
    torch.testing.assert_close(grad_gates[:, :size], leaf_rz.grad[:, :size])
    torch.testing.assert_close(grad_part, leaf_part.grad)
    torch.testing.assert_close(
        grad_gates[:, size:], torch.cat((torch.zeros_like(grad_c), grad_c), 1)
    )


def test_distinct_rows(backend: Kernels) -> None:
    columns = torch.tensor([5, 2, 5, 9, 2, 7])
    inputs = torch.tensor([9, 1, 3, 1])
    scratch = RowScratch.allocate(12, 6, 4, torch.device("cpu"))
    rows, n_scored, column_slot, input_slot = backend.distinct_rows(columns, inputs, True, scratch)
    assert n_scored == 4 and len(rows) == 6
    assert sorted(rows[:4].tolist()) == [2, 5, 7, 9] and sorted(rows[4:].tolist()) == [1, 3]
    assert torch.equal(rows[column_slot], columns) and torch.equal(rows[input_slot], inputs)
    if isinstance(backend, CompiledKernels):  # in order of first appearance
        assert rows.tolist() == [5, 2, 9, 7, 1, 3]
    assert not scratch.mark.any()  # left clean for the next step
    rows, n_scored, column_slot, input_slot = backend.distinct_rows(columns, inputs, False, scratch)
    assert n_scored == len(rows) == 4
    assert input_slot[1:].tolist() == [-1, -1, -1] and rows[input_slot[0]] == 9


def test_elu_matches_torch_around_zero(backend: Kernels) -> None:
    # The loss loops' exp is a polynomial; check it where ELU switches branches.
    x = torch.linspace(-30, 3, 1001)
    n_cols = len(x)
    row_scores = x[None, :].clone()
    slot = torch.arange(n_cols)
    grad_rows = torch.empty_like(row_scores)
    # BPR-max with one row: only the ELU of each column enters; compare to torch's.
    value, grad = sampled_loss_and_grad(row_scores, loss="bpr-max", bpreg=1.0, elu_param=1.0)
    got = backend.sampled_loss(
        row_scores.clone(),
        torch.zeros(n_cols),
        slot,
        loss="bpr-max",
        logq_shift=None,
        bpreg=1.0,
        elu_param=1.0,
        grad_rows=grad_rows,
        scratch=LossScratch.allocate(1, n_cols, n_cols, *_CPU32),
    )
    torch.testing.assert_close(got, value)
    torch.testing.assert_close(grad_rows, grad, rtol=1e-5, atol=1e-8)


def test_guided_inverse_cdf_draws_what_searchsorted_draws(compiled: CompiledKernels) -> None:
    g = _generator(6)
    weights = torch.cat([torch.rand(500, generator=g) ** 8, torch.tensor([50.0, 0.0, 1e-9])])
    cumulative = torch.cumsum(weights.double() / weights.sum(), 0)
    cumulative[-1] = 1.0
    n_guide = 4 * len(weights)
    grid = torch.arange(n_guide + 1, dtype=torch.float64) / n_guide
    guide = torch.searchsorted(cumulative, grid, right=True)
    uniform = torch.cat(
        [
            torch.rand(100_000, generator=g, dtype=torch.float64),
            cumulative[:50],
            grid[:50],
            torch.tensor([0.0, 1.0 - 1e-16]),
        ]
    )
    expected = torch.searchsorted(cumulative, uniform, right=True).clamp_max_(len(weights) - 1)
    got = compiled.sample_inverse_cdf(cumulative, guide, uniform, torch.empty_like(expected))
    assert torch.equal(got, expected)


def test_dropout_masks_have_the_same_bits_with_and_without_c(compiled: CompiledKernels) -> None:
    from gru4rec.network.sampling import dropout_bits

    key, start, threshold, scale = 0x1234_5678_9ABC_DEF0, 987_654_321, 1_288_490_189, 1 / 0.7
    masks = compiled.dropout_mask(key, start, threshold, scale, torch.empty(70_000))
    keep = dropout_bits(key, start, 70_000) >= threshold
    expected = torch.from_numpy(keep.astype("float32") * torch.tensor(scale).float().item())
    assert torch.equal(masks, expected)
    assert abs((masks == 0).float().mean().item() - 0.3) < 0.01


def test_top_k_rows_matches_torch_topk_and_merges_blocks(compiled: CompiledKernels) -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(37, 1000, generator=generator)
    expected = torch.topk(scores, 20, dim=1)
    values, indices = torch.empty(37, 20), torch.empty(37, 20, dtype=torch.int64)
    compiled.top_k_rows(scores, 20, values, indices)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)
    # The same through blocks of 300 columns (the last one short), merged in order.
    merged_values, merged_indices = torch.empty_like(values), torch.empty_like(indices)
    for first in range(0, 1000, 300):
        block = scores[:, first : first + 300].contiguous()
        compiled.top_k_rows(block, 20, merged_values, merged_indices, offset=first, merge=first > 0)
    assert torch.equal(merged_values, values) and torch.equal(merged_indices, indices)


def test_top_k_rows_ties_nan_and_short_rows(compiled: CompiledKernels) -> None:
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor(
        [
            [1.0, 3.0, 3.0, nan, 2.0, 3.0],  # ties: the lower column first; NaN never chosen
            [nan, nan, nan, nan, nan, 0.5],  # one value that is not NaN: the rest stays empty
            [-inf, 0.0, -inf, 0.0, 0.0, 0.0],  # -inf is a value like any other
        ]
    )
    values, indices = torch.empty(3, 4), torch.empty(3, 4, dtype=torch.int64)
    compiled.top_k_rows(scores, 4, values, indices)
    assert indices.tolist() == [[1, 2, 5, 4], [5, -1, -1, -1], [1, 3, 4, 5]]
    assert values[0].tolist() == [3.0, 3.0, 3.0, 2.0]
    assert values[1].tolist() == [0.5, -inf, -inf, -inf]


def test_add_to_rows_matches_index_add(backend: Kernels) -> None:
    generator = _generator(5)
    dst = torch.randn(10, 7, generator=generator)
    src = torch.randn(6, 7, generator=generator)
    slot = torch.tensor([0, 8, 3, 8, 9, 0])  # repeats add up
    expected = dst.clone()
    expected[4:].zero_()
    expected.index_add_(0, slot, src)
    backend.add_to_rows(dst, 4, slot, src)
    torch.testing.assert_close(dst, expected)


@pytest.mark.parametrize("isa", kernels.ISAS)
def test_the_isa_cap_selects_that_isas_loops(isa: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # GRU4REC_ISA is how a run is pinned to one instruction set (to compare them): the
    # default backend must then be that ISA's loops.
    _compiled_or_skip(isa)
    try:
        with monkeypatch.context() as patch:
            patch.setenv("GRU4REC_ISA", isa)
            kernels.compiled.cache_clear()
            capped = kernels.kernels_for(torch.device("cpu"), torch.float32)
            assert isinstance(capped, CompiledKernels) and capped.isa == isa
    finally:
        kernels.compiled.cache_clear()


# ------------------------------------------------------------------------- where from

_MAPPED = """
import numpy as np, torch
from pathlib import Path
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import SessionData
from gru4rec.network.model import GRU4Rec
from gru4rec.network.train import fit
data = SessionData.from_sessions([[1, 2, 3, 4], [2, 3, 5], [4, 5, 6, 1, 2]] * 20)
config = GRU4RecConfig(layers=(8,), batch_size=4, n_sample=5, n_epochs=1, seed=1)
fit(GRU4Rec.from_config(7, config), data, config, num_threads=1,
    item_support=np.bincount(data.item_idx, minlength=7))
for line in Path("/proc/self/maps").read_text().splitlines():
    if line.split()[-1].endswith(".so") and ("kernels" in line or "native" in line):
        print(line.split()[-1])
"""


@pytest.mark.skipif(not COMPILED, reason="the compiled kernels are not built")
def test_kernels_are_loaded_from_the_package_and_nowhere_else(tmp_path: Path) -> None:
    # A loader that took any `native-*.so` in $TMPDIR/gru4rec-<uid> (or $GRU4REC_CACHE),
    # whoever had put it there. Plant such files and train: only the package's own
    # extension may be mapped into the process.
    package = Path(gru4rec.network.__file__).resolve().parent
    extension = package / f"_kernels{sysconfig.get_config_var('EXT_SUFFIX')}"
    for cache in (tmp_path / f"gru4rec-{os.getuid()}", tmp_path / "cache"):
        cache.mkdir()
        for name in ("native-0123456789abcdef.so", extension.name):
            shutil.copy(extension, cache / name)
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRU4REC_CACHE": str(tmp_path / "cache")}
    env.pop("GRU4REC_KERNELS", None)
    done = subprocess.run(
        [sys.executable, "-c", _MAPPED],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(done.stdout.split()) == {str(extension)}


@pytest.mark.skipif(not COMPILED, reason="the compiled kernels are not built")
def test_an_extension_outside_the_package_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = types.ModuleType("gru4rec.network._kernels")
    stray.__file__ = str(tmp_path / "gru4rec" / "network" / "_kernels.so")
    try:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "gru4rec.network._kernels", stray)
            patch.setattr(gru4rec.network, "_kernels", stray, raising=False)
            loader._load.cache_clear()
            kernels.compiled.cache_clear()
            assert kernels.compiled() is None
            assert "is not inside the package" in kernels.unavailable_reason()
            assert isinstance(
                kernels.kernels_for(torch.device("cpu"), torch.float32), kernels.TorchKernels
            )
    finally:
        loader._load.cache_clear()
        kernels.compiled.cache_clear()
    assert kernels.compiled() is not None


def test_torch_fallback_is_announced_once_with_its_cost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kernels, "compiled", lambda isa=None: None)
    monkeypatch.setattr(kernels, "unavailable_reason", lambda: "the extension is not built")
    kernels._warn_torch_fallback.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="gru4rec.network.kernels"):
            for _ in range(3):
                backend = kernels.kernels_for(torch.device("cpu"), torch.float32)
                assert isinstance(backend, kernels.TorchKernels)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1
        assert "the extension is not built" in warnings[0] and "slower" in warnings[0]
        assert "Reinstall" in warnings[0]
        # GPUs and float64 use the torch backend by design: nothing to announce.
        caplog.clear()
        kernels._warn_torch_fallback.cache_clear()
        kernels.kernels_for(torch.device("cpu"), torch.float64)
        assert not caplog.records
    finally:
        kernels._warn_torch_fallback.cache_clear()
