"""Warm start: rows carried over by item_id, fresh rows for new items, the architecture
kept, the training window; `gru4rec train --warm-start` from a directory and from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import ConfigError, InputDataError
from gru4rec.network.config import GRU4RecConfig
from gru4rec.network.data import load_items, load_split
from gru4rec.network.model import GRU4Rec
from gru4rec.network.warm_start import (
    check_structure,
    warm_items,
    warm_optimizer_state,
    warm_start_model,
)

runner = CliRunner()
CONFIG = GRU4RecConfig(layers=(6,), embedding="separate", embedding_size=4, seed=3)


def _items(ids: list[str], support: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": ids,
            "item_idx": list(range(len(ids))),
            "support": support or [5] * len(ids),
        },
        schema={"item_id": pl.String, "item_idx": pl.Int64, "support": pl.Int64},
    )


def _trained_like(config: GRU4RecConfig, n_items: int) -> GRU4Rec:
    """A model whose every weight differs from a fresh one (as if trained)."""
    model = GRU4Rec.from_config(n_items, config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.rand_like(parameter) + 1.0)
    return model


def test_rows_follow_the_item_ids_and_new_items_start_fresh() -> None:
    old_items = _items(["a", "b", "c", "d"])
    old = _trained_like(CONFIG, 4)
    new_items = _items(["c", "a", "e"])
    model, report = warm_start_model(old, old_items, new_items, CONFIG)
    fresh = GRU4Rec.from_config(3, CONFIG)  # what a new model starts with
    for table in ("item_weight", "item_bias", "input_embedding"):
        new, before, start = getattr(model, table), getattr(old, table), getattr(fresh, table)
        assert torch.equal(new[0], before[2])  # c
        assert torch.equal(new[1], before[0])  # a
        assert torch.equal(new[2], start[2])  # e: as a new model would have it
    for name, value in old.gru.state_dict().items():
        assert torch.equal(model.gru.state_dict()[name], value), name
    assert (report.n_items, report.n_carried, report.n_new, report.n_dropped) == (3, 2, 1, 2)
    assert report.n_kept_missing == 0


def test_optimizer_state_follows_the_rows_too() -> None:
    old_items, new_items = _items(["a", "b", "c", "d"]), _items(["c", "a", "e"])
    old = _trained_like(CONFIG, 4)
    state = {
        name: (torch.rand_like(p) + 1, torch.rand_like(p)) for name, p in old.named_parameters()
    }
    model, _ = warm_start_model(old, old_items, new_items, CONFIG)
    carried = warm_optimizer_state(state, model, old_items, new_items)
    assert carried.keys() == state.keys()
    for table in ("item_weight", "item_bias", "input_embedding"):
        for part in (0, 1):
            assert torch.equal(carried[table][part][0], state[table][part][2])  # c
            assert torch.equal(carried[table][part][1], state[table][part][0])  # a
            assert not carried[table][part][2].any()  # e: new, from zero
    name = "gru.0.weight_hidden_rz"
    assert torch.equal(carried[name][0], state[name][0])


def test_missing_items_can_be_kept_with_support_zero() -> None:
    old_items = _items(["a", "b", "c", "d"])
    old = _trained_like(CONFIG, 4)
    items = warm_items(old_items, _items(["c", "a", "e"]), keep_missing=True)
    assert items["item_id"].to_list() == ["c", "a", "e", "b", "d"]
    assert items["item_idx"].to_list() == [0, 1, 2, 3, 4]
    assert items["support"].to_list() == [5, 5, 5, 0, 0]
    model, report = warm_start_model(old, old_items, items, CONFIG)
    assert torch.equal(model.item_weight[3], old.item_weight[1])  # b
    assert torch.equal(model.item_weight[4], old.item_weight[3])  # d
    assert (report.n_carried, report.n_new, report.n_dropped, report.n_kept_missing) == (
        4,
        1,
        0,
        2,
    )


def test_integer_item_ids_match_across_maps() -> None:
    old_items = pl.DataFrame({"item_id": [10, 20], "item_idx": [0, 1], "support": [1, 1]})
    new_items = pl.DataFrame({"item_id": [20, 30], "item_idx": [0, 1], "support": [1, 1]})
    old = _trained_like(CONFIG, 2)
    model, report = warm_start_model(old, old_items, new_items, CONFIG)
    assert torch.equal(model.item_weight[0], old.item_weight[1])
    assert report.n_carried == 1


@pytest.mark.parametrize(
    ("key", "value"), [("layers", (8,)), ("embedding", "shared"), ("gru_form", "reset_after")]
)
def test_the_architecture_must_not_change(key: str, value: object) -> None:
    changed = GRU4RecConfig(**{**CONFIG.to_dict(), "layers": CONFIG.layers, key: value})
    with pytest.raises(ConfigError, match=f"{key} is .* there and .* here"):
        check_structure(CONFIG, changed, "models:/x@champion")
    check_structure(
        CONFIG,
        GRU4RecConfig(**{**CONFIG.to_dict(), "layers": (6,), "n_epochs": 1, "learning_rate": 0.01}),
        "m",
    )


def test_window_keeps_the_last_days_sessions(tiny_prepared: Path) -> None:
    everything, _ = load_split(tiny_prepared, "train")
    recent, report = load_split(tiny_prepared, "train", window_days=2)
    events = pl.read_parquet(tiny_prepared / "train.parquet")
    starts = events.group_by("session_id").agg(pl.col("time").min())
    cutoff = events["time"].max() - 2 * 86400
    expected = events.filter(
        pl.col("session_id").is_in(starts.filter(pl.col("time") >= cutoff)["session_id"].implode())
    )
    assert report.n_events_read == expected.height
    assert 0 < recent.n_sessions < everything.n_sessions
    with pytest.raises(InputDataError, match="> 0 days"):
        load_split(tiny_prepared, "train", window_days=0)


def test_window_needs_timestamps(tiny_prepared: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.parquet", "items.parquet"):
        (data / name).write_bytes((tiny_prepared / name).read_bytes())
    manifest = json.loads((tiny_prepared / "manifest.json").read_text())
    manifest["source"]["time_col"] = None  # a log ordered by position only
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputDataError, match="no timestamps"):
        load_split(data, "train", window_days=3)


def test_train_warm_start_from_a_directory(
    tiny_prepared: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "warm"
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_prepared),
            "--out",
            str(out),
            "--warm-start",
            str(tiny_model),
            "--set",
            "n_epochs=1",
            "--window-days",
            "3",
            "--no-track",
            "--json",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "config.json").read_text())
    old_meta = json.loads((tiny_model / "config.json").read_text())
    assert meta["config"] == {**old_meta["config"], "n_epochs": 1}  # the old model's settings
    carried = meta["extra"]["warm_start"]
    assert carried["source"] == str(tiny_model)
    assert carried["n_carried"] == load_items(tiny_prepared).height
    assert meta["extra"]["window_days"] == 3
    assert carried["optimizer"] == "carried"  # tiny_model was saved with its optimiser state
    assert (out / "optimizer.pt").is_file()
    # One more epoch on top of a trained model beats one epoch from scratch, the same way.
    scratch = tmp_path / "scratch"
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_prepared),
            "--out",
            str(scratch),
            "--set",
            "n_epochs=1",
            *[
                "--set",
                "layers=32",
                "--set",
                "n_sample=64",
                "--set",
                "batch_size=16",
            ],  # tiny_model's
            "--window-days",
            "3",
            "--no-track",
            "--json",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    warm, cold = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("m", "s"))
    assert warm["recall@20"] > cold["recall@20"] and warm["mrr@20"] > cold["mrr@20"]


def test_train_warm_start_refuses_what_it_cannot_do(
    tiny_prepared: Path, tiny_model: Path, tmp_path: Path
) -> None:
    def train(*extra: str) -> str:
        result = runner.invoke(
            app, ["train", str(tiny_prepared), "--out", str(tmp_path / "m"), "--no-track", *extra]
        )
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return " ".join(result.output.split())

    assert "layers is (32,) there and (64,) here" in train(
        "--warm-start", str(tiny_model), "--set", "layers=64"
    )
    assert "not spop" in train("--warm-start", str(tiny_model), "--model", "spop")
    assert "goes with --warm-start" in train("--keep-missing-items")
    assert "no such directory" in train("--warm-start", str(tmp_path / "nothing"))
