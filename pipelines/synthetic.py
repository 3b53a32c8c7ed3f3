"""A synthetic click-log generator, for the demo, the unit tests and the benchmarks.

Sessions walk a fixed random successor graph (each item has three likely next
items), so the next item is learnable; starts and random jumps follow a Zipf
popularity, so a few items are far more popular than the rest. Some clicks repeat
the previous item and some sessions have one event, so every cleaning step has
something to do; `revisit` makes sessions return to their earlier items (repeat
consumption, as in news and e-commerce logs). Everything is vectorised over sessions: 30 million events take
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

LogFormat = Literal["gru4rec-tsv", "yoochoose"]

START_TIME = 1_396_310_400.0  # 2014-04-01 00:00 UTC, as in YOOCHOOSE
ITEM_ID_BASE = 214_500_000  # ids look like YOOCHOOSE's: large and not dense


@dataclass(frozen=True)
class SyntheticLog:
    """How a synthetic log is drawn."""

    n_sessions: int = 5_000
    n_items: int = 500
    days: float = 30.0  # sessions start uniformly over this period
    mean_length: float = 5.0  # session lengths are geometric (>= 1), capped at max_length
    max_length: int = 50
    follow: float = 0.85  # chance that the next click is one of the item's successors
    repeat: float = 0.05  # chance that a click repeats the previous item
    revisit: float = 0.0  # chance that a click returns to an earlier item (not the previous)
    zipf: float = 1.1  # popularity exponent of starts and jumps
    seed: int = 0


def generate_clicks(spec: SyntheticLog = SyntheticLog()) -> pl.DataFrame:
    """Draw a click log: `session_id`, `item_id`, `time` (unix s), ordered by session, time."""
    rng = np.random.default_rng(spec.seed)
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** spec.zipf
    popularity /= popularity.sum()
    successors = rng.integers(0, spec.n_items, size=(spec.n_items, 3))
    successor_weights = np.array([0.6, 0.3, 0.1])

    lengths = np.minimum(
        rng.geometric(1.0 / spec.mean_length, size=spec.n_sessions), spec.max_length
    )
    starts = np.sort(rng.uniform(0, spec.days * 86_400.0, size=spec.n_sessions))

    # One column per position; sessions are rows, positions past a session's end unused.
    items = np.empty((spec.n_sessions, spec.max_length), dtype=np.int64)
    items[:, 0] = rng.choice(spec.n_items, size=spec.n_sessions, p=popularity)
    for position in range(1, int(lengths.max())):
        previous = items[:, position - 1]
        pick = rng.choice(3, size=spec.n_sessions, p=successor_weights)
        follow_next = successors[previous, pick]
        jump = rng.choice(spec.n_items, size=spec.n_sessions, p=popularity)
        draw = rng.random(spec.n_sessions)
        items[:, position] = np.where(
            draw < spec.repeat,
            previous,
            np.where(draw < spec.repeat + spec.follow, follow_next, jump),
        )
        if spec.revisit > 0 and position >= 2:  # no draw otherwise: other logs stay as they were
            back = (rng.random(spec.n_sessions) * (position - 1)).astype(np.int64)  # 0..pos-2
            earlier = items[np.arange(spec.n_sessions), back]
            revisit = rng.random(spec.n_sessions) < spec.revisit
            items[:, position] = np.where(revisit, earlier, items[:, position])

    mask = np.arange(spec.max_length)[None, :] < lengths[:, None]
    gaps = rng.exponential(60.0, size=(spec.n_sessions, spec.max_length))
    times = START_TIME + starts[:, None] + np.cumsum(gaps, axis=1) - gaps[:, :1]
    item_ids = ITEM_ID_BASE + rng.permutation(spec.n_items)  # popular items get no small ids
    return pl.DataFrame(
        {
            "session_id": np.repeat(np.arange(1, spec.n_sessions + 1), lengths),
            "item_id": item_ids[items[mask]],
            "time": np.round(times[mask], 3),
        }
    )


def write_click_log(clicks: pl.DataFrame, path: Path, log_format: LogFormat) -> Path:
    """Write `clicks` as a GRU4Rec TSV (with header) or a raw `yoochoose-clicks.dat` CSV.

    A `.gz` suffix compresses the file.
    """
    path = Path(path)
    if log_format == "gru4rec-tsv":
        table = clicks.select(
            pl.col("session_id").alias("SessionId"),
            pl.col("item_id").alias("ItemId"),
            pl.col("time").alias("Time"),
        )
        separator, header = "\t", True
    else:
        iso = pl.from_epoch((pl.col("time") * 1000).cast(pl.Int64), time_unit="ms")
        table = clicks.select(
            "session_id",
            iso.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("timestamp"),
            "item_id",
            pl.lit("0").alias("category"),
        )
        separator, header = ",", False
    table.write_csv(
        path,
        separator=separator,
        include_header=header,
        compression="gzip" if path.suffix == ".gz" else "uncompressed",
    )
    return path
