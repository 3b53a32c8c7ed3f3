"""The model: reference initialisation, GRU math by hand, sparse scoring, embedding modes."""

from __future__ import annotations

import math

import pytest
import torch

from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.model import GRU4Rec, GRULayer

N_ITEMS = 40


def _model(**kwargs: object) -> GRU4Rec:
    return GRU4Rec(N_ITEMS, **{"layers": (8,), "seed": 0, **kwargs})  # type: ignore[arg-type]


def test_initialisation_is_glorot_uniform_per_gate_block() -> None:
    model = GRU4Rec(1000, layers=(300, 200), seed=0)
    item_bound = math.sqrt(6 / (1000 + 200))
    assert 0.95 * item_bound < model.item_weight.abs().max() <= item_bound
    assert torch.count_nonzero(model.item_bias) == 0
    first, second = model.gru_layers
    assert first.weight_input is not None and second.weight_input is not None
    # Per block: fan_out is one gate's width, not three (a whole-matrix Glorot would be smaller).
    assert 0.95 * math.sqrt(6 / (200 + 300)) < first.weight_input.abs().max() <= math.sqrt(6 / 500)
    assert 0.95 * math.sqrt(6 / 500) < second.weight_input.abs().max() <= math.sqrt(6 / 500)
    assert 0.95 * math.sqrt(6 / 400) < second.weight_hidden_rz.abs().max() <= math.sqrt(6 / 400)
    assert 0.95 * math.sqrt(6 / 400) < second.weight_hidden_c.abs().max() <= math.sqrt(6 / 400)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in model.gru_layers)


def test_same_seed_same_weights() -> None:
    a, b, c = _model(seed=1), _model(seed=1), _model(seed=2)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.item_weight, c.item_weight)


def _gru_by_hand(
    x: torch.Tensor, h: torch.Tensor, layer: GRULayer, gates_x: torch.Tensor
) -> torch.Tensor:
    size = h.shape[1]
    w_hr, w_hz = layer.weight_hidden_rz[:, :size], layer.weight_hidden_rz[:, size:]
    r = torch.sigmoid(gates_x[:, :size] + h @ w_hr)
    z = torch.sigmoid(gates_x[:, size : 2 * size] + h @ w_hz)
    c = torch.tanh(gates_x[:, 2 * size :] + (r * h) @ layer.weight_hidden_c)
    return (1 - z) * h + z * c


def test_forward_step_is_the_gru_of_the_paper() -> None:
    model = _model(layers=(8, 6)).eval()
    with torch.no_grad():
        for layer in model.gru_layers:
            layer.bias.uniform_(-0.5, 0.5)  # exercise the biases too
        inputs = torch.tensor([3, 7, 3])
        hidden = [torch.randn(3, 8), torch.randn(3, 6)]
        output, new_hidden = model.forward_step(inputs, hidden)

        first, second = model.gru_layers
        assert first.weight_input is not None and second.weight_input is not None
        x = model.item_weight[inputs]  # shared: the input embedding IS the item matrix
        h1 = _gru_by_hand(x, hidden[0], first, x @ first.weight_input + first.bias)
        h2 = _gru_by_hand(h1, hidden[1], second, h1 @ second.weight_input + second.bias)
    assert torch.allclose(new_hidden[0], h1, atol=1e-6)
    assert torch.allclose(new_hidden[1], h2, atol=1e-6)
    assert output is new_hidden[1]


def test_reset_after_layer_is_torch_gru_cell() -> None:
    # torch.nn.GRUCell computes the reset_after form with h' = (1 - z') n + z' h, so its
    # update gate z' = 1 - z: its z weights and bias are ours negated.
    torch.manual_seed(0)
    layer = GRULayer(5, 4, "reset_after")
    layer.reset_parameters()
    assert layer.bias_hidden_c is not None and layer.weight_input is not None
    with torch.no_grad():
        layer.bias.uniform_(-0.5, 0.5)
        layer.bias_hidden_c.uniform_(-0.5, 0.5)
    flip = torch.cat((torch.ones(4), -torch.ones(4), torch.ones(4)))  # r, z, candidate
    weight_hidden = torch.cat((layer.weight_hidden_rz, layer.weight_hidden_c), dim=1)
    cell = torch.nn.GRUCell(5, 4)
    with torch.no_grad():
        cell.weight_ih.copy_((layer.weight_input * flip).T)
        cell.weight_hh.copy_((weight_hidden * flip).T)
        cell.bias_ih.copy_(layer.bias * flip)
        cell.bias_hh.copy_(torch.cat((torch.zeros(8), layer.bias_hidden_c)))
        x, h = torch.randn(3, 5), torch.randn(3, 4)
        expected = cell(x, h)
        got = layer(layer.project_input(x), h)
    torch.testing.assert_close(got, expected)
    paper = GRULayer(5, 4)
    paper.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "bias_hidden_c"})
    with torch.no_grad():
        assert not torch.allclose(paper(paper.project_input(x), h), expected)  # forms differ


