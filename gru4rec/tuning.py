"""Random hyperparameter search on a validation split (never on test).

A space is a list of `Dimension`s, written on the command line as `key=low:high` (uniform;
integers when both ends are), `key=low:high:log` (log-uniform) or `key=a|b|c` (a choice).
The default is the authors' own search space (see the reference). Each trial trains on
`train_tr`, is scored on `valid`, and is reported through `on_trial`, so the CLI can log
every trial as a nested MLflow run.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gru4rec.config import GRU4RecConfig, apply_overrides
from gru4rec.errors import ConfigError
from gru4rec.train import Callback


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a numeric range or a list of choices."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False  # sample uniformly in log space (learning rates)
    integer: bool = False
    choices: tuple[str, ...] = ()

    def sample(self, rng: random.Random) -> str:
        if self.choices:
            return rng.choice(self.choices)
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return str(round(value)) if self.integer else f"{value:.4g}"


# The authors' search space (200 trials each, optimising MRR@20 on validation).
AUTHORS_SPACE: tuple[Dimension, ...] = (
    Dimension("layers", 64, 512, integer=True),
    Dimension("batch_size", 32, 256, integer=True),
    Dimension("learning_rate", 0.01, 0.25, log=True),
    Dimension("dropout_p_embed", 0.0, 0.5),
    Dimension("dropout_p_hidden", 0.0, 0.7),
    Dimension("momentum", 0.0, 0.9),
    Dimension("sample_alpha", 0.0, 1.0),
    Dimension("bpreg", 0.0, 2.0),
    Dimension("elu_param", choices=("0", "0.5", "1")),
)


def parse_dimension(text: str) -> Dimension:
    """`key=low:high[:log]` or `key=a|b|c`."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise ConfigError(f"--space takes key=low:high, key=low:high:log or key=a|b; got {text!r}.")
    if "|" in spec:
        return Dimension(name, choices=tuple(spec.split("|")))
    parts = spec.split(":")
    try:
        low, high = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise ConfigError(f"--space {text!r}: the range must be two numbers, low:high.") from None
    log = parts[2:] == ["log"]
    if len(parts) > 3 or (len(parts) == 3 and not log) or low > high or (log and low <= 0):
        raise ConfigError(f"--space {text!r}: expected low <= high (and > 0 with :log).")
    integer = parts[0].lstrip("-").isdigit() and parts[1].lstrip("-").isdigit()
    return Dimension(name, low, high, log=log, integer=integer)


@dataclass(frozen=True)
class Trial:
    number: int
    overrides: dict[str, str]
    metrics: dict[str, Any]


def random_search(
    data_dir: Path,
    base: GRU4RecConfig,
    space: Sequence[Dimension],
    *,
    trials: int,
    metric: str = "mrr@20",
    seed: int = 0,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    trial_run: Callable[[int], AbstractContextManager[Any]] = lambda number: nullcontext(),
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Train `trials` sampled configurations on train_tr, score them on valid; best first.

    Each trial runs inside `trial_run(number)` (e.g. a nested MLflow run), where `callbacks`
    see its training and `on_trial` its result.
    """
    from gru4rec.workflow import evaluate_split, train_model

    for split in ("train_tr", "valid"):
        if not (Path(data_dir) / f"{split}.parquet").exists():
            raise ConfigError(
                f"{data_dir} has no {split}.parquet: tuning needs a validation split; prepare "
                "with --valid-days or --valid-fraction."
            )
    cutoff = int(metric.partition("@")[2] or 20)
    rng = random.Random(seed)
    results = []
    for number in range(trials):
        overrides = {d.name: d.sample(rng) for d in space}
        config = apply_overrides(base, overrides)  # validates the sampled values too
        with trial_run(number), tempfile.TemporaryDirectory() as scratch:
            model, items, _ = train_model(
                data_dir, config, Path(scratch) / "model", split="train_tr", device=device,
                callbacks=callbacks,
            )  # fmt: skip
            metrics = evaluate_split(
                model, items, data_dir, split="valid", cutoffs=(1, 5, 10, cutoff)
            )
            trial = Trial(number, overrides, metrics)
            results.append(trial)
            if on_trial is not None:
                on_trial(trial)
    return sorted(results, key=lambda t: -t.metrics[metric])
