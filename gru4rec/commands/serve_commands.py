"""`gru4rec index` and `gru4rec recommend`: from a trained model to ranked recommendations."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gru4rec.commands.options import Device
from gru4rec.errors import ConfigError

logger = logging.getLogger(__name__)
console = Console(stderr=True)
out_console = Console(width=None if sys.stdout.isatty() else 160)


def index(
    model_dir: Annotated[
        Path, typer.Argument(help="A model directory written by `gru4rec train`.")
    ],
    kind: Annotated[
        str,
        typer.Option(
            help="flat: exact inner product (default); hnsw or ivf: approximate, for "
            "large catalogues (their recall against exact search is measured)."
        ),
    ] = "flat",
    hnsw_m: Annotated[int, typer.Option(help="HNSW graph degree.")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW search width while building.")] = 200,
    ef_search: Annotated[int, typer.Option(help="HNSW search width when querying.")] = 128,
    nlist: Annotated[int, typer.Option(help="IVF clusters (0: about 4 * sqrt(items)).")] = 0,
    nprobe: Annotated[int, typer.Option(help="IVF clusters visited per query.")] = 16,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Prepared data whose test sessions are the queries for measuring "
            "recall (default: the model's training data directory)."
        ),
    ] = None,
    track: Annotated[bool, typer.Option(help="Log the index to the model's MLflow run.")] = True,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: the one the model was trained with)."),
    ] = None,
) -> None:
    """Index the model's item vectors (bias as an extra dimension) in FAISS, beside the model."""
    from gru4rec.jobs.indexing import build_index
    from gru4rec.serving.retrieval import IndexOptions

    options = IndexOptions(
        kind=kind,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        nlist=nlist,
        nprobe=nprobe,
    )
    with console.status(f"building a {kind} index"):
        item_index, folder = build_index(model_dir, options, data=data)
    meta = item_index.meta
    console.print(
        f"wrote {folder}: {kind}, {meta['n_items']:,} items of dimension {meta['dim']}, "
        f"recall@20 against exact {meta['recall_at_20']:.4f} "
        f"({meta['recall_queries']:,} queries), built in {meta['build_seconds']:.1f} s"
    )
    if track:
        _log_index_to_run(model_dir, folder, meta, tracking_uri)


def _log_index_to_run(model_dir: Path, folder: Path, meta: dict[str, Any], uri: str | None) -> None:
    run_file = model_dir / "mlflow_run.json"
    if not run_file.exists():
        console.print("the model has no MLflow run (trained with --no-track): index not logged")
        return
    import mlflow

    from gru4rec.serving.tracking import numeric_metrics

    run = json.loads(run_file.read_text())
    mlflow.set_tracking_uri(uri or run["tracking_uri"])
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_artifacts(str(folder), artifact_path="index")
        mlflow.log_metrics(numeric_metrics({f"index_{k}": v for k, v in meta.items()}))
    console.print(f"logged the index to MLflow run {run['run_id']}")


def recommend(
    model: Annotated[
        str,
        typer.Argument(
            help="A model directory, or an MLflow model URI (models:/NAME@ALIAS, "
            "models:/NAME/VERSION, runs:/RUN_ID/model)."
        ),
    ],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="Session events: Parquet or CSV/TSV.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Parquet file to write (atomically).")
    ],
    k: Annotated[int, typer.Option(help="Recommendations per session.")] = 20,
    log_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Layout of the input, as for `gru4rec prepare` (default "
            "prepared: session_id, item_id, time).",
        ),
    ] = "prepared",
    session_col: Annotated[str | None, typer.Option(help="Session id column.")] = None,
    item_col: Annotated[str | None, typer.Option(help="Item id column.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Time column.")] = None,
    time_unit: Annotated[
        str | None, typer.Option(help="Unit of the time column: s, ms or iso.")
    ] = None,
    order_col: Annotated[
        str | None, typer.Option(help="Position column (instead of a time).")
    ] = None,
    separator: Annotated[str | None, typer.Option(help="Field separator of text input.")] = None,
    exclude_seen: Annotated[
        bool,
        typer.Option(
            "--exclude-seen/--no-exclude-seen", help="Leave out items already in the session."
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Sessions encoded and scored together (with --engine ray also the size of "
            "a bucket: one Parquet file of the output).",
            min=1,
        ),
    ] = 1024,
    device: Device = "auto",
    index_kind: Annotated[
        str,
        typer.Option(
            "--index",
            help="flat (exact FAISS), hnsw or ivf (approximate; built with "
            "`gru4rec index --kind`), none (exact, all items scored in torch), or auto: flat "
            "for GRU4Rec, none for families whose scores are not inner products (baselines, "
            "hybrids).",
        ),
    ] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="local (this process) or ray: a pool of Ray actors scores the sessions and "
            "--output is a folder of Parquet files (pip install 'gru4rec[ray]').",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the Ray cluster to use (default $RAY_ADDRESS, else a "
            "local Ray instance with this machine's CPUs).",
        ),
    ] = None,
    actors: Annotated[
        int | None,
        typer.Option(
            help="With --engine ray: scoring actors (default: the CPUs / per actor).", min=1
        ),
    ] = None,
    cpus_per_actor: Annotated[
        float, typer.Option(help="With --engine ray: CPUs each actor reserves.", min=0.01)
    ] = 1.0,
) -> None:
    """Write the top-k items for every input session: long Parquet `session_id, rank, item_id,
    score` (original ids), ordered by session start then rank. Unknown items are skipped and
    counted; sessions without any known item are reported.
    """
    from gru4rec.commands.display import progress_bar
    from gru4rec.jobs.batch_recommend import recommend_file
    from gru4rec.pipelines.sources import resolve_spec
    from gru4rec.serving.recommend import Recommender
    from gru4rec.serving.tracking import fetch_checkpoint

    spec = resolve_spec(
        log_format,
        session_col=session_col,
        item_col=item_col,
        time_col=time_col,
        time_unit=time_unit,
        order_col=order_col,
        separator=separator,
    )
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine {engine!r}: choose local or ray.")
    if engine == "ray":
        summary = _recommend_on_ray(
            model,
            input_path,
            spec,
            output,
            k=k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            address=ray_address,
            device=device,
        )
        _report(output, summary)
        return
    model_dir = fetch_checkpoint(model)
    recommender = Recommender.from_path(model_dir, device=device, index=index_kind)
    with progress_bar(console) as progress:
        task = progress.add_task("recommending", total=None, info="")

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = recommend_file(
            recommender,
            input_path,
            spec,
            output,
            k=k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            progress=advance,
        )
    _report(output, summary)


def _report(output: Path, summary: dict) -> None:
    actors = f" on {summary['actors']} Ray actors" if "actors" in summary else ""
    console.print(
        f"wrote {output}: {summary['sessions_served']:,} sessions served, "
        f"{summary['sessions_skipped']:,} skipped (no known item), "
        f"{summary['unknown_item_events']:,} unknown item events skipped, "
        f"{summary['rows']:,} rows, {summary['sessions_per_s']:,.0f} sessions/s{actors}"
    )


def _recommend_on_ray(model: str, *args: Any, **options: Any) -> dict:
    """`jobs.ray_recommend.recommend_on_ray`, or what to install when Ray is missing."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'gru4rec[ray]' (or use --engine local)."
        ) from None
    from gru4rec.jobs.ray_recommend import recommend_on_ray

    return recommend_on_ray(model, *args, **options)
