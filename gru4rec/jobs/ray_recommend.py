"""Batch recommendations on Ray Data: the sessions scored by a pool of actors.

The input is read and grouped into sessions as the single-process path does
(`batch_recommend.read_sessions`: Polars, streaming), so each session's events stay
together and in order whatever the engine. The sessions then become a Ray dataset in
blocks of `batch_size`, scored by `actors` actors that each load the model once (from a
model directory every node can read, or an MLflow URI such as `models:/NAME@ALIAS`), and
written as a Parquet dataset (one file per block; the columns of the single-process output)
into a temporary sibling folder, renamed into place only when every block is written: a
failed run leaves no output.

Without `address` a local Ray instance is started (and stopped) with the machine's CPUs;
with one (or RAY_ADDRESS), that cluster is used. Ray is the optional extra
`pip install gru4rec[ray]`.

Example:
    >>> summary = recommend_on_ray("models/m", Path("sessions.parquet"), spec,
    ...                            Path("recs"), actors=2)
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from gru4rec.checkpoint import ITEMS_FILE, read_items
from gru4rec.errors import ConfigError, InputDataError
from gru4rec.fileio import swap_into_place
from gru4rec.jobs.batch_recommend import (
    as_model_ids,
    model_id_lists,
    read_sessions,
    staging_beside,
)
from gru4rec.pipelines.sources import SourceSpec
from gru4rec.tracking import fetch_checkpoint, resolve_tracking_uri


class SessionScorer:
    """A Ray actor: the model loaded once, then the top-k of each block of sessions,
    written as one Parquet file of the staging folder (named by the block's first session,
    so files sort in session order)."""

    def __init__(self, model: str, k: int, exclude_seen: bool, device: str, folder: str) -> None:
        from gru4rec.recommend import Recommender

        self.recommender = Recommender.from_path(fetch_checkpoint(model), device=device)
        self.k, self.exclude_seen, self.folder = k, exclude_seen, Path(folder)

    def __call__(self, batch: pa.Table) -> pa.Table:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        sessions = as_model_ids(frame["item_id"], self.recommender.item_ids.dtype)
        table, _ = self.recommender.recommend(
            sessions, self.k, exclude_seen=self.exclude_seen, batch_size=len(sessions)
        )
        rows = table.select(
            frame["session_id"].gather(table["session"].to_numpy()).alias("session_id"),
            pl.col("rank"), pl.col("item_id"), pl.col("score"),
        )  # fmt: skip
        first = int(frame["position"].min())  # type: ignore[arg-type]
        part = self.folder / f"part-{first:012d}.parquet"
        rows.write_parquet(part.with_suffix(".tmp"))
        os.replace(part.with_suffix(".tmp"), part)
        return pa.table({"part": [part.name], "rows": [rows.height]})


def recommend_on_ray(
    model: str,
    input_path: Path,
    spec: SourceSpec,
    output: Path,
    *,
    k: int = 20,
    exclude_seen: bool = False,
    batch_size: int = 1024,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    address: str | None = None,
    device: str = "cpu",
    scorer: type = SessionScorer,
) -> dict[str, Any]:
    """Write the top-k of every session in `input_path` as a Parquet dataset `output`.

    The rows are the single-process path's (`recommend_file`): `session_id, rank, item_id,
    score`, one file per block of `batch_size` sessions, each in order of session start
    then rank. actors: the pool's size (default: the cluster's CPUs / cpus_per_actor; the
    actors are the only work that takes CPUs). scorer: the actor class. Returns the summary
    `recommend_file` returns, with `actors`.
    """
    import ray

    if k < 1:
        raise ConfigError(f"--k must be at least 1; got {k}.")
    output = Path(output)
    staging = _staging_dir(output)
    started_ray = not ray.is_initialized()
    try:
        model_dir = fetch_checkpoint(model)
        item_ids = read_items(model_dir / ITEMS_FILE)["item_id"]
        grouped = read_sessions(input_path, spec)
        counts = _known_items(grouped["item_id"], item_ids)
        if counts["served"] == 0:
            raise InputDataError(
                f"{input_path}: no session has an item the model knows; nothing to recommend."
            )
        sessions = grouped.with_row_index("position").with_columns(
            pl.col("position").cast(pl.Int64)
        )
        # On this machine the actors read the directory fetched here; on a cluster each
        # fetches the model itself, from the tracking server this process uses.
        remote = (address or os.environ.get("RAY_ADDRESS")) is not None
        source = model if remote and not Path(model).exists() else str(model_dir)
        if started_ray:
            env = {"MLFLOW_TRACKING_URI": resolve_tracking_uri()} if source == model else {}
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": env})  # fmt: skip
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
        started = time.perf_counter()
        # The blocks are made here, not by Ray tasks: the actors may hold every CPU.
        blocks = [sessions.slice(first, batch_size).to_arrow()
                  for first in range(0, sessions.height, batch_size)]  # fmt: skip
        pool = min(pool, len(blocks))  # an actor without a block would only load the model
        written = ray.data.from_arrow(blocks).map_batches(
            scorer, fn_constructor_args=(source, k, exclude_seen, device, str(staging)),
            batch_size=None, batch_format="pyarrow", num_cpus=cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=pool),
        ).take_all()  # fmt: skip
        seconds = time.perf_counter() - started
        rows = sum(int(row["rows"]) for row in written)
        swap_into_place(staging, output)  # an older output is replaced only now
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if started_ray and ray.is_initialized():
            ray.shutdown()
    return {
        "sessions": sessions.height,
        "sessions_served": counts["served"],
        "sessions_skipped": sessions.height - counts["served"],
        "unknown_item_events": counts["unknown"],
        "rows": rows,
        "seconds": seconds,
        "sessions_per_s": counts["served"] / seconds if seconds > 0 else 0.0,
        "actors": pool,
    }


def _known_items(lists: pl.Series, item_ids: pl.Series) -> dict[str, int]:
    """Sessions with a known item (`served`) and events of unknown items (`unknown`), as
    the single-process path counts them (ids that do not convert are left out)."""
    lists = model_id_lists(lists, item_ids.dtype)
    events = pl.DataFrame({"session": pl.int_range(len(lists), eager=True), "item": lists})
    events = events.explode("item").drop_nulls("item")
    known = events.with_columns(pl.col("item").is_in(item_ids.implode()).alias("known"))
    return {
        "served": known.filter("known")["session"].n_unique(),
        "unknown": int((~known["known"]).sum()),
    }


def _staging_dir(output: Path) -> Path:
    """A temporary folder beside `output` (`batch_recommend.staging_beside`)."""
    if output.exists() and not output.is_dir():
        raise InputDataError(f"--output {output}: with --engine ray the output is a folder.")
    return staging_beside(output, folder=True)
