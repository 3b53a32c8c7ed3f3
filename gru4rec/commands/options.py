"""Options that several commands share, declared once so that their `--help` reads the same:
the fixed choices as enums (shown in `--help`, completed by the shell), the parsing of
option values, and the old spellings kept for one release as hidden aliases that warn.

The command line's names (docs/architecture.md): the prepared data and models are
positional, every output is `--out`, a list of model families is `--candidates`, `-k` is
the length of a recommendation list, `--json FILE` writes what a command prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import EnumMeta, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gru4rec.commands.consoles import errors
from gru4rec.errors import ConfigError
from gru4rec.network.presets import PRESET_SETTINGS
from gru4rec.options import CUTOFFS, spelled
from gru4rec.pipelines.formats import FORMATS

T = TypeVar("T")
E = TypeVar("E")


def _family(name: str) -> str:
    """A registered family's name (the registry is read here, not when the command line
    starts: it imports the models)."""
    from gru4rec.serving import families

    if name not in families.REGISTRY:
        raise typer.BadParameter(
            f"{name!r} is not a model family: use one of {', '.join(families.names())}."
        )
    return name


def _complete_family(incomplete: str) -> list[str]:
    from gru4rec.serving import families

    return [name for name in families.names() if name.startswith(incomplete)]


Family = Annotated[
    str,
    typer.Option(
        "--model",
        parser=_family,
        metavar="FAMILY",
        autocompletion=_complete_family,
        help="Model family: gru4rec; repeat (GRU4Rec with a learned repeat gate over the "
        "session's last repeat_window items, default 10); hybrid (GRU4Rec mixed with the "
        "session's items and V-SKNN, weights chosen on valid: needs train_tr/valid); ranker "
        "(LambdaMART over candidates of GRU4Rec, kNN and the session, learned on valid); or "
        "a baseline: pop, spop, iknn, sknn, vsknn. `gru4rec select` chooses for you.",
    ),
]


class DeviceChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class TieChoice(StrEnum):
    standard = "standard"
    conservative = "conservative"
    median = "median"


def _choices(name: str, values: Iterable[str]) -> Any:
    """A StrEnum of `values` (a registry's names), each member named as Python spells it
    (gru4rec-tsv: `gru4rec_tsv`)."""
    return StrEnum(name, {value.replace("-", "_"): value for value in values}, module=__name__)


if TYPE_CHECKING:  # mypy cannot see members made at run time: here any member name is one

    class _Registry(EnumMeta):
        def __getattr__(cls: type[E], name: str) -> E: ...

    class PresetChoice(StrEnum, metaclass=_Registry):
        """The named presets: the names of `gru4rec.network.presets.PRESET_SETTINGS`."""

    class FormatChoice(StrEnum, metaclass=_Registry):
        """The log layouts: the names of `gru4rec.pipelines.formats.FORMATS`."""

else:
    # From the registries' light modules (not `network.config` or `pipelines.sources`,
    # which build configs and load Polars): the command line starts fast.
    PresetChoice = _choices("PresetChoice", PRESET_SETTINGS)
    FormatChoice = _choices("FormatChoice", FORMATS)

# The columns of a log (`pipelines.formats.SourceSpec`'s fields): the named formats set
# them, the generic one needs them; `prepare` and `recommend` read logs with them.
SessionCol = Annotated[str | None, typer.Option(help="Session id column.")]
ItemCol = Annotated[str | None, typer.Option(help="Item id column.")]
TimeCol = Annotated[str | None, typer.Option(help="Timestamp column.")]
TimeUnit = Annotated[
    str | None, typer.Option(help="Unit of the time column: s, ms or iso (ISO-8601 text).")
]
UserCol = Annotated[
    str | None,
    typer.Option(
        help="User id column; without a session column, sessions are built from user + idle gap."
    ),
]
EventCol = Annotated[str | None, typer.Option(help="Event-type column.")]
EventFilter = Annotated[
    list[str] | None,
    typer.Option(help="Keep only this event type (repeat the option for several)."),
]
OrderCol = Annotated[
    str | None,
    typer.Option(
        help="Position of an event inside its session: orders equal times, or stands in for "
        "time in logs without one."
    ),
]
SplitCol = Annotated[
    str | None,
    typer.Option(help="Column holding a published split ('train'/'test') to keep exactly."),
]
Separator = Annotated[
    str | None,
    typer.Option(
        help="Field separator of text logs (default: tab for .tsv/.txt/.dat, comma otherwise)."
    ),
]


class IndexKindChoice(StrEnum):
    flat = "flat"
    hnsw = "hnsw"
    ivf = "ivf"


class IndexChoice(StrEnum):
    """What `recommend` retrieves with: an index kind, none (score every item) or auto."""

    auto = "auto"
    none = "none"
    flat = "flat"
    hnsw = "hnsw"
    ivf = "ivf"


class EngineChoice(StrEnum):
    local = "local"
    ray = "ray"


Device = Annotated[
    DeviceChoice, typer.Option(help="Where to compute: auto (a GPU if present), cpu or cuda.")
]

TrackingUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
    ),
]

Ties = Annotated[
    TieChoice,
    typer.Option(
        help="Rank of a target tied with other items: standard (1 + #higher), conservative "
        "(#higher-or-equal, the reference's) or median (their mean)."
    ),
]

Preset = Annotated[PresetChoice, typer.Option(help="Tuned GRU4Rec settings to start from.")]

Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")]

Cutoffs = Annotated[
    list[str] | None,
    typer.Option(
        help=f"Metric cutoffs, comma-separated or repeated: --cutoffs {spelled()} "
        f"[default: {spelled()}].",
        metavar="K,...",
    ),
]

JsonOut = Annotated[
    Path | None, typer.Option("--json", help="Also write what is printed, as JSON, to this file.")
]


Seed = Annotated[
    int | None,
    typer.Option(help="Seed of every random choice (default: the preset's).", show_default=False),
]

Settings = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a GRU4Rec setting, key=value (repeatable), e.g. --set n_epochs=5 "
        "--set layers=200 --set loss=bpr-max.",
    ),
]

Metric = Annotated[
    str, typer.Option(help="The validation metric to maximise: recall@k, mrr@k or ndcg@k.")
]

Experiment = Annotated[str, typer.Option(help="MLflow experiment name.")]

Register = Annotated[
    str | None, typer.Option(help="Register the model under this name in the MLflow registry.")
]

Track = Annotated[bool, typer.Option(help="Log to MLflow (--no-track: run without it).")]


def parse_cutoffs(values: list[str] | None, extra: list[str] | None = None) -> tuple[int, ...]:
    """`--cutoffs 1,5,10,20` (or repeated) as sorted distinct positive integers.

    `extra`: the command's stray arguments. The old spelling `--cutoffs 1 5 10 20` leaves
    "5 10 20" there: accepted for one release with a warning; anything else is refused as
    the stray argument it is.
    """
    texts = list(values or [])
    if extra:
        if texts and all(text.strip().isdigit() for text in extra):
            deprecated(
                f"--cutoffs {texts[-1]} {' '.join(extra)}",
                f"--cutoffs {','.join([texts[-1], *extra])}",
            )
            texts += extra
        else:
            raise ConfigError(
                f"unexpected argument(s): {' '.join(extra)}. Every option takes one value "
                "(e.g. --cutoffs 1,5,10,20); see --help."
            )
    words = [word for text in texts for word in text.replace(",", " ").split()]
    if not words:
        return CUTOFFS
    try:
        cutoffs = tuple(sorted({int(word) for word in words}))
    except ValueError:
        raise ConfigError(
            f"--cutoffs takes positive integers, e.g. --cutoffs 1,5,10,20; got {words}."
        ) from None
    if cutoffs[0] < 1:
        raise ConfigError(f"--cutoffs must be positive integers; got {words}.")
    return cutoffs


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` pairs as a mapping."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value (e.g. --set n_epochs=5); got {pair!r}.")
        overrides[key.strip()] = value.strip()
    return overrides


def deprecated(old: str, new: str) -> None:
    """Say on stderr that `old` is spelt `new` now and goes in the next release."""
    errors.print(
        f"[yellow]deprecated:[/] {old} is now {new}; the old spelling goes in the next release.",
        highlight=False,
        soft_wrap=True,
    )


def renamed(old: str, old_value: T | None, new: str, new_value: T | None) -> T | None:
    """The value of an option renamed from `old` to `new` (the old one a hidden alias)."""
    if old_value is None:
        return new_value
    deprecated(old, new)
    if new_value is not None and new_value != old_value:
        raise ConfigError(f"{old} and {new} are the same option; give it once.")
    return old_value


def required(name: str, value: T | None) -> T:
    """A required option's value (one whose old spelling is still accepted)."""
    if value is None:
        raise ConfigError(f"missing option {name}; see --help.")
    return value


def hidden_alias(name: str) -> Any:
    """The Typer option of an old spelling: accepted, not shown in --help."""
    return typer.Option(name, hidden=True)


__all__ = [
    "Cutoffs",
    "Device",
    "DeviceChoice",
    "EngineChoice",
    "EventCol",
    "EventFilter",
    "FormatChoice",
    "IndexChoice",
    "IndexKindChoice",
    "ItemCol",
    "JsonOut",
    "OrderCol",
    "Preset",
    "PresetChoice",
    "Separator",
    "SessionCol",
    "SplitCol",
    "Threads",
    "TieChoice",
    "Ties",
    "TimeCol",
    "TimeUnit",
    "TrackingUri",
    "UserCol",
    "deprecated",
    "hidden_alias",
    "parse_cutoffs",
    "parse_sets",
    "renamed",
    "required",
]
