"""The model families, one object each, in one registry.

Everything that offers or handles a family reads `REGISTRY` (through `get` and `names`):
the CLI's `--model` choices, `select`'s candidates, `train --model`, the nightly job,
saving and loading model directories, `recommend` and the pyfunc model. A new family is
one module (a `gru4rec.serving.families.base.Family`) and one line in `REGISTRY`, or a
call to `register` for a family defined outside the package.

    gru4rec, repeat                  networks.py   GRU4Rec and the repeat-aware GRU4Rec
    pop, spop, iknn, sknn, vsknn     baselines.py  counting baselines
    hybrid                           hybrid.py     GRU4Rec + session items + V-SKNN
    ranker                           ranker.py     LambdaMART over candidates
"""

from __future__ import annotations

from gru4rec.errors import ConfigError
from gru4rec.scoring.baselines import BASELINES
from gru4rec.serving.families.base import Candidate, Family, Fitting
from gru4rec.serving.families.baselines import BaselineFamily
from gru4rec.serving.families.hybrid import HybridFamily
from gru4rec.serving.families.networks import GRU4REC, REPEAT
from gru4rec.serving.families.ranker import RankerFamily

# In the order `--help` and error messages list them: networks, the mixtures, baselines.
REGISTRY: dict[str, Family] = {
    family.name: family
    for family in (
        GRU4REC,
        REPEAT,
        HybridFamily(),
        RankerFamily(),
        *(BaselineFamily(name) for name in BASELINES),
    )
}


def names() -> tuple[str, ...]:
    """Every registered family's name."""
    return tuple(REGISTRY)


def get(name: str) -> Family:
    """The family `name`, or an error that lists the known ones."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown model family {name!r}: use one of {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def register(family: Family) -> Family:
    """Add `family` (or replace the one of the same name); returns it."""
    REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove the family `name` (a family registered for a while, e.g. in a test)."""
    REGISTRY.pop(name, None)


__all__ = ["REGISTRY", "Candidate", "Family", "Fitting", "get", "names", "register", "unregister"]
