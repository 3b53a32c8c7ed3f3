"""Checkpoints: roundtrip with identical scores, atomic replacement, named errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from gru4rec.errors import CheckpointError, ConfigError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.model import GRU4Rec
from gru4rec.serving.checkpoint import (
    load_checkpoint,
    read_optimizer_state,
    resolve_device,
    save_checkpoint,
)

N_ITEMS = 15
CONFIG = GRU4RecConfig(layers=(8, 4), embedding="separate", embedding_size=5, seed=9)


def _items(n_items: int = N_ITEMS) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [f"item-{i}" for i in range(n_items)],
            "item_idx": range(n_items),
            "support": [3] * n_items,
        }
    )


def _saved(tmp_path: Path) -> tuple[Path, GRU4Rec]:
    model = GRU4Rec.from_config(N_ITEMS, CONFIG)
    with torch.no_grad():
        model.item_bias.uniform_(-1, 1)  # not the initial zeros, so loading is really tested
    return save_checkpoint(tmp_path / "model", model, CONFIG, _items(), {"data": "x"}), model


def _scores(model: GRU4Rec) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        output, _ = model.forward_step(torch.tensor([0, 4, 14]), model.init_hidden(3, "cpu"))
        return model.score_all(output)


def test_roundtrip_gives_the_same_scores(tmp_path: Path) -> None:
    model_dir, model = _saved(tmp_path)
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "items.parquet",
        "weights.pt",
    ]
    loaded, config, items = load_checkpoint(model_dir, device="cpu")
    assert config == CONFIG
    assert items["item_id"].to_list() == _items()["item_id"].to_list()
    assert torch.equal(_scores(loaded), _scores(model))
    assert not loaded.training
    assert json.loads((model_dir / "config.json").read_text())["extra"] == {"data": "x"}


def test_reset_after_roundtrip_and_models_saved_before_gru_form(tmp_path: Path) -> None:
    config = GRU4RecConfig(layers=(6,), gru_form="reset_after", seed=3)
    model = GRU4Rec.from_config(N_ITEMS, config)
    with torch.no_grad():
        for layer in model.gru_layers:
            assert layer.bias_hidden_c is not None
            layer.bias_hidden_c.uniform_(-1, 1)
    model_dir = save_checkpoint(tmp_path / "after", model, config, _items())
    loaded, loaded_config, _ = load_checkpoint(model_dir, device="cpu")
    assert loaded_config.gru_form == "reset_after"
    assert torch.equal(_scores(loaded), _scores(model))

    # A config.json written before the option existed has no gru_form: the paper's form.
    old_dir, old_model = _saved(tmp_path)
    meta = json.loads((old_dir / "config.json").read_text())
    del meta["config"]["gru_form"]
    (old_dir / "config.json").write_text(json.dumps(meta))
    loaded, loaded_config, _ = load_checkpoint(old_dir, device="cpu")
    assert loaded_config.gru_form == "reset_before"
    assert torch.equal(_scores(loaded), _scores(old_model))


def test_optimizer_state_is_kept_beside_the_weights(tmp_path: Path) -> None:
    model = GRU4Rec.from_config(N_ITEMS, CONFIG)
    state = {name: (torch.rand_like(p), torch.rand_like(p)) for name, p in model.named_parameters()}
    model_dir = save_checkpoint(tmp_path / "m", model, CONFIG, _items(), optimizer_state=state)
    loaded = read_optimizer_state(model_dir)
    assert loaded is not None and loaded.keys() == state.keys()
    for name, (acc, velocity) in state.items():
        assert torch.equal(loaded[name][0], acc) and torch.equal(loaded[name][1], velocity)
    assert read_optimizer_state(_saved(tmp_path)[0]) is None  # saved without one
    (model_dir / "optimizer.pt").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match=r"optimizer\.pt"):
        read_optimizer_state(model_dir)


def test_saving_again_replaces_the_directory_and_leaves_no_temporaries(tmp_path: Path) -> None:
    model_dir, _ = _saved(tmp_path)
    (model_dir / "stale.txt").write_text("from an older model")
    _saved(tmp_path)
    assert not (model_dir / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("name", ["weights.pt", "config.json", "items.parquet"])
def test_missing_file_is_named(tmp_path: Path, name: str) -> None:
    model_dir, _ = _saved(tmp_path)
    (model_dir / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} is missing"):
        load_checkpoint(model_dir, device="cpu")


@pytest.mark.parametrize("name", ["weights.pt", "config.json", "items.parquet"])
def test_corrupt_file_is_named(tmp_path: Path, name: str) -> None:
    model_dir, _ = _saved(tmp_path)
    (model_dir / name).write_bytes(b"\x00garbage{")
    with pytest.raises(CheckpointError, match=f"{name} is corrupt"):
        load_checkpoint(model_dir, device="cpu")


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    model_dir, _ = _saved(tmp_path)
    other = GRU4Rec.from_config(
        N_ITEMS, GRU4RecConfig(layers=(8, 6), embedding="separate", embedding_size=5)
    )
    torch.save(other.state_dict(), model_dir / "weights.pt")
    with pytest.raises(
        CheckpointError, match=r"weights\.pt does not match.*item_weight: expected \(15, 4\)"
    ):
        load_checkpoint(model_dir, device="cpu")


def test_item_map_that_does_not_fit_the_model(tmp_path: Path) -> None:
    model_dir, _ = _saved(tmp_path)
    _items(N_ITEMS + 2).write_parquet(model_dir / "items.parquet")
    with pytest.raises(CheckpointError, match=r"items\.parquet: the item map has 17 items"):
        load_checkpoint(model_dir, device="cpu")


def test_saving_with_a_wrong_item_map_is_refused(tmp_path: Path) -> None:
    model = GRU4Rec.from_config(N_ITEMS, CONFIG)
    with pytest.raises(CheckpointError, match="item map has 3 items"):
        save_checkpoint(tmp_path / "model", model, CONFIG, _items(3))
    assert not (tmp_path / "model").exists()


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_checkpoint(tmp_path / "nothing")


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
