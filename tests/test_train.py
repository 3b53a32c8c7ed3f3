"""Training: one step against a hand computation, resets, determinism, divergence, learning."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gru4rec.errors import TrainingDivergedError
from gru4rec.network.batching import session_parallel_steps
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import SessionData
from gru4rec.network.fast_step import FastStep
from gru4rec.network.model import GRU4Rec
from gru4rec.network.sampling import NegativeSampler
from gru4rec.network.train import (
    AutogradStep,
    Callback,
    EpochStats,
    FitResult,
    diverging_epoch,
    fit,
)
from gru4rec.scoring.evaluate import evaluate

N_ITEMS = 12


def _config(**changes: object) -> GRU4RecConfig:
    base = {
        "layers": (6,),
        "batch_size": 2,
        "n_sample": 3,
        "sample_cache_size": 4,
        "n_epochs": 1,
        "dropout_p_hidden": 0.0,
        "learning_rate": 0.1,
        "momentum": 0.5,
        "sample_alpha": 0.5,
        "logq": 1.0,
        "seed": 3,
    }
    return GRU4RecConfig(**{**base, **changes})  # type: ignore[arg-type]


SUPPORT = np.arange(1, N_ITEMS + 1)


@pytest.mark.parametrize("form", ["counts", "normalised"])
def test_one_step_matches_a_hand_computation(form: str) -> None:
    # Two sessions of two events and two slots: exactly one step.
    data = SessionData.from_sessions([[1, 2], [3, 4]])
    config = _config(logq_form=form)
    model = GRU4Rec.from_config(N_ITEMS, config)
    reference = copy.deepcopy(model)
    fit(model, data, config, item_support=SUPPORT, num_threads=1)

    # The same step by hand: inputs [1, 3], targets [2, 4], the sampler's first negatives.
    negatives = NegativeSampler(SUPPORT, 0.5, 3, 4, seed=3).next()
    columns = torch.cat([torch.tensor([2, 4]), negatives])
    weight, bias = reference.item_weight, reference.item_bias
    layer = reference.gru_layers[0]
    assert layer.weight_input is not None
    x = weight[torch.tensor([1, 3])]
    h = torch.zeros(2, 6)
    gates = x @ layer.weight_input + layer.bias
    gates_h = h @ layer.weight_hidden_rz  # zero here, but it is part of the graph
    r, z = (
        torch.sigmoid(gates[:, :6] + gates_h[:, :6]),
        torch.sigmoid(gates[:, 6:12] + gates_h[:, 6:]),
    )
    c = torch.tanh(gates[:, 12:] + (r * h) @ layer.weight_hidden_c)
    out = (1 - z) * h + z * c
    scores = out @ weight[columns].T + bias[columns, 0]
    if form == "counts":  # the reference's: log support, alpha * log support
        p_data, p_sample = SUPPORT.astype(float), np.sqrt(SUPPORT)
    else:  # each column's own sampling probability
        p_data = SUPPORT / SUPPORT.sum()
        p_sample = np.sqrt(SUPPORT) / np.sqrt(SUPPORT).sum()
    log_q = torch.tensor(
        np.log(np.r_[p_data[[2, 4]], p_sample[negatives.numpy()]]), dtype=torch.float32
    )
    loss = F.cross_entropy(scores - log_q, torch.arange(2))  # mean over the 2 rows
    loss.backward()

    for name, before in reference.named_parameters():
        after = dict(model.named_parameters())[name]
        grad = before.grad
        assert grad is not None
        # First Adagrad-momentum step from zero state: v = -lr g / sqrt(g^2 + eps).
        expected = before.detach() - 0.1 * grad / torch.sqrt(grad**2 + 1e-6)
        if name.startswith("item_"):
            # Sparse rows: the rows no item touched must not move at all.
            rows = set(torch.cat([torch.tensor([1, 3]), columns]).tolist())
            untouched = torch.tensor([i not in rows for i in range(N_ITEMS)])
            assert torch.equal(after[untouched], before.detach()[untouched]), name
        assert torch.allclose(after, expected, atol=1e-5), name


@pytest.mark.parametrize("step_class", [FastStep, AutogradStep])
def test_hidden_is_reset_per_slot_and_carried_otherwise(
    step_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spy on the hidden state each step receives.
    data = SessionData.from_sessions([[0, 1, 2], [3, 4], [5, 6, 7, 8], [9, 10]])
    config = _config(dropout_p_hidden=0.3)
    model = GRU4Rec.from_config(N_ITEMS, config)
    seen: list[torch.Tensor] = []
    original = step_class.loss

    def spy(self: object, inputs: torch.Tensor, targets: torch.Tensor, hidden: list) -> tuple:
        seen.append(hidden[0].detach().clone())
        return original(self, inputs, targets, hidden)

    monkeypatch.setattr(step_class, "loss", spy)
    backward = "fast" if step_class is FastStep else "autograd"
    fit(model, data, config, item_support=SUPPORT, num_threads=1, backward=backward)
    steps = list(session_parallel_steps(data, 2))
    assert [h.shape[0] for h in seen] == [len(s.inputs) for s in steps]  # shrinking batch
    for hidden, step in zip(seen, steps, strict=True):
        for row, is_new in enumerate(step.reset):
            assert bool(torch.all(hidden[row] == 0)) == bool(is_new)


def test_same_seed_same_model_different_seed_different_model() -> None:
    rng = np.random.default_rng(0)
    data = SessionData.from_sessions([list(rng.integers(0, N_ITEMS, 5)) for _ in range(30)])
    results = []
    for seed in (1, 1, 2):
        config = _config(seed=seed, dropout_p_hidden=0.3, n_epochs=2)
        model = GRU4Rec.from_config(N_ITEMS, config)
        fit(model, data, config, item_support=SUPPORT, num_threads=1)
        results.append(model.item_weight.detach().clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_nan_loss_raises_before_the_update() -> None:
    data = SessionData.from_sessions([[1, 2, 3], [3, 4]])
    config = _config()
    model = GRU4Rec.from_config(N_ITEMS, config)
    with torch.no_grad():
        model.gru_layers[0].bias[0] = float("nan")
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, data, config, item_support=SUPPORT, num_threads=1)
    assert (info.value.epoch, info.value.step) == (0, 0)


def _epochs(*losses: float) -> list[EpochStats]:
    return [EpochStats(i, loss, 10, 1.0, 10.0) for i, loss in enumerate(losses)]


def test_diverging_epoch_is_the_first_tenfold_rise_over_the_lowest_earlier_loss() -> None:
    assert diverging_epoch(_epochs(0.49, 146.0, 232.0, 3316.0)) == 1
    assert diverging_epoch(_epochs(5.0, 0.5, 4.9, 5.1)) == 3  # 5.1 > 10 x 0.5; 4.9 is not
    assert diverging_epoch(_epochs(9.0, 4.0, 3.5, 3.6)) is None  # falling, then a wobble
    assert diverging_epoch(_epochs(300.0, 2.0)) is None  # a bad first epoch is no divergence
    assert diverging_epoch([]) is None
    assert FitResult(epochs=tuple(_epochs(1.0, 11.0))).diverging_epoch == 1


def _bpr_max_run() -> tuple[SessionData, GRU4RecConfig]:
    """Three short sessions and a three-epoch BPR-max config that trains without diverging."""
    data = SessionData.from_sessions([[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11]])
    return data, _config(n_epochs=3, loss="bpr-max", bpreg=1.0, logq=0.0, learning_rate=0.01)


class _BlowUpAfterFirstEpoch(Callback):
    """Scales the item vectors 100x after epoch 0, as a run whose scores ran away would."""

    def __init__(self, model: GRU4Rec) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, stats: EpochStats) -> None:
        if epoch == 0:
            with torch.no_grad():
                self.model.item_weight.mul_(100.0)


def test_a_diverging_training_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    data, config = _bpr_max_run()
    model = GRU4Rec.from_config(N_ITEMS, config)
    with caplog.at_level("WARNING", logger="gru4rec.network.train"):
        result = fit(
            model,
            data,
            config,
            item_support=SUPPORT,
            num_threads=1,
            callbacks=[_BlowUpAfterFirstEpoch(model)],
        )
    assert result.diverging_epoch == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "epoch 1" in warnings[0] and "diverging" in warnings[0]


def test_a_diverging_training_is_tagged_in_mlflow(tmp_path: Path) -> None:
    import mlflow

    from gru4rec.serving import tracking

    data, config = _bpr_max_run()
    ids = {}
    for name in ("diverging", "healthy"):
        model = GRU4Rec.from_config(N_ITEMS, config)
        blow_up = [_BlowUpAfterFirstEpoch(model)] if name == "diverging" else []
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        with tracking.start_run(uri, "gru4rec-tests", name) as run:
            callbacks = [tracking.MlflowCallback(), *blow_up]
            fit(model, data, config, item_support=SUPPORT, num_threads=1, callbacks=callbacks)
            ids[name] = run.info.run_id
    client = mlflow.MlflowClient()
    assert client.get_run(ids["diverging"]).data.tags["diverging_epoch"] == "1"
    assert "diverging_epoch" not in client.get_run(ids["healthy"]).data.tags


def test_a_healthy_training_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    data, config = _bpr_max_run()
    with caplog.at_level("WARNING", logger="gru4rec.network.train"):
        result = fit(
            GRU4Rec.from_config(N_ITEMS, config), data, config, item_support=SUPPORT, num_threads=1
        )
    assert result.diverging_epoch is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.losses: list[float] = []

    def on_train_start(self, config: GRU4RecConfig) -> None:
        self.events.append("train_start")

    def on_epoch_start(self, epoch: int, n_steps: int) -> None:
        self.events.append(f"epoch_start {epoch} {n_steps}")

    def on_step_end(self, epoch: int, step: int, loss: float) -> None:
        self.losses.append(loss)

    def on_epoch_end(self, epoch: int, stats: EpochStats) -> None:
        self.events.append(f"epoch_end {epoch} {stats.n_events}")

    def on_train_end(self, result: FitResult) -> None:
        self.events.append(f"train_end {len(result.epochs)}")


def test_callbacks_and_epoch_stats() -> None:
    data = SessionData.from_sessions([[0, 1, 2], [3, 4], [5, 6, 7, 8], [9, 10]])
    config = _config(n_epochs=2)
    recorder = Recorder()
    result = fit(
        GRU4Rec.from_config(N_ITEMS, config),
        data,
        config,
        item_support=SUPPORT,
        callbacks=[recorder],
    )
    assert recorder.events == [
        "train_start",
        "epoch_start 0 4",
        "epoch_end 0 7",
        "epoch_start 1 4",
        "epoch_end 1 7",
        "train_end 2",
    ]
    assert len(recorder.losses) == 8
    # The epoch loss is per event: steps weighted by their rows (2, 2, 2, 1).
    weights = np.array([2, 2, 2, 1])
    assert result.epochs[0].loss == pytest.approx(np.dot(recorder.losses[:4], weights) / 7)
    assert result.epochs[0].events_per_s > 0 and result.final_loss == result.epochs[1].loss


def _walks(rng: np.random.Generator, n_sessions: int, n_items: int) -> SessionData:
    """Sessions that walk i -> i+1 (mod n_items) from a random start: a learnable rule."""
    sessions = []
    for _ in range(n_sessions):
        start, length = rng.integers(n_items), rng.integers(2, 8)
        sessions.append([int(start + j) % n_items for j in range(length)])
    return SessionData.from_sessions(sessions)


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_learns_a_next_item_rule(loss: str) -> None:
    rng = np.random.default_rng(0)
    n_items = 60
    train, test = _walks(rng, 1500, n_items), _walks(rng, 200, n_items)
    config = _config(
        layers=(32,),
        batch_size=32,
        n_sample=32,
        n_epochs=2,
        learning_rate=0.1,
        momentum=0.2,
        loss=loss,
        bpreg=0.5 if loss == "bpr-max" else 0.0,
        logq=1.0 if loss == "cross-entropy" else 0.0,
        elu_param=0.5 if loss == "bpr-max" else 0.0,
    )
    support = np.bincount(train.item_idx, minlength=n_items)
    model = GRU4Rec.from_config(n_items, config)
    before = evaluate(model, test, cutoffs=(5,), ties="conservative")["recall@5"]
    fit(model, train, config, item_support=support, num_threads=1)
    after = evaluate(model, test, cutoffs=(5,), ties="conservative")["recall@5"]
    assert before < 0.3  # random: about 5 / 60
    assert after > 0.9


@pytest.mark.parametrize("embedding", ["shared", "separate", "none"])
@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
@pytest.mark.parametrize("n_sample", [0, 5])
def test_every_model_option_trains_and_moves_only_touched_rows(
    embedding: str, loss: str, n_sample: int
) -> None:
    # Items 10 and 11 never occur and, without sampling, are never scored: they must not move.
    rng = np.random.default_rng(1)
    data = SessionData.from_sessions([list(rng.integers(0, 10, 4)) for _ in range(12)])
    config = _config(
        layers=(8, 6),
        embedding=embedding,
        embedding_size=4 if embedding == "separate" else 0,
        loss=loss,
        n_sample=n_sample,
        dropout_p_embed=0.2,
        dropout_p_hidden=0.2,
        n_epochs=2,
        bpreg=1.0,
        elu_param=0.5 if loss == "bpr-max" else 0.0,
    )
    model = GRU4Rec.from_config(N_ITEMS, config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = fit(model, data, config, item_support=SUPPORT, num_threads=1)
    assert all(np.isfinite(e.loss) for e in result.epochs)
    for name, parameter in model.named_parameters():
        assert not torch.equal(parameter, before[name]), name
        if n_sample == 0 and parameter.shape[0] == N_ITEMS:
            assert torch.equal(parameter[10:], before[name][10:]), name


def test_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    config = _config()
    data = SessionData.from_sessions([[1, 2], [3, 4]])
    fit(GRU4Rec.from_config(N_ITEMS, config), data, config, item_support=SUPPORT, num_threads=1)
    assert torch.get_num_threads() == before


def test_default_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import gru4rec.network.train as train

    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for busy, expected in [(0.0, 4), (0.3, 4), (1.0, 3), (2.9, 1), (7.5, 1)]:
        monkeypatch.setattr(train, "_busy_cores", lambda seconds, busy=busy: busy)
        assert train.default_threads() == expected, busy


def test_busy_cores_measures_the_machine_s_load() -> None:
    from gru4rec.network.train import _busy_cores

    busy = _busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 0.5
