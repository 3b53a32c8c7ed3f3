"""The named presets: the reference's tuned GRU4Rec settings per dataset (shared
embedding, 10 epochs, 2048 negatives), as `config.GRU4RecConfig` fields.

`PRESET_SETTINGS` is the one list of the presets: `config.PRESETS` builds the validated
configs from it, and the command line's `--preset` choices are its names. Plain data on
purpose (nothing imported), so the command line can list the presets without building
(and validating) the configs.
"""

from __future__ import annotations

from typing import Any

PRESET_SETTINGS: dict[str, dict[str, Any]] = {
    "rsc15": dict(
        loss="cross-entropy",
        elu_param=0.0,
        layers=(100,),
        batch_size=32,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.4,
        learning_rate=0.2,
        momentum=0.2,
        sample_alpha=0.5,
        bpreg=0.0,
        logq=1.0,
    ),
    "yoochoose": dict(
        loss="cross-entropy",
        elu_param=0.0,
        layers=(480,),
        batch_size=48,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.2,
        learning_rate=0.07,
        momentum=0.0,
        sample_alpha=0.2,
        bpreg=0.0,
        logq=1.0,
    ),
    "rees46": dict(
        loss="cross-entropy",
        elu_param=0.0,
        layers=(512,),
        batch_size=240,
        dropout_p_embed=0.45,
        dropout_p_hidden=0.0,
        learning_rate=0.065,
        momentum=0.0,
        sample_alpha=0.5,
        bpreg=0.0,
        logq=1.0,
    ),
    "coveo": dict(
        loss="bpr-max",
        elu_param=1.0,
        layers=(512,),
        batch_size=144,
        dropout_p_embed=0.35,
        dropout_p_hidden=0.0,
        learning_rate=0.05,
        momentum=0.4,
        sample_alpha=0.2,
        bpreg=1.85,
        logq=0.0,
    ),
    "retailrocket": dict(
        loss="bpr-max",
        elu_param=0.5,
        layers=(224,),
        batch_size=80,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.05,
        learning_rate=0.05,
        momentum=0.4,
        sample_alpha=0.4,
        bpreg=1.95,
        logq=0.0,
    ),
    "diginetica": dict(
        loss="bpr-max",
        elu_param=1.0,
        layers=(512,),
        batch_size=128,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.3,
        learning_rate=0.05,
        momentum=0.15,
        sample_alpha=0.3,
        bpreg=0.9,
        logq=0.0,
    ),
}

__all__ = ["PRESET_SETTINGS"]
