"""The MLflow pyfunc model, logged as code (models-from-code): loading it unpickles nothing.

Input: a DataFrame with a column `items` (one list of original item ids per session), or
a list of such lists. Params: `k` (default 20), `exclude_seen` (default False).
Output: a long DataFrame `session, rank, item_id, score`.
"""

from __future__ import annotations

from typing import Any

import mlflow
import mlflow.models
import pandas as pd
from mlflow.pyfunc.model import PythonModel


class GRU4RecPyfunc(PythonModel):
    """Top-k recommendations for item sequences, from a checkpoint logged as an artifact."""

    def load_context(self, context: Any) -> None:
        from gru4rec.recommend import Recommender

        self.recommender = Recommender.from_path(context.artifacts["model_dir"], device="auto")

    # No type hints on predict: MLflow would try to derive a signature from them.
    def predict(self, context, model_input, params=None):
        params = params or {}
        if isinstance(model_input, pd.DataFrame):
            sessions = [list(items) for items in model_input["items"]]
        else:
            sessions = [list(items) for items in model_input]
        table, _report = self.recommender.recommend(
            sessions, int(params.get("k", 20)), exclude_seen=bool(params.get("exclude_seen", False))
        )
        return table.to_pandas()


mlflow.models.set_model(GRU4RecPyfunc())
