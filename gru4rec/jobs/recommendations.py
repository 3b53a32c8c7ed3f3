"""Batch recommendations on either engine: this process (`batch_recommend`) or a pool of
Ray actors (`ray_recommend`), as `gru4rec recommend --engine` chooses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gru4rec.errors import ConfigError
from gru4rec.jobs.batch_recommend import recommend_file
from gru4rec.jobs.ray_recommend import RayPool, recommend_on_ray
from gru4rec.options import Compute
from gru4rec.pipelines.sources import SourceSpec
from gru4rec.serving.recommend import Recommender
from gru4rec.serving.tracking import fetch_checkpoint


def recommend_sessions(
    model: str,
    input_path: Path,
    spec: SourceSpec,
    output: Path,
    *,
    k: int = 20,
    exclude_seen: bool = False,
    batch_size: int = 1024,
    index: str = "auto",
    compute: Compute = Compute(),
    pool: RayPool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """`gru4rec recommend MODEL --input ... --out ...`: the top-k of every session, in this
    process (`recommend_file`, reporting `progress`), or with `pool` on Ray actors
    (`recommend_on_ray`: `output` is then a folder of Parquet files). MODEL: a directory
    or an MLflow URI. Returns the summary of either."""
    if pool is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--engine ray needs Ray: pip install 'gru4rec[ray]' (or use --engine local)."
            ) from None
        return recommend_on_ray(
            model,
            input_path,
            spec,
            output,
            k=k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            pool=pool,
            device=compute.device,
            index=index,
        )
    recommender = Recommender.from_path(fetch_checkpoint(model), device=compute.device, index=index)
    return recommend_file(
        recommender,
        input_path,
        spec,
        output,
        k=k,
        exclude_seen=exclude_seen,
        batch_size=batch_size,
        progress=progress,
    )


__all__ = ["RayPool", "recommend_sessions"]
