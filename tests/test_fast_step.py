"""The fast step learns exactly what autograd learns: the same model trained both ways.

Each case trains one model with `backward="fast"` and a copy with `backward="autograd"`
from the same seed (same batches, negatives and dropout masks) for a few hundred steps,
shrinking batches at every epoch end included, and compares every step's loss and the
final parameters. In float64 the two agree to rounding; in float32 to float tolerance.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from gru4rec.network import fast_step, kernels
from gru4rec.network.batching import plan_session_parallel
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import SessionData
from gru4rec.network.model import GRU4Rec
from gru4rec.network.train import Callback, fit

N_ITEMS = 40


class _Losses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_step_end(self, epoch: int, step: int, loss: float) -> None:
        self.values.append(loss)


def _data(seed: int = 0, n_sessions: int = 160) -> SessionData:
    """Sessions of 2-9 events over a popularity-skewed catalogue (some items never occur)."""
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.0, N_ITEMS - 4) + 0.1
    popularity /= popularity.sum()
    sessions = [
        list(rng.choice(N_ITEMS - 4, size=rng.integers(2, 10), p=popularity))
        for _ in range(n_sessions)
    ]
    return SessionData.from_sessions(sessions)


def _config(**changes: object) -> GRU4RecConfig:
    base = {
        "layers": (12,),
        "batch_size": 6,
        "n_sample": 9,
        "sample_cache_size": 7,
        "n_epochs": 2,
        "learning_rate": 0.1,
        "momentum": 0.3,
        "sample_alpha": 0.5,
        "dropout_p_embed": 0.0,
        "dropout_p_hidden": 0.0,
        "seed": 5,
    }
    return GRU4RecConfig(**{**base, **changes})  # type: ignore[arg-type]


CASES = {
    "xe-logq-shared-dropout": _config(
        loss="cross-entropy", logq=1.0, dropout_p_embed=0.2, dropout_p_hidden=0.3
    ),
    "xe-logq-normalised-form": _config(
        loss="cross-entropy",
        logq=1.0,
        logq_form="normalised",
        sample_alpha=0.75,
        dropout_p_hidden=0.2,
    ),
    "xe-nologq-separate-2layers": _config(
        loss="cross-entropy",
        logq=0.0,
        embedding="separate",
        embedding_size=7,
        layers=(10, 8),
        dropout_p_embed=0.25,
        dropout_p_hidden=0.1,
        momentum=0.6,
    ),
    "xe-logq-elu-none": _config(
        loss="cross-entropy",
        logq=0.5,
        elu_param=0.5,
        embedding="none",
        momentum=0.0,
        dropout_p_hidden=0.4,
    ),
    "bprmax-elu-bpreg-shared-2layers": _config(
        loss="bpr-max",
        logq=0.0,
        elu_param=1.0,
        bpreg=0.9,
        layers=(9, 12),
        dropout_p_embed=0.5,
        dropout_p_hidden=0.3,
        momentum=0.15,
    ),
    "bprmax-plain-none-2layers": _config(
        loss="bpr-max", logq=0.0, bpreg=0.0, embedding="none", layers=(8, 6), momentum=0.5
    ),
    "xe-logq-reset-after-dropout": _config(
        loss="cross-entropy",
        logq=1.0,
        gru_form="reset_after",
        dropout_p_embed=0.2,
        dropout_p_hidden=0.3,
    ),
    "bprmax-reset-after-none-2layers": _config(
        loss="bpr-max",
        logq=0.0,
        elu_param=0.5,
        bpreg=0.5,
        gru_form="reset_after",
        embedding="none",
        layers=(8, 10),
        dropout_p_hidden=0.2,
        momentum=0.4,
    ),
    "bprmax-separate-in-batch-only": _config(
        loss="bpr-max",
        logq=0.0,
        bpreg=1.5,
        elu_param=0.5,
        embedding="separate",
        embedding_size=5,
        n_sample=0,
        dropout_p_hidden=0.2,
    ),
}


def _train_both(
    config: GRU4RecConfig, data: SessionData, dtype: torch.dtype
) -> tuple[GRU4Rec, GRU4Rec, list[float], list[float]]:
    support = np.bincount(data.item_idx, minlength=N_ITEMS)
    fast = GRU4Rec.from_config(N_ITEMS, config).to(dtype)
    reference = copy.deepcopy(fast)
    fast_losses, reference_losses = _Losses(), _Losses()
    fit(fast, data, config, item_support=support, callbacks=[fast_losses], num_threads=1)
    fit(
        reference,
        data,
        config,
        item_support=support,
        callbacks=[reference_losses],
        num_threads=1,
        backward="autograd",
    )
    return fast, reference, fast_losses.values, reference_losses.values


@pytest.mark.parametrize("case", list(CASES))
def test_fast_step_trains_the_same_model_as_autograd(case: str) -> None:
    config, data = CASES[case], _data()
    plan = plan_session_parallel(data, config.batch_size)
    assert plan.keeps, "the batch must shrink at the epoch end"
    assert plan.n_steps * config.n_epochs >= 200

    fast, reference, fast_losses, reference_losses = _train_both(config, data, torch.float64)

    assert len(fast_losses) == len(reference_losses) == plan.n_steps * config.n_epochs
    assert np.allclose(fast_losses, reference_losses, rtol=1e-9, atol=1e-12)
    before = GRU4Rec.from_config(N_ITEMS, config).state_dict()
    for name, value in reference.state_dict().items():
        assert not torch.equal(value, before[name].double()), f"{name} never moved"
        assert torch.allclose(fast.state_dict()[name], value, rtol=1e-8, atol=1e-10), name


@pytest.mark.parametrize("case", ["xe-logq-shared-dropout", "bprmax-plain-none-2layers"])
def test_both_steps_end_with_the_same_optimizer_state_and_carry_it(case: str) -> None:
    config, data = CASES[case], _data()
    support = np.bincount(data.item_idx, minlength=N_ITEMS)
    results = {}
    for backward in ("fast", "autograd"):
        model = GRU4Rec.from_config(N_ITEMS, config).double()
        results[backward] = fit(
            model, data, config, item_support=support, num_threads=1, backward=backward
        )  # type: ignore[arg-type]
    fast, reference = results["fast"].optimizer_state, results["autograd"].optimizer_state
    assert fast is not None and reference is not None
    assert fast.keys() == reference.keys() == dict(model.named_parameters()).keys()
    for name, (acc, velocity) in reference.items():
        assert acc.abs().sum() > 0, f"{name}: no state"
        torch.testing.assert_close(fast[name][0], acc, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(fast[name][1], velocity, rtol=1e-8, atol=1e-10)
    # Loaded into a new step, the state comes back as it went in (both steps).
    for backward in ("fast", "autograd"):
        model = GRU4Rec.from_config(N_ITEMS, config).double()
        again = fit(
            model,
            data,
            dataclasses.replace(config, n_epochs=1),
            item_support=support,
            num_threads=1,
            backward=backward,
            optimizer_state=reference,
        )  # type: ignore[arg-type]
        assert again.optimizer_state is not None
        for name, (acc, _) in reference.items():  # sums only grow from where they started
            assert bool((again.optimizer_state[name][0] >= acc - 1e-12).all()), name


BACKENDS = ["torch", *(f"compiled-{isa}" for isa in kernels.isa_levels())]


def _use_backend(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make FastStep run on the kernel backend `name` (torch, compiled-<isa>)."""
    backend = (
        kernels.TorchKernels()
        if name == "torch"
        else kernels.compiled(name.removeprefix("compiled-"))
    )
    assert backend is not None
    monkeypatch.setattr(fast_step, "kernels_for", lambda device, dtype: backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_float32_agrees_within_float_tolerance(
    case: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_backend(backend, monkeypatch)
    fast, reference, fast_losses, reference_losses = _train_both(
        CASES[case], _data(1), torch.float32
    )
    assert np.allclose(fast_losses, reference_losses, rtol=1e-4, atol=1e-5)
    for name, value in reference.state_dict().items():
        assert torch.allclose(fast.state_dict()[name], value, rtol=1e-3, atol=1e-4), name


@pytest.mark.parametrize(
    "case",
    [
        "xe-logq-shared-dropout",
        "bprmax-elu-bpreg-shared-2layers",
        "xe-nologq-separate-2layers",
        "bprmax-plain-none-2layers",
        "xe-logq-reset-after-dropout",
    ],
)
def test_bf16_matmuls_learn_about_the_same(case: str) -> None:
    config, data = CASES[case], _data(2)
    support = np.bincount(data.item_idx, minlength=N_ITEMS)
    full = GRU4Rec.from_config(N_ITEMS, config)
    low = copy.deepcopy(full)
    full_losses, low_losses = _Losses(), _Losses()
    fit(full, data, config, item_support=support, callbacks=[full_losses], num_threads=1)
    low_config = dataclasses.replace(config, precision="bf16")
    fit(low, data, low_config, item_support=support, callbacks=[low_losses], num_threads=1)
    assert all(p.dtype == torch.float32 for p in low.parameters())  # fp32 master weights
    # Rounding differences grow over a few hundred steps; each epoch's mean loss stays put.
    n_steps = len(full_losses.values) // config.n_epochs
    for epoch in range(config.n_epochs):
        span = slice(epoch * n_steps, (epoch + 1) * n_steps)
        mean_full, mean_low = np.mean(full_losses.values[span]), np.mean(low_losses.values[span])
        assert abs(mean_full - mean_low) < 5e-3 * mean_full, epoch


def test_weights_get_their_own_storage_back() -> None:
    config, data = CASES["bprmax-elu-bpreg-shared-2layers"], _data()
    model = GRU4Rec.from_config(N_ITEMS, config)
    fit(
        model,
        data,
        config,
        item_support=np.bincount(data.item_idx, minlength=N_ITEMS),
        num_threads=1,
    )
    pointers = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(pointers)) == len(pointers)  # no shared flat buffer left behind


def test_rows_that_get_no_gradient_do_not_move() -> None:
    # Items 36..39 never occur and n_sample=0 never scores them: no update, no momentum.
    config = CASES["bprmax-separate-in-batch-only"]
    model = GRU4Rec.from_config(N_ITEMS, config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = _data()
    support = np.bincount(data.item_idx, minlength=N_ITEMS)
    fit(model, data, config, item_support=support, num_threads=1)
    for name, parameter in model.named_parameters():
        if parameter.shape[0] == N_ITEMS:
            assert torch.equal(parameter[36:], before[name][36:]), name
            assert not torch.equal(parameter[:36], before[name][:36]), name


# ------------------------------------------------------- every backend on a larger model

LARGE_ITEMS = 3000
LARGE_CASES = {
    "xe-logq-shared": _config(
        layers=(64,),
        batch_size=32,
        n_sample=256,
        sample_cache_size=50,
        learning_rate=0.05,
        momentum=0.2,
        loss="cross-entropy",
        logq=1.0,
        dropout_p_embed=0.1,
        dropout_p_hidden=0.2,
        seed=3,
    ),
    "xe-logq-shared-reset-after": _config(
        layers=(64,),
        batch_size=32,
        n_sample=256,
        sample_cache_size=50,
        learning_rate=0.05,
        momentum=0.2,
        loss="cross-entropy",
        logq=1.0,
        gru_form="reset_after",
        dropout_p_embed=0.1,
        dropout_p_hidden=0.2,
        seed=3,
    ),
    "bprmax-elu-separate": _config(
        layers=(64,),
        batch_size=32,
        n_sample=256,
        sample_cache_size=50,
        learning_rate=0.05,
        momentum=0.2,
        loss="bpr-max",
        logq=0.0,
        elu_param=0.5,
        bpreg=1.0,
        embedding="separate",
        embedding_size=32,
        dropout_p_embed=0.1,
        dropout_p_hidden=0.2,
        seed=3,
    ),
}


def _large_data() -> SessionData:
    """2,500 sessions of 2-11 events over 2,950 of 3,000 items, popularity-skewed: 882
    training steps of 32 rows in two epochs, with 256 shared negatives a step."""
    rng = np.random.default_rng(0)
    popularity = rng.pareto(1.0, LARGE_ITEMS - 50) + 0.1
    popularity /= popularity.sum()
    sessions = [
        list(rng.choice(LARGE_ITEMS - 50, size=rng.integers(2, 12), p=popularity))
        for _ in range(2500)
    ]
    return SessionData.from_sessions(sessions)


def _train_large(case: str, backward: str, dtype: torch.dtype) -> tuple[dict, np.ndarray]:
    config, data = LARGE_CASES[case], _large_data()
    support = np.bincount(data.item_idx, minlength=LARGE_ITEMS)
    model = GRU4Rec.from_config(LARGE_ITEMS, config).to(dtype)
    losses = _Losses()
    fit(
        model,
        data,
        config,
        item_support=support,
        callbacks=[losses],
        num_threads=1,
        backward=backward,
    )
    return model.state_dict(), np.array(losses.values)


@pytest.fixture(scope="module")
def autograd_large() -> dict[str, tuple[dict, np.ndarray]]:
    """The autograd step's float32 training of each large case (the reference)."""
    return {case: _train_large(case, "autograd", torch.float32) for case in LARGE_CASES}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(LARGE_CASES))
def test_every_backend_trains_a_large_model_like_autograd(
    case: str, backend: str, autograd_large: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # float32 over 882 steps: each step's arithmetic differs from autograd's by a few ulp
    # (the loops' exp polynomial, the AVX-512 1/sqrt estimate, sums in another order), and
    # Adagrad carries that forward. Measured: losses within 1e-6 relative and parameters
    # within 2.5e-5 of each tensor's largest magnitude on every backend; the bounds below
    # leave 4-10x room. A real defect (a missed bias, a wrong gradient row) moves both by
    # orders of magnitude more.
    _use_backend(backend, monkeypatch)
    state, losses = _train_large(case, "fast", torch.float32)
    reference_state, reference_losses = autograd_large[case]
    assert len(losses) == len(reference_losses) >= 800
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    for name, value in reference_state.items():
        error = (state[name] - value).abs().max() / value.abs().max()
        assert error < 1e-4, f"{name}: {error:.2e} of its largest magnitude"


def test_torch_backend_matches_autograd_to_rounding_on_the_large_model() -> None:
    # In float64 the hand-derived step and autograd agree to rounding (no float32 drift).
    state, losses = _train_large("xe-logq-shared", "fast", torch.float64)
    reference_state, reference_losses = _train_large("xe-logq-shared", "autograd", torch.float64)
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-10)
    for name, value in reference_state.items():
        torch.testing.assert_close(state[name], value, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_compiled_backends_train_what_the_torch_backend_trains(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Backend against backend from the same random state (negatives, dropout masks):
    # the compiled loops of each instruction set against the torch operations.
    _use_backend("torch", monkeypatch)
    torch_state, torch_losses = _train_large("xe-logq-shared", "fast", torch.float32)
    _use_backend(backend, monkeypatch)
    state, losses = _train_large("xe-logq-shared", "fast", torch.float32)
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-5)
    for name, value in torch_state.items():
        error = (state[name] - value).abs().max() / value.abs().max()
        assert error < 1e-4, f"{name}: {error:.2e} of its largest magnitude"
