"""Typed, frozen configuration of a GRU4Rec model and its training, plus named presets.

One flat dataclass keeps `--set key=value` overrides, presets and the saved
`config.json` simple: every key is a field name.

Example:
    >>> from gru4rec.network.config import get_preset, apply_overrides
    >>> config = apply_overrides(get_preset("rsc15"), {"layers": "100,100", "n_epochs": "5"})
    >>> config.layers
    (100, 100)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from gru4rec.errors import ConfigError
from gru4rec.network.presets import PRESET_SETTINGS

EmbeddingMode = Literal["shared", "separate", "none"]
LossName = Literal["cross-entropy", "bpr-max"]
Precision = Literal["fp32", "bf16"]
LogqForm = Literal["normalised", "counts"]
GruForm = Literal["reset_before", "reset_after"]


@dataclass(frozen=True)
class GRU4RecConfig:
    """Hyperparameters of the model and of its training (the reference's names where it has one).

    Validated on construction, so presets, overrides and loaded JSON are all checked.
    """

    # Model
    layers: tuple[int, ...] = (100,)  # GRU sizes, first to last; the last is the item-vector width
    embedding: EmbeddingMode = "shared"  # shared = input embedding IS the output item matrix
    embedding_size: int = 0  # width of the input embedding; only used (and > 0) with "separate"
    dropout_p_embed: float = 0.0  # dropout on the input embedding (no effect with "none")
    dropout_p_hidden: float = 0.4  # dropout on each GRU layer's output, also the carried state
    repeat_window: int = (
        0  # > 0: the repeat-aware GRU4Rec (gru4rec.network.repeat) over the last N items
    )
    # Where the reset gate acts on the candidate: reset_before (the GRU4Rec paper, Cho et
    # al.): c = tanh(x W_c + (r h) U_c + b_c); reset_after (torch's GRUCell, cuDNN, Keras'
    # reset_after, the authors' PyTorch port): c = tanh(x W_c + b_c + r (h U_c + b_hc)).
    gru_form: GruForm = "reset_before"

    # Loss
    loss: LossName = "cross-entropy"  # the two losses that matter in the reference
    elu_param: float = 0.0  # ELU on the scores before the loss; 0 = linear (bpr-max uses it)
    bpreg: float = 0.0  # BPR-max score regularisation weight
    logq: float = 1.0  # weight of the logQ correction of the sampled softmax; 0 = off
    # counts (the reference's): log support for the in-batch columns, alpha * log support
    # for the sampled ones, unnormalised; normalised: the log of each column's own sampling
    # probability. Counts is better on DIGINETICA's valid split (43k items), equal on
    # YOOCHOOSE 100k (docs/accuracy-experiments.md)
    logq_form: LogqForm = "counts"

    # Negative sampling
    n_sample: int = 2048  # extra negatives shared by the minibatch; 0 = in-batch only
    sample_alpha: float = 0.5  # negatives drawn with probability ~ support^alpha (0 = uniform)
    sample_cache_size: int = 1024  # steps' worth of negatives drawn at once (the reference's cache)

    # Optimisation
    batch_size: int = 32  # session-parallel slots per minibatch
    learning_rate: float = 0.2  # Adagrad step size
    momentum: float = 0.2  # heavy-ball momentum on top of Adagrad; 0 = plain Adagrad
    adagrad_eps: float = 1e-6  # added to the squared-gradient sum under the square root
    n_epochs: int = 10  # passes over the training sessions
    seed: int = 42  # seeds initialisation, dropout and negative sampling

    # Speed (how the arithmetic is done, not what is learned)
    precision: Precision = (
        "fp32"  # bf16: training matmuls in bfloat16; weights, optimiser state and loss stay fp32
    )

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        values["layers"] = list(self.layers)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GRU4RecConfig:
        """The inverse of `to_dict`; unknown keys raise ConfigError."""
        for key in values:
            _check_known_key(key)
        values = dict(values)
        if "layers" in values and not isinstance(values["layers"], tuple):
            layers = values["layers"]
            values["layers"] = tuple(layers) if isinstance(layers, list) else (layers,)
        return cls(**values)


def _validate(config: GRU4RecConfig) -> None:
    def fail(name: str, rule: str) -> typing.NoReturn:
        raise ConfigError(f"{name}={getattr(config, name)!r} is out of range: {rule}.")

    _check_types(config)
    if not config.layers:
        fail("layers", "give at least one GRU size, e.g. layers=100 or layers=100,100")
    if any(size < 1 for size in config.layers):
        fail("layers", "every GRU size must be a positive integer")
    if config.embedding not in get_args(EmbeddingMode):
        fail("embedding", f"choose one of {', '.join(get_args(EmbeddingMode))}")
    if config.embedding == "separate" and config.embedding_size < 1:
        fail("embedding_size", "embedding=separate needs embedding_size >= 1")
    if config.embedding_size < 0:
        fail("embedding_size", "must be >= 0")
    for name in ("dropout_p_embed", "dropout_p_hidden"):
        if not 0.0 <= getattr(config, name) < 1.0:
            fail(name, "a dropout probability must be in [0, 1)")
    if config.loss not in get_args(LossName):
        fail("loss", f"choose one of {', '.join(get_args(LossName))}")
    for name in ("elu_param", "bpreg", "logq", "n_sample"):
        if getattr(config, name) < 0:
            fail(name, "must be >= 0")
    if not 0.0 <= config.sample_alpha <= 1.0:
        fail("sample_alpha", "must be in [0, 1]")
    for name in ("sample_cache_size", "batch_size", "n_epochs"):
        if getattr(config, name) < 1:
            fail(name, "must be >= 1")
    if not config.learning_rate > 0:
        fail("learning_rate", "must be > 0")
    if not 0.0 <= config.momentum < 1.0:
        fail("momentum", "must be in [0, 1)")
    if not config.adagrad_eps > 0:
        fail("adagrad_eps", "must be > 0")
    if config.logq_form not in get_args(LogqForm):
        fail("logq_form", f"choose one of {', '.join(get_args(LogqForm))}")
    if config.gru_form not in get_args(GruForm):
        fail("gru_form", f"choose one of {', '.join(get_args(GruForm))}")
    if config.precision not in get_args(Precision):
        fail("precision", f"choose one of {', '.join(get_args(Precision))}")
    if config.repeat_window < 0:
        fail("repeat_window", "must be >= 0 (0 = plain GRU4Rec)")
    if config.repeat_window > 0 and (config.loss != "cross-entropy" or config.precision != "fp32"):
        fail(
            "repeat_window",
            "the repeat-aware mixture is a probability: it needs "
            "loss=cross-entropy and precision=fp32",
        )


def _check_types(config: GRU4RecConfig) -> None:
    for name, kind in typing.get_type_hints(GRU4RecConfig).items():
        value = getattr(config, name)
        if get_origin(kind) is tuple:
            ok = isinstance(value, tuple) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            )
        elif get_origin(kind) is Literal:
            ok = isinstance(value, str)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(f"{name}={value!r} is not {_type_name(kind)} (a finite value).")


# The reference's tuned settings, one per dataset (`presets.PRESET_SETTINGS`, the one list).
PRESETS: dict[str, GRU4RecConfig] = {
    name: GRU4RecConfig(**settings) for name, settings in PRESET_SETTINGS.items()
}


def get_preset(name: str) -> GRU4RecConfig:
    """The named preset; an unknown name raises ConfigError listing the valid ones."""
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}{_suggest(name, PRESETS)}. "
            f"Valid presets: {', '.join(PRESETS)}."
        )
    return PRESETS[name]


def override_text(value: Any) -> str:
    """A setting given as a Python value (a TOML or YAML value, an API argument) as
    `--set` spells it: lists and tuples comma-separated, booleans lower case."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def apply_overrides(config: GRU4RecConfig, overrides: Mapping[str, str]) -> GRU4RecConfig:
    """A copy of `config` with command-line strings parsed to each field's type.

    `{"layers": "100,100", "learning_rate": "0.1", "loss": "bpr-max"}` -> a validated
    config. Unknown keys, unparsable strings and out-of-range values raise ConfigError.
    """
    types = typing.get_type_hints(GRU4RecConfig)
    changes = {}
    for key, text in overrides.items():
        _check_known_key(key)
        changes[key] = _parse(key, str(text).strip(), types[key])
    return dataclasses.replace(config, **changes)


def _parse(key: str, text: str, kind: Any) -> Any:
    try:
        if get_origin(kind) is tuple:
            parts = [part for part in text.strip("()[] ").split(",") if part.strip()]
            return tuple(int(part) for part in parts)
        if get_origin(kind) is Literal:
            choices = get_args(kind)
            if text not in choices:
                raise ConfigError(
                    f"{key}={text!r} is not valid{_suggest(text, choices)}. "
                    f"Choose one of {', '.join(choices)}."
                )
            return text
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(
            f"{key}={text!r} cannot be read as {_type_name(kind)}; e.g. {key}={_example(key)}."
        ) from None
    raise ConfigError(f"{key}: no parser for type {kind!r}")


def _check_known_key(key: str) -> None:
    names = [f.name for f in dataclasses.fields(GRU4RecConfig)]
    if key not in names:
        raise ConfigError(
            f"unknown parameter {key!r}{_suggest(key, names)}. Valid parameters: {', '.join(names)}."
        )


# Names other implementations use, mapped to ours, so that the error can point the way.
_ALIASES = {
    "lr": "learning_rate",
    "epochs": "n_epochs",
    "xe": "cross-entropy",
    "ce": "cross-entropy",
    "bprmax": "bpr-max",
    "constrained_embedding": "embedding",
    "hidden_size": "layers",
}


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    alias = _ALIASES.get(word.lower().replace("-", "_"), _ALIASES.get(word.lower()))
    if alias in choices:
        return f" (did you mean {alias}?)"
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _type_name(kind: Any) -> str:
    if get_origin(kind) is tuple:
        return "a comma-separated list of integers"
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(get_args(kind))
    return {int: "an integer", float: "a number"}.get(kind, str(kind))


def _example(key: str) -> str:
    value = getattr(GRU4RecConfig(), key)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


__all__ = [
    "PRESETS",
    "EmbeddingMode",
    "GRU4RecConfig",
    "LossName",
    "Precision",
    "apply_overrides",
    "get_preset",
    "override_text",
]
