"""`gru4rec index` and `gru4rec recommend`: from a trained model to ranked recommendations."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from gru4rec.commands.consoles import errors, screen
from gru4rec.commands.options import (
    Device,
    DeviceChoice,
    EngineChoice,
    FormatChoice,
    IndexChoice,
    IndexKindChoice,
    ItemCol,
    JsonOut,
    OrderCol,
    Separator,
    SessionCol,
    TimeCol,
    TimeUnit,
    deprecated,
    hidden_alias,
    renamed,
    required,
)
from gru4rec.errors import ConfigError
from gru4rec.fileio import write_json
from gru4rec.options import Compute

logger = logging.getLogger(__name__)


def index(
    model_dir: Annotated[
        Path, typer.Argument(metavar="MODEL", help="A model directory written by `gru4rec train`.")
    ],
    data: Annotated[
        Path | None,
        typer.Argument(
            metavar="DATA",
            help="Prepared data whose test sessions are the queries for measuring recall "
            "(default: the model's training data directory).",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        IndexKindChoice,
        typer.Option(
            help="flat: exact inner product; hnsw or ivf: approximate, for large "
            "catalogues (their recall against exact search is measured)."
        ),
    ] = IndexKindChoice.flat,
    hnsw_m: Annotated[int, typer.Option(help="HNSW graph degree.")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW search width while building.")] = 200,
    ef_search: Annotated[int, typer.Option(help="HNSW search width when querying.")] = 128,
    nlist: Annotated[int, typer.Option(help="IVF clusters (0: about 4 * sqrt(items)).")] = 0,
    nprobe: Annotated[int, typer.Option(help="IVF clusters visited per query.")] = 16,
    track: Annotated[bool, typer.Option(help="Log the index to the model's MLflow run.")] = True,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: the one the model was trained with)."),
    ] = None,
    json_out: JsonOut = None,
    old_data: Annotated[Path | None, hidden_alias("--data")] = None,
) -> None:
    """Index the model's item vectors (bias as an extra dimension) in FAISS, beside the model."""
    from gru4rec.jobs.indexing import build_index
    from gru4rec.serving.retrieval import IndexOptions

    data = renamed("--data", old_data, "DATA", data)
    options = IndexOptions(
        kind=kind.value,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        nlist=nlist,
        nprobe=nprobe,
    )
    with errors.status(f"building a {kind} index"):
        item_index, folder = build_index(model_dir, options, data=data)
    meta = item_index.meta
    errors.print(
        f"wrote {folder}: {kind}, {meta['n_items']:,} items of dimension {meta['dim']}, "
        f"recall@20 against exact {meta['recall_at_20']:.4f} "
        f"({meta['recall_queries']:,} queries), built in {meta['build_seconds']:.1f} s"
    )
    if json_out:
        write_json(json_out, {"index": str(folder), **meta})
    if track:
        _log_index_to_run(model_dir, folder, meta, tracking_uri)


def _log_index_to_run(model_dir: Path, folder: Path, meta: dict[str, Any], uri: str | None) -> None:
    run_file = model_dir / "mlflow_run.json"
    if not run_file.exists():
        errors.print("the model has no MLflow run (trained with --no-track): index not logged")
        return
    import mlflow

    from gru4rec.serving.tracking import numeric_metrics

    run = json.loads(run_file.read_text())
    mlflow.set_tracking_uri(uri or run["tracking_uri"])
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_artifacts(str(folder), artifact_path="index")
        mlflow.log_metrics(numeric_metrics({f"index_{k}": v for k, v in meta.items()}))
    errors.print(f"logged the index to MLflow run {run['run_id']}")


