"""The baseline of the pipeline benchmark: `gru4rec.pipelines.prepare` written in plain pandas.

The same steps on a raw YOOCHOOSE-layout click log (`session,ISO time,item,category`, no
header), as a competent pandas user would write them: `read_csv` with dtypes,
`to_datetime`, a stable sort, `shift` for repeats, `groupby().transform("size")` for the
iterative support filter, the split by session start (a session starting exactly on the
boundary is test), unknown items dropped from test/valid, every split ordered again by
session start, the item map in order of first appearance in train, and Parquet written
with pyarrow. The output directory has the same files and columns as
docs/data-contract.md (the manifest only holds the counts), so the two implementations
can be compared table by table (tests/test_pandas_baseline.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

DAY = 86_400.0
COLUMNS = ["session_id", "timestamp", "item_id", "category"]
OUTPUT_COLUMNS = ["session_id", "item_id", "item_idx", "time"]


def read_yoochoose(path: Path, engine: str = "c") -> pd.DataFrame:
    """`session_id`, `item_id`, `time` (Float64 unix seconds, millisecond precision)."""
    # The pyarrow engine cannot combine `names` with `usecols`: it reads all four columns.
    usecols = ["session_id", "timestamp", "item_id"] if engine == "c" else None
    raw = pd.read_csv(
        path,
        header=None,
        names=COLUMNS,
        usecols=usecols,
        dtype={"session_id": "int64", "timestamp": "str", "item_id": "int64", "category": "str"},
        engine=engine,
    )
    stamps = pd.to_datetime(raw["timestamp"], format="ISO8601", utc=True)
    millis = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
    return pd.DataFrame(
        {
            "session_id": raw["session_id"],
            "item_id": raw["item_id"],
            "time": millis.astype("float64") / 1000.0,
        }
    )


def count(events: pd.DataFrame) -> dict[str, int]:
    return {
        "events": len(events),
        "sessions": int(events["session_id"].nunique()),
        "items": int(events["item_id"].nunique()),
    }


def order_events(events: pd.DataFrame) -> pd.DataFrame:
    """Sessions by start time (then id), events by time; ties keep the log's order."""
    start = events.groupby("session_id")["time"].transform("min")
    return (
        events.assign(_start=start)
        .sort_values(["_start", "session_id", "time"], kind="stable", ignore_index=True)
        .drop(columns="_start")
    )


def remove_consecutive_repeats(events: pd.DataFrame) -> pd.DataFrame:
    same_item = events["item_id"].eq(events["item_id"].shift())
    same_session = events["session_id"].eq(events["session_id"].shift())
    return events[~(same_item & same_session)]


def filter_support(
    events: pd.DataFrame, min_session_length: int, min_item_support: int
) -> tuple[pd.DataFrame, int]:
    rounds = 0
    while True:
        item_support = events.groupby("item_id")["item_id"].transform("size")
        session_length = events.groupby("session_id")["session_id"].transform("size")
        keep = (item_support >= min_item_support) & (session_length >= min_session_length)
        if keep.all():
            return events, rounds
        events, rounds = events[keep], rounds + 1


def split_by_time(events: pd.DataFrame, days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    starts = events.groupby("session_id")["time"].transform("min")
    boundary = starts.max() - days * DAY  # the last session start minus the days
    is_test = starts >= boundary
    return events[~is_test], events[is_test]


def drop_unknown_items(
    frame: pd.DataFrame, reference: pd.DataFrame, min_session_length: int
) -> pd.DataFrame:
    known = frame[frame["item_id"].isin(reference["item_id"].unique())]
    length = known.groupby("session_id")["session_id"].transform("size")
    return known[length >= min_session_length]


def item_map(train: pd.DataFrame) -> pd.DataFrame:
    ids = train["item_id"].unique()  # in order of first appearance
    support = train["item_id"].value_counts()
    return pd.DataFrame(
        {
            "item_id": ids,
            "item_idx": np.arange(len(ids), dtype=np.int32),
            "support": support.reindex(ids).to_numpy(dtype=np.int64),
        }
    )


def prepare_pandas(
    path: Path,
    out_dir: Path,
    *,
    test_days: float = 1.0,
    valid_days: float | None = None,
    min_session_length: int = 2,
    min_item_support: int = 5,
    engine: str = "c",
) -> dict[str, object]:
    """Run every step and write `out_dir` (created); returns the manifest."""
    started = time.perf_counter()
    steps: list[dict[str, object]] = []

    def record(step: str, frame: pd.DataFrame, scope: str = "all") -> None:
        steps.append({"step": step, "scope": scope, **count(frame)})

    events = read_yoochoose(Path(path), engine)
    record("read", events)
    events = order_events(events)
    events = remove_consecutive_repeats(events)
    record("remove consecutive repeats", events)
    events, rounds = filter_support(events, min_session_length, min_item_support)
    record(f"filter ({rounds} rounds)", events)

    train, test = split_by_time(events, test_days)
    del events
    record("split", train, "train")
    record("split", test, "test")
    test = drop_unknown_items(test, train, min_session_length)
    record("drop items unknown to training", test, "test")
    splits = {"train": train, "test": test}

    valid_days = test_days if valid_days is None else valid_days
    if valid_days > 0:
        train_tr, valid = split_by_time(train, valid_days)
        record("validation", train_tr, "train_tr")
        record("validation", valid, "valid")
        valid = drop_unknown_items(valid, train_tr, min_session_length)
        record("drop items unknown to training", valid, "valid")
        splits.update(train_tr=train_tr, valid=valid)
    for name, frame in splits.items():
        if frame.empty:
            raise ValueError(f"the {name} split is empty")

    # Dropped events can move a session's start: order each split again.
    splits = {name: order_events(frame) for name, frame in splits.items()}
    items = item_map(splits["train"])

    out_dir = Path(out_dir)
    out_dir.mkdir()
    index = pd.Series(items["item_idx"].to_numpy(), index=items["item_id"].to_numpy())
    for name, frame in splits.items():
        output = frame.assign(item_idx=frame["item_id"].map(index))[OUTPUT_COLUMNS]
        output.to_parquet(out_dir / f"{name}.parquet", engine="pyarrow", index=False)
    items.to_parquet(out_dir / "items.parquet", engine="pyarrow", index=False)
    manifest: dict[str, object] = {
        "steps": steps,
        "splits": {name: count(frame) for name, frame in splits.items()},
        "n_items": len(items),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
