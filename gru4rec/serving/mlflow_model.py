"""The MLflow pyfunc model, logged as code (models-from-code): loading it unpickles nothing.

Input, in every form MLflow's scoring server documents (`/invocations`):
    {"dataframe_split": {"columns": ["session_id", "items"], "data": [["s1", [1, 2]], ...]}}
    {"dataframe_records": [{"session_id": "s1", "items": [1, 2]}, ...]}
    {"instances": [{"session_id": "s1", "items": [1, 2]}, ...]}  (sessions of equal length:
        MLflow's parser turns this form into arrays, which sessions of different lengths fail)
    {"inputs": {"session_id": ["s1", ...], "items": [[1, 2], [3], ...]}}
`items` is one list of original item ids per session; `session_id` (any scalar) is optional
and comes back with the session's rows. Params: `k` (default 20), `exclude_seen` (default
False), e.g. `"params": {"k": 10}`. In Python: `predict(DataFrame or list of lists)`.
Output: a long DataFrame `session, rank, item_id, score, note` (`session` = position in the
request), with `session_id` first when the request had one; a session none of whose items
the model knows gets one row, rank 0 and no item, whose `note` says so.

Limits of one request (`Limits`: at most 10,000 sessions, 1,000 events a session; the
environment variables GRU4REC_SERVING_MAX_SESSIONS and GRU4REC_SERVING_MAX_SESSION_EVENTS of
the server raise them): a larger request is answered HTTP 400 with what to do.

The signature declares the params, the output and `items` / `session_id` of any type:
MLflow's typed schema enforcement cannot take lists of ids in the `instances` and `inputs`
forms, so this model checks its input itself and answers a bad request with HTTP 400 and
what to send.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mlflow
import mlflow.models
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel

EXPECTED = (
    'send one list of item ids per session, e.g. {"dataframe_split": {"columns": '
    '["session_id", "items"], "data": [["s1", [214821026, 214821028]]]}}, or {"instances": '
    '[{"session_id": "s1", "items": [214821026, 214821028]}]}, or {"inputs": [[214821026, '
    "214821028]]}; params k (int) and exclude_seen (bool)"
)


@dataclass(frozen=True)
class Limits:
    """What one request may hold, so that no request holds a worker's memory or time for
    long; each raised by an environment variable of the server's process."""

    sessions: int = 10_000  # GRU4REC_SERVING_MAX_SESSIONS
    events: int = 1_000  # per session: GRU4REC_SERVING_MAX_SESSION_EVENTS

    @classmethod
    def from_environment(cls) -> Limits:
        defaults = cls()
        return cls(
            sessions=int(os.environ.get("GRU4REC_SERVING_MAX_SESSIONS", defaults.sessions)),
            events=int(os.environ.get("GRU4REC_SERVING_MAX_SESSION_EVENTS", defaults.events)),
        )


NO_KNOWN_ITEM = "no recommendation: none of the session's items is in the model's catalogue"


def parse_sessions(
    model_input: Any, limits: Limits | None = None
) -> tuple[list[list[Any]], list[Any] | None]:
    """(sessions, session ids or None) from any of the input forms above.

    Raises MlflowException (HTTP 400 from the scoring server) saying what to send, also
    for a request beyond `limits`.
    """
    limits = limits or Limits()
    ids: Any = None
    if isinstance(model_input, pd.DataFrame):
        if "items" not in model_input.columns:
            _bad(f"no `items` column (got columns {list(model_input.columns)})")
        items = list(model_input["items"])
        ids = list(model_input["session_id"]) if "session_id" in model_input.columns else None
    elif isinstance(model_input, dict):
        if "items" not in model_input:
            _bad(f"no `items` field (got {sorted(model_input)})")
        items = list(model_input["items"])
        ids = model_input.get("session_id")
        ids = None if ids is None else list(np.asarray(ids).reshape(-1))
    elif isinstance(model_input, np.ndarray | list):
        rows = list(model_input)
        if rows and all(isinstance(row, dict) for row in rows):
            return parse_sessions(pd.DataFrame(rows), limits)
        items = rows
    else:
        _bad(f"an input of type {type(model_input).__name__}")
    if len(items) > limits.sessions:
        _too_large(
            f"{len(items):,} sessions in one request, more than {limits.sessions:,}: split it "
            "into requests of at most that many (GRU4REC_SERVING_MAX_SESSIONS on the server "
            "raises the limit)"
        )
    sessions = [_id_list(row, position) for position, row in enumerate(items)]
    for position, session in enumerate(sessions):
        if len(session) > limits.events:
            _too_large(
                f"session {position} holds {len(session):,} events, more than "
                f"{limits.events:,}: send its most recent {limits.events:,} (they decide the "
                "recommendations; GRU4REC_SERVING_MAX_SESSION_EVENTS raises the limit)"
            )
    if ids is not None and len(ids) != len(sessions):
        _bad(f"{len(ids)} session ids for {len(sessions)} sessions")
    return sessions, ids


def _id_list(row: Any, position: int) -> list[Any]:
    if isinstance(row, np.ndarray):
        row = row.tolist()
    if not isinstance(row, list | tuple):
        _bad(f"session {position} is {row!r}, not a list of item ids")
    if any(isinstance(item, list | tuple | dict) for item in row):
        _bad(f"session {position} holds nested values, not item ids")
    return list(row)


def _bad(what: str) -> None:
    raise MlflowException(f"bad request: {what}. {EXPECTED}.", error_code=INVALID_PARAMETER_VALUE)


def _too_large(what: str) -> None:
    raise MlflowException(f"request too large: {what}.", error_code=INVALID_PARAMETER_VALUE)


class GRU4RecPyfunc(PythonModel):
    """Top-k recommendations for item sequences, from a checkpoint logged as an artifact."""

    def load_context(self, context: Any) -> None:
        from gru4rec.serving.recommend import Recommender

        self.recommender = Recommender.from_path(context.artifacts["model_dir"], device="auto")
        self.limits = Limits.from_environment()

    # No type hints on predict: MLflow would try to derive a signature from them.
    def predict(self, context, model_input, params=None):
        params = params or {}
        sessions, ids = parse_sessions(model_input, self.limits)
        try:
            k = int(params.get("k", 20))
        except (TypeError, ValueError):
            _bad(f"k = {params.get('k')!r}")
        if k < 1:
            _bad(f"k = {k}")
        table, report = self.recommender.recommend(
            sessions, k, exclude_seen=bool(params.get("exclude_seen", False))
        )
        frame = table.to_pandas()
        frame["note"] = None
        if report.empty_sessions:
            # Every session answers: one without any known item gets a row saying so.
            missing = pd.DataFrame(
                {
                    "session": list(report.empty_sessions),
                    "rank": 0,
                    "item_id": None,
                    "score": None,
                    "note": NO_KNOWN_ITEM,
                }
            )
            frame = frame.astype({"item_id": object, "score": object})
            frame = pd.concat([frame, missing], ignore_index=True).sort_values(
                ["session", "rank"], kind="stable", ignore_index=True
            )
        if ids is not None:
            frame.insert(0, "session_id", [ids[i] for i in frame["session"]])
        return frame


mlflow.models.set_model(GRU4RecPyfunc())
