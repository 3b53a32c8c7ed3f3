"""`gru4rec index` and `gru4rec recommend`: from a trained model to ranked recommendations."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gru4rec.errors import ConfigError, InputDataError

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
    from gru4rec.checkpoint import load_checkpoint
    from gru4rec.retrieval import IndexOptions, ItemIndex, item_vectors, weights_fingerprint

    options = IndexOptions(kind=kind, hnsw_m=hnsw_m, ef_construction=ef_construction,  # type: ignore[arg-type]
                           ef_search=ef_search, nlist=nlist, nprobe=nprobe)  # fmt: skip
    model, _config, items = load_checkpoint(model_dir, device="cpu")
    vectors = item_vectors(model)
    with console.status(f"building a {kind} index of {len(vectors):,} items"):
        item_index = ItemIndex.build(vectors, options)
        queries = _recall_queries(model, items, model_dir, data)
        item_index.meta["recall_at_20"] = (
            1.0
            if kind == "flat"
            else item_index.recall_against_exact(vectors, queries, min(20, len(vectors)))
        )
        item_index.meta["recall_queries"] = len(queries)
        folder = item_index.save(model_dir, weights_fingerprint(model_dir))
    console.print(
        f"wrote {folder}: {kind}, {len(vectors):,} items of dimension {vectors.shape[1]}, "
        f"recall@20 against exact {item_index.meta['recall_at_20']:.4f} "
        f"({len(queries):,} queries), built in {item_index.meta['build_seconds']:.1f} s"
    )
    if track:
        _log_index_to_run(model_dir, folder, item_index.meta, tracking_uri)


def _recall_queries(model: Any, items: Any, model_dir: Path, data: Path | None) -> Any:
    """Query vectors for measuring recall: test-session states, else the items' own vectors."""
    import numpy as np

    from gru4rec.recommend import Recommender
    from gru4rec.retrieval import item_vectors, query_vectors

    data = data or _training_data_dir(model_dir)
    recommender = Recommender(model, items, "cpu")
    if data is not None and (data / "test.parquet").exists():
        import polars as pl

        sessions = (
            pl.read_parquet(data / "test.parquet").group_by("session_id", maintain_order=True)
            .agg("item_id").head(2000)["item_id"].to_list()
        )  # fmt: skip
        mapped = [s for s in recommender.to_indices(sessions)[0] if s]
        if mapped:
            return query_vectors(recommender.encode_indices(mapped))
    vectors = item_vectors(model)
    sample = np.random.default_rng(0).choice(len(vectors), min(2000, len(vectors)), replace=False)
    queries = vectors[sample].copy()
    queries[:, -1] = 1.0  # an item's own vector stands in for a session state
    return queries


def _training_data_dir(model_dir: Path) -> Path | None:
    extra = json.loads((model_dir / "config.json").read_text()).get("extra", {})
    path = extra.get("data_dir")
    return Path(path) if path and Path(path).exists() else None


def _log_index_to_run(model_dir: Path, folder: Path, meta: dict[str, Any], uri: str | None) -> None:
    run_file = model_dir / "mlflow_run.json"
    if not run_file.exists():
        console.print("the model has no MLflow run (trained with --no-track): index not logged")
        return
    import mlflow

    from gru4rec.tracking import numeric_metrics

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
        int, typer.Option(help="Sessions encoded and scored together.", min=1)
    ] = 1024,
    device: Annotated[str, typer.Option(help="auto (GPU if present), cpu or cuda.")] = "auto",
    index_kind: Annotated[
        str,
        typer.Option(
            "--index",
            help="flat (exact FAISS), hnsw or ivf (approximate; built with "
            "`gru4rec index --kind`), or none (exact, all items scored in torch).",
        ),
    ] = "flat",
) -> None:
    """Write the top-k items for every input session: long Parquet `session_id, rank, item_id,
    score` (original ids), ordered by session start then rank. Unknown items are skipped and
    counted; sessions without any known item are reported.
    """
    if k < 1:
        raise ConfigError(f"--k must be at least 1; got {k}.")
    staging = _check_output(output)
    try:
        _recommend(model, input_path, output, staging, k, log_format, dict(
            session_col=session_col, item_col=item_col, time_col=time_col, time_unit=time_unit,
            order_col=order_col, separator=separator,
        ), exclude_seen, batch_size, device, index_kind)  # fmt: skip
    finally:
        staging.unlink(missing_ok=True)


