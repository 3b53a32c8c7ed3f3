"""Batch recommendations on Ray Data: buckets of sessions scored by a pool of actors.

The driver streams the input (Polars, bounded memory: `pipelines.buckets.partition`)
into Parquet buckets by a hash of the session id, so that every session's events lie in
one bucket, whatever the input's size. The buckets are a Ray dataset scored by `actors`
actors that each load the model once (from a model directory every node can read, or an
MLflow URI such as `models:/NAME@ALIAS`) and, per bucket, order its sessions as the
single-process path does and write their top-k as one Parquet file (the columns of the
single-process output) into a temporary sibling folder, renamed into place only when
every bucket is written: a failed run leaves no output. On a cluster, the buckets and
the output are in folders every node reads and writes (beside the output).

Without `address` a local Ray instance is started (and stopped) with the machine's CPUs;
with one (or RAY_ADDRESS), that cluster is used. Ray is the optional extra
`pip install gru4rec[ray]`.

Example:
    >>> summary = recommend_on_ray("models/m", Path("sessions.parquet"), spec,
    ...                            Path("recs"), pool=RayPool(actors=2))
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from gru4rec.errors import ConfigError, InputDataError
from gru4rec.fileio import swap_into_place
from gru4rec.jobs.batch_recommend import group_sessions, score_sessions, staging_beside
from gru4rec.pipelines.buckets import count_events, partition
from gru4rec.pipelines.sources import SourceSpec, expand_inputs
from gru4rec.serving.tracking import fetch_checkpoint, resolve_tracking_uri

MEAN_SESSION_EVENTS = 5  # to size the buckets from the events (the sessions are not known)
# Polars buffers every bucket's rows while it writes them: the driver's pass over a log of
# 30M events peaked at 0.47 GB for 16 buckets, 1.2 GB for 256 (1.3 GB for 300M events: it
# does not grow with the log) and 2.0 GB for 4,096. An actor scores its bucket in batches.
MAX_BUCKETS = 256


class SessionScorer:
    """A Ray actor: the model loaded once, then the top-k of each bucket of sessions,
    written as one Parquet file of the output's staging folder (named by the bucket)."""

    def __init__(
        self,
        model: str,
        k: int,
        exclude_seen: bool,
        device: str,
        folder: str,
        batch_size: int,
        index: str = "none",
    ) -> None:
        from gru4rec.serving.recommend import Recommender

        self.recommender = Recommender.from_path(
            fetch_checkpoint(model), device=device, index=index
        )
        self.k, self.exclude_seen, self.folder = k, exclude_seen, Path(folder)
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        bucket = Path(batch["bucket"][0].as_py())
        grouped = group_sessions(pl.read_parquet(sorted(bucket.glob("*.parquet"))))
        rows, counts = score_sessions(
            self.recommender,
            grouped,
            self.k,
            exclude_seen=self.exclude_seen,
            batch_size=self.batch_size,
        )
        part = self.folder / f"part-{bucket.name.rpartition('=')[2]:0>5}.parquet"
        rows.write_parquet(part.with_suffix(".tmp"))
        os.replace(part.with_suffix(".tmp"), part)
        return pa.table({name: [value] for name, value in counts.items()})


@dataclass(frozen=True)
class RayPool:
    """The actors that score the buckets (`recommend --engine ray`'s options).

    actors: the pool's size (None: the cluster's CPUs / cpus_per_actor); address: the Ray
    cluster (None: $RAY_ADDRESS, else a local instance started and stopped here).
    """

    actors: int | None = None
    cpus_per_actor: float = 1.0
    address: str | None = None