def test_score_items_matches_score_all_columns() -> None:
    model = _model()
    with torch.no_grad():
        model.item_bias.uniform_(-1, 1)
    output = torch.randn(4, 8)
    items = torch.tensor([5, 0, 39, 5])
    all_scores = model.score_all(output)
    assert all_scores.shape == (4, N_ITEMS)
    expected = output @ model.item_weight[items].T + model.item_bias[items, 0]
    assert torch.allclose(model.score_items(output, items), expected, atol=1e-6)
    assert torch.allclose(all_scores[:, items], expected, atol=1e-6)


def test_training_gradients_are_row_sparse_and_touch_only_used_items() -> None:
    model = _model().train()
    hidden = model.init_hidden(2, "cpu")
    output, _ = model.forward_step(torch.tensor([1, 2]), hidden)
    model.score_items(output, torch.tensor([3, 4, 5])).sum().backward()
    grad = model.item_weight.grad
    assert grad is not None and grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == {1, 2, 3, 4, 5}  # inputs + scored
    bias_grad = model.item_bias.grad
    assert bias_grad is not None and set(bias_grad.coalesce().indices()[0].tolist()) == {3, 4, 5}
    assert all(not layer.bias.grad.is_sparse for layer in model.gru_layers)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("embedding", "embedding_size", "input_rows"),
    [("shared", 0, "item_weight"), ("separate", 5, "input_embedding"), ("none", 0, "input_weight")],
)
def test_embedding_modes(embedding: str, embedding_size: int, input_rows: str) -> None:
    model = _model(layers=(8, 6), embedding=embedding, embedding_size=embedding_size).eval()
    table = getattr(model, input_rows)
    expected_width = {"shared": 6, "separate": 5, "none": 3 * 8}[embedding]
    assert table.shape == (N_ITEMS, expected_width)
    hidden = model.init_hidden(2, "cpu")
    assert [h.shape for h in hidden] == [(2, 8), (2, 6)]
    before, _ = model.forward_step(torch.tensor([1, 2]), hidden)
    with torch.no_grad():
        table[1] += 1.0  # only slot 0's input row changes
    after, _ = model.forward_step(torch.tensor([1, 2]), hidden)
    assert not torch.allclose(before[0], after[0])
    assert torch.allclose(before[1], after[1])
    if embedding == "none":
        assert model.gru_layers[0].weight_input is None


def test_hidden_dropout_is_carried_and_inverted() -> None:
    model = _model(layers=(200,), dropout_p_hidden=0.5).train()
    torch.manual_seed(0)
    output, hidden = model.forward_step(torch.tensor([1, 2]), model.init_hidden(2, "cpu"))
    assert hidden[0] is output  # the dropped-out output is the carried state
    dropped = (output == 0).float().mean().item()
    assert 0.35 < dropped < 0.65
    model.eval()
    clean, _ = model.forward_step(torch.tensor([1, 2]), model.init_hidden(2, "cpu"))
    kept = output != 0
    assert torch.allclose(output[kept], 2 * clean[kept], atol=1e-6)  # scaled by 1 / (1 - p)


def test_from_config() -> None:
    config = GRU4RecConfig(layers=(16, 4), embedding="separate", embedding_size=3, seed=5)
    model = GRU4Rec.from_config(N_ITEMS, config)
    assert model.n_items == N_ITEMS and model.layers == (16, 4)
    assert model.input_embedding is not None and model.input_embedding.shape == (N_ITEMS, 3)
    assert torch.equal(model.item_weight, GRU4Rec.from_config(N_ITEMS, config).item_weight)