def _check_output(output: Path) -> Path:
    """Fail before any work if the output cannot be written; returns the staging path."""
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise InputDataError(f"--output {output}: the output is Parquet; name it *.parquet.")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise InputDataError(
            f"--output {output}: the directory {parent} does not exist; create it first."
        )
    staging = parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.touch()
    except OSError as error:
        raise InputDataError(
            f"--output {output}: cannot write in {parent} ({error.strerror})."
        ) from None
    return staging


def _recommend(
    model: str, input_path: Path, output: Path, staging: Path, k: int, log_format: str,
    columns: dict[str, Any], exclude_seen: bool, batch_size: int, device: str, index_kind: str,
) -> None:  # fmt: skip
    import polars as pl

    from gru4rec.progress import progress_bar
    from gru4rec.recommend import Recommender
    from pipelines.sessions import order_events
    from pipelines.sources import read_events, resolve_spec

    model_dir = resolve_model(model)
    recommender = Recommender.from_path(model_dir, device=device, index=index_kind)
    spec = resolve_spec(log_format, **columns)
    events = order_events(read_events([input_path], spec))
    grouped = events.group_by("session_id", maintain_order=True).agg("item_id")
    session_ids, sessions = grouped["session_id"], grouped["item_id"].to_list()
    if recommender.item_ids.dtype != grouped["item_id"].dtype.inner:  # type: ignore[attr-defined]
        sessions = _cast_ids(sessions, recommender.item_ids.dtype)
    started = time.perf_counter()
    parts, unknown, empty = [], 0, 0
    with progress_bar(console) as progress:
        task = progress.add_task("recommending", total=len(sessions), info="")
        for start in range(0, len(sessions), batch_size):
            batch = sessions[start : start + batch_size]
            table, report = recommender.recommend(
                batch, k, exclude_seen=exclude_seen, batch_size=batch_size
            )
            unknown += report.n_unknown_items
            empty += len(report.empty_sessions)
            parts.append(table.with_columns(pl.col("session") + start))
            progress.update(task, completed=start + len(batch))
    seconds = time.perf_counter() - started
    served = len(sessions) - empty
    if served == 0:
        raise InputDataError(
            f"{input_path}: no session has an item the model knows; nothing to recommend."
        )
    recs = pl.concat(parts)
    recs = recs.select(
        session_ids.gather(recs["session"].to_numpy()).alias("session_id"),
        "rank",
        "item_id",
        "score",
    )
    recs.write_parquet(staging)
    os.replace(staging, output)
    console.print(
        f"wrote {output}: {served:,} sessions served, {empty:,} skipped (no known item), "
        f"{unknown:,} unknown item events skipped, {recs.height:,} rows, "
        f"{served / seconds if seconds > 0 else 0:,.0f} sessions/s"
    )


def _cast_ids(sessions: list[list[Any]], dtype: Any) -> list[list[Any]]:
    """Input ids as the model's id type (text ids meet integer ids), when they can be."""
    import polars as pl

    series = pl.Series(sessions).cast(pl.List(dtype), strict=False)
    return [[i for i in s if i is not None] if s is not None else [] for s in series.to_list()]


def resolve_model(model: str) -> Path:
    """A model directory as given, or the checkpoint inside a downloaded MLflow model."""
    path = Path(model)
    if path.exists():
        return path
    if ":/" not in model:
        raise InputDataError(
            f"model {model}: no such directory, and not an MLflow URI (models:/..., runs:/...)."
        )
    import tempfile

    import mlflow

    from gru4rec.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri())
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=tempfile.mkdtemp())
        )
    except Exception as error:  # MLflow raises several types for unknown names and runs
        raise InputDataError(f"model {model}: cannot be fetched from MLflow ({error}).") from None
    found = sorted(p.parent for p in local.rglob("weights.pt"))
    if not found:
        raise InputDataError(
            f"model {model}: the MLflow artifacts hold no GRU4Rec checkpoint (weights.pt)."
        )
    return found[0]