def recommend_on_ray(
    model: str,
    input_path: Path,
    spec: SourceSpec,
    output: Path,
    *,
    k: int = 20,
    exclude_seen: bool = False,
    batch_size: int = 1024,
    pool: RayPool = RayPool(),
    device: str = "cpu",
    index: str = "none",
    scorer: type = SessionScorer,
) -> dict[str, Any]:
    """Write the top-k of every session in `input_path` as a Parquet dataset `output`.

    The rows are the single-process path's (`recommend_file`): `session_id, rank, item_id,
    score`, one file per bucket of about `batch_size` sessions (at most 256 buckets),
    each in order of session start then rank. index: as `Recommender.from_path`'s, in every
    actor. scorer: the actor class. Returns the summary `recommend_file` returns, with
    `actors`, `buckets` and `read_seconds` (the driver's pass over the input; `seconds` is
    the scoring).
    """
    import ray

    if k < 1:
        raise ConfigError(f"--k must be at least 1; got {k}.")
    output = Path(output)
    staging = _staging_dir(output)
    inputs = staging_beside(output.with_name(output.name + "-input"), folder=True)
    started_ray = not ray.is_initialized()
    try:
        source = _start_ray(model, pool.address, started=started_ray)
        size = pool.actors or max(
            1, int(ray.cluster_resources().get("CPU", 1) // pool.cpus_per_actor)
        )
        read_started = time.perf_counter()
        buckets = _bucket_inputs(input_path, spec, inputs, size, batch_size)
        read_seconds = time.perf_counter() - read_started
        size = min(size, len(buckets))  # an actor without a bucket would only load the model
        started = time.perf_counter()
        arguments = (source, k, exclude_seen, device, str(staging), batch_size, index)
        written = (
            ray.data.from_items([{"bucket": str(bucket)} for bucket in buckets])
            .map_batches(
                scorer,
                fn_constructor_args=arguments,
                batch_size=1,
                batch_format="pyarrow",
                num_cpus=pool.cpus_per_actor,
                compute=ray.data.ActorPoolStrategy(size=size),
            )
            .take_all()
        )
        seconds = time.perf_counter() - started
        counts = {name: sum(int(row[name]) for row in written) for name in written[0]}
        if counts["sessions_served"] == 0:
            raise InputDataError(
                f"{input_path}: no session has an item the model knows; nothing to recommend."
            )
        swap_into_place(staging, output)  # an older output is replaced only now
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(inputs, ignore_errors=True)
        if started_ray and ray.is_initialized():
            ray.shutdown()
    served = counts["sessions_served"]
    return {
        **counts,
        "seconds": seconds,
        "sessions_per_s": served / seconds if seconds > 0 else 0.0,
        "actors": size,
        "buckets": len(buckets),
        "read_seconds": read_seconds,
    }


def _start_ray(model: str, address: str | None, *, started: bool) -> str:
    """Ray initialised (unless it was already); returns where the actors load the model."""
    import ray

    model_dir = fetch_checkpoint(model)
    # On this machine the actors read the directory fetched here; on a cluster each
    # fetches the model itself, from the tracking server this process uses.
    remote = (address or os.environ.get("RAY_ADDRESS")) is not None
    source = model if remote and not Path(model).exists() else str(model_dir)
    if started:
        env = {"MLFLOW_TRACKING_URI": resolve_tracking_uri()} if source == model else {}
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": env},
        )
    return source


def _bucket_inputs(
    input_path: Path, spec: SourceSpec, folder: Path, actors: int, batch_size: int
) -> list[Path]:
    """The input's sessions in Parquet buckets under `folder`: about `batch_size` sessions
    a bucket, at least one an actor, at most MAX_BUCKETS."""
    files, _ = expand_inputs([input_path])  # a file, a directory of parts or a pattern
    wanted = math.ceil(count_events(files) / (MEAN_SESSION_EVENTS * batch_size))
    return partition(files, spec, folder, min(max(wanted, actors), MAX_BUCKETS), compact=False)


def _staging_dir(output: Path) -> Path:
    """A temporary folder beside `output` (`batch_recommend.staging_beside`)."""
    if output.exists() and not output.is_dir():
        raise InputDataError(f"--out {output}: with --engine ray the output is a folder.")
    return staging_beside(output, folder=True)
