"""The repeat-aware GRU4Rec: its loss by hand, its gradients against finite differences, its
scores as a distribution, and what training it adds on repeat targets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gru4rec.errors import ConfigError
from gru4rec.jobs.train_evaluate import evaluate_split, train_model
from gru4rec.network.config import apply_overrides, get_preset
from gru4rec.network.data import load_items, load_split
from gru4rec.network.families import build_network
from gru4rec.network.repeat import RepeatGRU4Rec
from gru4rec.scoring.contract import session_batch
from gru4rec.scoring.neural import RepeatGRU4RecScorer, as_scorer
from gru4rec.serving.saved_models import load_scorer, model_family


def hand_model() -> RepeatGRU4Rec:
    model = RepeatGRU4Rec(3, (2,), repeat_window=2, seed=0).double()
    with torch.no_grad():
        exact = torch.float64  # 0.2 and 0.1 are not exact in float32
        model.item_weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=exact))
        model.gate_weight.copy_(torch.tensor([0.5, -0.5], dtype=exact))
        model.gate_bias.fill_(0.1)
        model.recency_bias.copy_(torch.tensor([0.2, -0.1], dtype=exact))  # most recent, one back
    return model


def test_mixture_loss_by_hand() -> None:
    model = hand_model()
    output = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    window = torch.tensor([[1, 3]])  # item 0, then item 2 (most recent)
    scores = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)  # target 0 in column 0
    loss = model.mixture_loss(output, window, scores, torch.tensor([0]))
    explore = math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(3))
    gate = 1 / (1 + math.exp(0.4))  # sigmoid(0.5 * 1 - 0.5 * 2 + 0.1)
    # Attention: item 0 one back, h.W0 - 0.1 = 0.9; item 2 most recent, h.W2 + 0.2 = 3.2.
    repeat = math.exp(0.9) / (math.exp(0.9) + math.exp(3.2))
    assert loss.item() == pytest.approx(-math.log((1 - gate) * explore + gate * repeat), rel=1e-12)
    # A target outside the window: only the explore part, and no NaN in the gradients.
    outside = model.mixture_loss(output, torch.tensor([[0, 3]]), scores, torch.tensor([0]))
    assert outside.item() == pytest.approx(-math.log((1 - gate) * explore), rel=1e-12)


def test_gradients_against_finite_differences() -> None:
    torch.manual_seed(0)
    model = RepeatGRU4Rec(6, (4,), repeat_window=3, seed=1).double()
    with torch.no_grad():
        model.gate_weight.normal_()
        model.recency_bias.normal_()
    window = torch.tensor([[0, 2, 5], [1, 1, 4], [0, 0, 3]])  # repeats, short windows
    targets = torch.tensor([1, 0, 5])  # in the window, in it twice, not in it
    output = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    scores = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(5, dtype=torch.float64)

    def loss(
        out: torch.Tensor, sc: torch.Tensor, gate: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            model.gate_weight.copy_(gate)
            model.recency_bias.copy_(bias)
        model.gate_weight.requires_grad_(False)
        return model.mixture_loss(out, window, sc, targets, shift)

    assert torch.autograd.gradcheck(
        lambda out, sc: model.mixture_loss(out, window, sc, targets, shift), (output, scores)
    )
    # The head's own parameters: autograd against central differences.
    value = model.mixture_loss(output.detach(), window, scores.detach(), targets, shift)
    value.backward()
    for parameter in (model.gate_weight, model.gate_bias, model.recency_bias):
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        for index in range(parameter.numel()):
            with torch.no_grad():
                original = parameter.view(-1)[index].item()
                parameter.view(-1)[index] = original + 1e-6
                up = model.mixture_loss(output.detach(), window, scores.detach(), targets, shift)
                parameter.view(-1)[index] = original - 1e-6
                down = model.mixture_loss(output.detach(), window, scores.detach(), targets, shift)
                parameter.view(-1)[index] = original
            numeric = (up - down).item() / 2e-6
            assert parameter.grad.view(-1)[index].item() == pytest.approx(numeric, abs=1e-7)


def test_scores_are_a_distribution_over_every_item() -> None:
    model = RepeatGRU4Rec(8, (5,), repeat_window=4, seed=2).eval()
    scorer = as_scorer(model)
    assert isinstance(scorer, RepeatGRU4RecScorer) and not scorer.inner_product
    with torch.inference_mode():
        batch = session_batch(scorer, [[1, 3, 1], [7], [2, 4, 6, 0, 5]])  # 5 items: window of 4
        log_p = scorer.score(batch)
    torch.testing.assert_close(torch.logsumexp(log_p, dim=1), torch.zeros(3, dtype=log_p.dtype))
    assert batch.state[-1].tolist()[2] == [5, 7, 1, 6]  # the last four of 2, 4, 6, 0, 5 (+1)


def test_config_checks_and_model_choice() -> None:
    config = apply_overrides(get_preset("rsc15"), {"repeat_window": "5"})
    assert isinstance(build_network(10, config), RepeatGRU4Rec)
    assert not isinstance(build_network(10, get_preset("rsc15")), RepeatGRU4Rec)
    with pytest.raises(ConfigError, match="cross-entropy"):
        apply_overrides(get_preset("diginetica"), {"repeat_window": "5"})  # BPR-max
    with pytest.raises(ConfigError, match="repeat_window"):
        apply_overrides(get_preset("rsc15"), {"repeat_window": "-1"})


def test_training_adds_what_plain_gru4rec_misses_on_repeat_targets(
    tmp_path: Path, tiny_revisits: Path
) -> None:
    settings = {"n_epochs": "3", "layers": "24", "n_sample": "32", "batch_size": "16"}
    plain_config = apply_overrides(get_preset("rsc15"), settings)
    repeat_config = apply_overrides(plain_config, {"repeat_window": "8"})
    plain, items, _ = train_model(
        tiny_revisits,
        plain_config,
        tmp_path / "plain",
        device="cpu",
        num_threads=1,
        split="train_tr",
    )
    repeat, _, _ = train_model(
        tiny_revisits,
        repeat_config,
        tmp_path / "repeat",
        device="cpu",
        num_threads=1,
        split="train_tr",
    )
    plain_metrics = evaluate_split(plain, items, tiny_revisits, split="valid")
    repeat_metrics = evaluate_split(repeat, items, tiny_revisits, split="valid")
    assert repeat_metrics["repeat_mrr@20"] > plain_metrics["repeat_mrr@20"] + 0.05
    assert repeat_metrics["mrr@20"] > plain_metrics["mrr@20"]
    # Saved as its own family, loaded without pickles, scored the same.
    assert model_family(tmp_path / "repeat") == "repeat"
    loaded, _ = load_scorer(tmp_path / "repeat", device="cpu")
    again = evaluate_split(loaded, items, tiny_revisits, split="valid")
    assert again["mrr@20"] == pytest.approx(repeat_metrics["mrr@20"])
    valid, _ = load_split(tiny_revisits, "valid", item_ids=load_items(tiny_revisits)["item_id"])
    assert np.mean(valid.session_lengths) > 2


@pytest.fixture(scope="module")
def tiny_revisits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gru4rec.pipelines.options import PrepareOptions
    from gru4rec.pipelines.prepare import prepare
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

    root = tmp_path_factory.mktemp("repeat")
    spec = SyntheticLog(n_sessions=1500, n_items=60, days=10, seed=4, revisit=0.6, follow=0.3)
    log = write_click_log(generate_clicks(spec), root / "clicks.tsv", "gru4rec-tsv")
    prepare([log], root / "prepared", resolve_spec("gru4rec-tsv"), PrepareOptions(valid_days=1))
    return root / "prepared"
