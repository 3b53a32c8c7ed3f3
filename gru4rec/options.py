"""The options that travel from the command line through the Python API to the jobs: a few
frozen objects, each field named as its command-line option (docs/architecture.md), so a
setting has one name everywhere.

    Compute     --device, --threads, --seed
    Tracking    --track/--no-track, --tracking-uri, --experiment, --run-name, --register
    Evaluation  --train-split, --test-split, --valid-split, --cutoffs, --ties, --metric

And the cut-offs every ranking metric is reported at unless asked otherwise. A leaf module
(no imports of the project): the commands read it without loading torch.

Example:
    >>> gru4rec.train("data", "model", compute=Compute(threads=2, seed=7),
    ...               evaluation=Evaluation(cutoffs=(10, 20)))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from gru4rec.errors import ConfigError

CUTOFFS: tuple[int, ...] = (1, 5, 10, 20)
TieMode = Literal["standard", "conservative", "median"]
METRICS = ("recall", "mrr", "ndcg")


def with_metric(metric: str, cutoffs: Iterable[int] = CUTOFFS) -> tuple[int, ...]:
    """`cutoffs` and the cut-off of `metric` ("mrr@50" adds 50), sorted and distinct."""
    _name, _, cutoff = metric.partition("@")
    extra = {int(cutoff)} if cutoff.isdigit() else set()
    return tuple(sorted({*cutoffs, *extra}))


def spelled(cutoffs: Iterable[int] = CUTOFFS) -> str:
    """ "1,5,10,20": as the command line takes them."""
    return ",".join(str(k) for k in cutoffs)


@dataclass(frozen=True)
class Compute:
    """Where and how reproducibly the work runs.

    device: auto (a CUDA GPU where there is one), cpu or cuda.
    threads: CPU threads for torch and LightGBM (None: every core).
    seed: the seed of every random choice (None: the settings' own, e.g. a preset's).
    """

    device: str = "auto"
    threads: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1; got {self.threads}.")

    def seeded(self, settings: Mapping[str, str]) -> dict[str, str]:
        """GRU4Rec settings with this seed, where one is given."""
        return {**settings, "seed": str(self.seed)} if self.seed is not None else dict(settings)


@dataclass(frozen=True)
class Tracking:
    """Where a run is logged in MLflow (nothing is, unless `track`)."""

    track: bool = False
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else ./mlflow.db
    experiment: str = "gru4rec"
    run_name: str | None = None
    register: str | None = None  # a registered model to add the run's model to


@dataclass(frozen=True)
class Evaluation:
    """What a model is trained on and scored on, and how.

    train_split: the split to train on; test_split: scored once after training ("none":
    not scored); valid_split: scored after every epoch (None: not). cutoffs: the list
    lengths of the metrics; ties: the rank of a target tied with other items (standard,
    conservative: the reference's, or median); metric: what selection and tuning maximise.
    """

    train_split: str = "train"
    test_split: str = "test"
    valid_split: str | None = None
    cutoffs: tuple[int, ...] = CUTOFFS
    ties: TieMode = "conservative"
    metric: str = "mrr@20"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoffs", tuple(sorted({int(k) for k in self.cutoffs})))
        if not self.cutoffs or self.cutoffs[0] < 1:
            raise ConfigError(f"--cutoffs must be positive integers; got {self.cutoffs}.")
        if self.ties not in get_args(TieMode):
            raise ConfigError(
                f"--ties must be one of {', '.join(get_args(TieMode))}; got {self.ties!r}."
            )
        name, _, cutoff = self.metric.partition("@")
        if name not in METRICS or not cutoff.isdigit() or int(cutoff) < 1:
            raise ConfigError(
                f"--metric must be recall@k, mrr@k or ndcg@k (e.g. mrr@20); got {self.metric!r}."
            )

    @property
    def scoring(self) -> dict[str, Any]:
        """The keyword arguments of an evaluation: cutoffs and ties."""
        return {"cutoffs": self.cutoffs, "ties": self.ties}


__all__ = [
    "CUTOFFS",
    "Compute",
    "Evaluation",
    "TieMode",
    "Tracking",
    "spelled",
    "with_metric",
]
