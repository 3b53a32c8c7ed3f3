"""Config: presets, command-line overrides, validation on every construction path, JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gru4rec.errors import ConfigError
from gru4rec.network.config import PRESETS, GRU4RecConfig, apply_overrides, get_preset


def test_presets_follow_the_reference_table() -> None:
    assert set(PRESETS) == {"rsc15", "yoochoose", "rees46", "coveo", "retailrocket", "diginetica"}
    for config in PRESETS.values():
        assert config.embedding == "shared"
        assert config.n_sample == 2048
        assert config.n_epochs == 10
    digi = get_preset("diginetica")
    assert (digi.loss, digi.elu_param, digi.layers, digi.batch_size) == (
        "bpr-max",
        1.0,
        (512,),
        128,
    )
    assert (digi.dropout_p_embed, digi.dropout_p_hidden) == (0.5, 0.3)
    assert (digi.learning_rate, digi.momentum, digi.sample_alpha, digi.bpreg, digi.logq) == (
        0.05,
        0.15,
        0.3,
        0.9,
        0.0,
    )
    rsc15 = get_preset("rsc15")
    assert (rsc15.loss, rsc15.layers, rsc15.batch_size, rsc15.dropout_p_hidden) == (
        "cross-entropy",
        (100,),
        32,
        0.4,
    )
    assert (rsc15.learning_rate, rsc15.momentum, rsc15.sample_alpha, rsc15.logq) == (
        0.2,
        0.2,
        0.5,
        1.0,
    )


def test_unknown_preset_suggests_a_close_name() -> None:
    with pytest.raises(ConfigError, match="did you mean rsc15"):
        get_preset("rsc51")


def test_overrides_parse_each_type() -> None:
    config = apply_overrides(
        get_preset("rsc15"),
        {
            "layers": "100,100",
            "learning_rate": "0.1",
            "batch_size": " 64 ",
            "loss": "bpr-max",
            "embedding": "separate",
            "embedding_size": "16",
        },
    )
    assert config.layers == (100, 100)
    assert config.learning_rate == 0.1
    assert config.batch_size == 64
    assert config.loss == "bpr-max"
    assert config.embedding_size == 16
    assert apply_overrides(config, {"layers": "512"}).layers == (512,)
    assert apply_overrides(config, {"layers": "[64, 32]"}).layers == (64, 32)


def test_unknown_key_lists_the_valid_ones_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"did you mean layers\?.*Valid parameters: layers"):
        apply_overrides(GRU4RecConfig(), {"layer": "100"})
    with pytest.raises(ConfigError, match="did you mean learning_rate"):
        apply_overrides(GRU4RecConfig(), {"lr": "0.1"})


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("dropout_p_hidden", "-0.1"),
        ("dropout_p_embed", "1.0"),
        ("batch_size", "0"),
        ("learning_rate", "0"),
        ("learning_rate", "nan"),
        ("momentum", "1"),
        ("momentum", "-0.5"),
        ("sample_alpha", "1.5"),
        ("sample_alpha", "-0.1"),
        ("n_sample", "-1"),
        ("bpreg", "-1"),
        ("layers", "0"),
        ("layers", ""),
        ("n_epochs", "0"),
        ("loss", "xe"),
        ("embedding", "constrained"),
        ("gru_form", "cudnn"),
        ("logq_form", "log"),
        ("batch_size", "3.5"),
        ("learning_rate", "fast"),
    ],
)
def test_out_of_range_or_unparsable_values_raise(key: str, text: str) -> None:
    with pytest.raises(ConfigError, match=key):
        apply_overrides(GRU4RecConfig(), {key: text})


def test_validation_runs_on_direct_construction_too() -> None:
    with pytest.raises(ConfigError, match="dropout"):
        GRU4RecConfig(dropout_p_hidden=1.0)
    with pytest.raises(ConfigError, match="embedding_size"):
        GRU4RecConfig(embedding="separate")
    with pytest.raises(ConfigError, match="layers"):
        GRU4RecConfig(layers=[100])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        dataclasses.replace(GRU4RecConfig(), batch_size=-3)


def test_json_roundtrip() -> None:
    config = apply_overrides(get_preset("coveo"), {"layers": "64,32", "seed": "7"})
    assert GRU4RecConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'hidden'"):
        GRU4RecConfig.from_dict({"hidden": 3})


def test_precision_is_fp32_by_default_and_validated() -> None:
    assert GRU4RecConfig().precision == "fp32"
    assert all(preset.precision == "fp32" for preset in PRESETS.values())
    assert apply_overrides(GRU4RecConfig(), {"precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        apply_overrides(GRU4RecConfig(), {"precision": "fp16"})
    with pytest.raises(ConfigError, match="precision"):
        GRU4RecConfig(precision="half")  # type: ignore[arg-type]
    # Configs saved before the field existed still load.
    old = {k: v for k, v in GRU4RecConfig().to_dict().items() if k != "precision"}
    assert GRU4RecConfig.from_dict(old).precision == "fp32"
