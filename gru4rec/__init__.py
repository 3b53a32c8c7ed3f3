"""gru4rec: session-based recommendations with GRU4Rec, from a click log to recommendations.

    import gru4rec

    gru4rec.prepare("clicks.csv", "data", format="generic", session_col="session",
                    item_col="item", time_col="ts")
    gru4rec.select("data", "model")
    recs = gru4rec.load("model").recommend([["a", "b"], ["c"]], k=20)

See `gru4rec.api` for every function and its options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gru4rec.api import Recommender, SelectionResult, TrainRun, load, prepare, select, train
    from gru4rec.options import Compute, Evaluation, Tracking

__all__ = [
    "Compute",
    "Evaluation",
    "Recommender",
    "SelectionResult",
    "Tracking",
    "TrainRun",
    "__version__",
    "load",
    "prepare",
    "select",
    "train",
]


def __getattr__(name: str) -> Any:
    # The API brings torch, Polars and MLflow: loaded on first use, so that importing any
    # part of the package (and the command line's --help) stays fast.
    if name in __all__:
        from gru4rec import api

        return getattr(api, name)
    raise AttributeError(f"module 'gru4rec' has no attribute {name!r}")
