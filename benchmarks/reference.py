"""The reference's figures, in one place, and the parity criterion they are judged by.

Fidelity to the authors' GRU4Rec is parity of seed means: our mean
lies within two standard errors of the difference from the reference's mean, both measured
on the same kind of machine (2 cores, AVX-512, conservative ties, 10 epochs).

    SE = sqrt(sd_ours^2 / n_ours + sd_reference^2 / n_reference)

One training run's sd is a property of the training procedure; a 3-seed sample estimates it
poorly, so sd_ours is the larger of the sample's sd and the sd measured over many seeds
(`SPREAD`); a reference known from one run only takes our per-run sd for its own.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """A metric's mean over `n` runs and the sd of one run (None when n = 1)."""

    mean: float
    n: int
    sd: float | None = None


# (data, preset) -> metric -> the reference's figure on this machine kind.
REFERENCE: dict[tuple[str, str], dict[str, Figure]] = {
    # 7 runs of the authors' code: 0.6799 (sd 0.0017) / 0.3559 (sd 0.0018).
    ("yoochoose_100k", "rsc15"): {
        "recall@20": Figure(0.6799, 7, 0.0017),
        "mrr@20": Figure(0.3559, 7, 0.0018),
    },
    # One run (../shared/docs/gru4rec-reference.md): 0.5419 / 0.1823.
    ("diginetica", "diginetica"): {
        "recall@20": Figure(0.5419, 1),
        "mrr@20": Figure(0.1823, 1),
    },
}

# Our sd of one run with the current defaults, measured over many seeds (docs/results.md):
# YOOCHOOSE 100k seeds 1-12 (logQ counts), DIGINETICA seeds 42 and 1-6.
SPREAD: dict[tuple[str, str], dict[str, float]] = {
    ("yoochoose_100k", "rsc15"): {"recall@20": 0.0033, "mrr@20": 0.0017},
    ("diginetica", "diginetica"): {"recall@20": 0.0005, "mrr@20": 0.0002},
}

# Published results of other models on the DIGINETICA (SR-GNN) split, for the README.
PUBLISHED_DIGINETICA = {
    "SR-GNN": (0.5073, 0.1759),
    "GCE-GNN": (0.5422, 0.1904),
    "SGNN-HN": (0.5567, 0.1945),
}


@dataclass(frozen=True)
class Parity:
    """How far our mean lies from the reference's, in standard errors of the difference."""

    ours: float
    reference: float
    standard_error: float

    @property
    def z(self) -> float:
        return (self.ours - self.reference) / self.standard_error

    @property
    def holds(self) -> bool:
        """Parity, or better: ours is not more than two standard errors below."""
        return self.z >= -2.0

    def __str__(self) -> str:
        return (
            f"ours {self.ours:.4f} vs reference {self.reference:.4f}: "
            f"{self.z:+.2f} standard errors ({self.standard_error:.4f})"
        )


def parity(values: list[float], data: str, preset: str, metric: str) -> Parity:
    """The parity of our per-seed `values` of `metric` with the reference's figure."""
    reference = REFERENCE[(data, preset)][metric]
    sample_sd = statistics.stdev(values) if len(values) > 1 else 0.0
    ours_sd = max(sample_sd, SPREAD[(data, preset)][metric])
    reference_sd = reference.sd if reference.sd is not None else ours_sd
    error = math.sqrt(ours_sd**2 / len(values) + reference_sd**2 / reference.n)
    return Parity(statistics.fmean(values), reference.mean, error)