def recommend(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A model directory, or an MLflow model URI (models:/NAME@ALIAS, "
            "models:/NAME/VERSION, runs:/RUN_ID/model).",
        ),
    ],
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="Session events: Parquet or CSV/TSV.", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Parquet file to write (atomically).", show_default=False),
    ] = None,
    items: Annotated[
        str | None,
        typer.Option(
            help="Instead of --input and --out: one session's items, comma-separated "
            "(A,B,C, oldest first); its top-k is printed (or written with --json).",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Recommendations per session.", min=1)] = 20,
    log_format: Annotated[
        FormatChoice,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help=f"Layout of the input, as for `gru4rec prepare`: one of "
            f"{', '.join(FormatChoice)} (prepared: session_id, item_id, time).",
        ),
    ] = FormatChoice.prepared,
    session_col: SessionCol = None,
    item_col: ItemCol = None,
    time_col: TimeCol = None,
    time_unit: TimeUnit = None,
    order_col: OrderCol = None,
    separator: Separator = None,
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
    device: Device = DeviceChoice.auto,
    index_kind: Annotated[
        IndexChoice,
        typer.Option(
            "--index",
            help="flat (exact FAISS), hnsw or ivf (approximate; built with "
            "`gru4rec index --kind`), none (exact, all items scored in torch), or auto: flat "
            "for GRU4Rec, none for families whose scores are not inner products (baselines, "
            "hybrids).",
        ),
    ] = IndexChoice.auto,
    engine: Annotated[
        EngineChoice,
        typer.Option(
            help="local (this process) or ray: a pool of Ray actors scores the sessions and "
            "--out is a folder of Parquet files (pip install 'gru4rec[ray]').",
        ),
    ] = EngineChoice.local,
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
    json_out: JsonOut = None,
    old_output: Annotated[Path | None, hidden_alias("--output")] = None,
    old_k: Annotated[int | None, hidden_alias("--k")] = None,
) -> None:
    """Write the top-k items for every input session: long Parquet `session_id, rank, item_id,
    score` (original ids), ordered by session start then rank. Unknown items are skipped and
    counted; sessions without any known item are reported. With --items: one session, printed.
    """
    out = renamed("--output", old_output, "--out", out)
    if old_k is not None:
        deprecated("--k", "-k")
        k = old_k
    if k < 1:
        raise ConfigError(f"-k must be at least 1; got {k}.")
    if items is not None:
        if input_path is not None or out is not None:
            raise ConfigError("--items scores one session: leave out --input and --out.")
        _recommend_one(model, items, k, exclude_seen, device, index_kind, json_out)
        return
    from gru4rec.commands.display import progress_bar
    from gru4rec.jobs.recommendations import RayPool, recommend_sessions
    from gru4rec.pipelines.sources import resolve_spec

    columns = {"session_col": session_col, "item_col": item_col, "time_col": time_col}
    columns |= {"time_unit": time_unit, "order_col": order_col, "separator": separator}
    ray = engine == EngineChoice.ray
    with progress_bar(errors) as progress:
        task = progress.add_task("recommending", total=None, info="", visible=not ray)
        summary = recommend_sessions(
            model,
            required("--input", input_path),
            resolve_spec(log_format.value, **columns),
            required("--out", out),
            k=k,
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            index=index_kind.value,
            compute=Compute(device.value),
            pool=RayPool(actors, cpus_per_actor, ray_address) if ray else None,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    _report(required("--out", out), summary)
    if json_out:
        write_json(json_out, {"out": str(out), **summary})


def _recommend_one(
    model: str,
    items: str,
    k: int,
    exclude_seen: bool,
    device: DeviceChoice,
    index_kind: IndexChoice,
    json_out: Path | None,
) -> None:
    """`recommend --items A,B,C`: one session's top-k, as a table (or JSON)."""
    from gru4rec import api

    recommender = api.load(model, device=device.value, index=index_kind.value)
    given = [item.strip() for item in items.split(",") if item.strip()]
    session, unknown = _catalogue_ids(recommender, given)
    if not session:
        raise ConfigError(
            f"none of the items {', '.join(given)} is in the model's catalogue: nothing to "
            "recommend from."
        )
    if unknown:
        errors.print(f"skipped items the model does not know: {', '.join(unknown)}")
    table, _skipped = recommender.recommend([session], k, exclude_seen=exclude_seen)
    rows = table.select("rank", "item_id", "score")
    _print_ranked(rows, f"top {k} after {', '.join(given)}", json_out, {"items": given})


def similar(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="A GRU4Rec model directory, or an MLflow model URI."),
    ],
    item: Annotated[
        str, typer.Argument(metavar="ITEM", help="An item id of the model's catalogue.")
    ],
    k: Annotated[int, typer.Option("-k", help="How many items to list.", min=1)] = 20,
    device: Device = DeviceChoice.auto,
    index_kind: Annotated[
        IndexChoice,
        typer.Option(
            "--index",
            help="The index to search: auto (the saved one, else exact), flat, hnsw or ivf "
            "(built with `gru4rec index --kind`).",
        ),
    ] = IndexChoice.auto,
    json_out: JsonOut = None,
) -> None:
    """List the items nearest to ITEM ("people also viewed"): the largest inner products of
    the model's output item vectors with ITEM's, through the FAISS index."""
    from gru4rec import api

    recommender = api.load(model, device=device.value, index=index_kind.value)
    known, _unknown = _catalogue_ids(recommender, [item])
    if not known:
        raise ConfigError(f"item {item!r} is not in the model's catalogue.")
    rows = recommender.similar(known[0], k)
    _print_ranked(rows, f"{k} items nearest to {item}", json_out, {"item": item})


def _catalogue_ids(recommender: Any, texts: list[str]) -> tuple[list[Any], list[str]]:
    """Item ids typed on the command line as the model's ids (integer or text): those in
    its catalogue, in order, and the texts that are not."""
    import polars as pl

    ids = pl.Series(texts, dtype=pl.String).cast(recommender.item_ids.dtype, strict=False)
    known = ids.is_in(recommender.item_ids.implode()).fill_null(False)
    return ids.filter(known).to_list(), [t for t, ok in zip(texts, known, strict=True) if not ok]


def _print_ranked(rows: Any, title: str, json_out: Path | None, query: dict[str, Any]) -> None:
    """A ranked list (rank, item_id, score) as a table on stdout, and as JSON with --json."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("rank", "item_id", "score"):
        table.add_column(column, justify="right")
    for rank, item_id, score in rows.iter_rows():
        table.add_row(str(rank), str(item_id), f"{score:.4f}")
    screen().print(table)
    if json_out:
        write_json(json_out, {**query, "ranked": rows.to_dicts()})


def _report(output: Path, summary: dict[str, Any]) -> None:
    actors = f" on {summary['actors']} Ray actors" if "actors" in summary else ""
    errors.print(
        f"wrote {output}: {summary['sessions_served']:,} sessions served, "
        f"{summary['sessions_skipped']:,} skipped (no known item), "
        f"{summary['unknown_item_events']:,} unknown item events skipped, "
        f"{summary['rows']:,} rows, {summary['sessions_per_s']:,.0f} sessions/s{actors}"
    )
