"""`gru4rec generate` and `gru4rec prepare`: click logs in, prepared session data out."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gru4rec.commands.consoles import errors, screen
from gru4rec.commands.failures import friendly_errors
from gru4rec.commands.options import (
    EventCol,
    EventFilter,
    FormatChoice,
    ItemCol,
    JsonOut,
    OrderCol,
    Separator,
    SessionCol,
    SplitCol,
    TimeCol,
    TimeUnit,
    UserCol,
    deprecated,
    required,
)
from gru4rec.fileio import write_json

# Wide enough for the summary table when the output is a file or a pipe (rich assumes 80).


class GeneratedFormat(StrEnum):
    gru4rec_tsv = "gru4rec-tsv"
    yoochoose = "yoochoose"


def generate(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write; a .gz suffix compresses it."),
    ] = None,
    old_out: Annotated[Path | None, typer.Argument(hidden=True, metavar="")] = None,
    sessions: Annotated[int, typer.Option(help="Number of sessions to draw.", min=1)] = 20_000,
    items: Annotated[int, typer.Option(help="Number of distinct items.", min=2)] = 1_000,
    days: Annotated[
        float, typer.Option(help="Sessions start uniformly over this many days.")
    ] = 30.0,
    log_format: Annotated[
        GeneratedFormat,
        typer.Option(
            "--format",
            help="gru4rec-tsv (SessionId, ItemId, Time with a header) or yoochoose "
            "(the raw yoochoose-clicks.dat layout: session, ISO time, item, category).",
        ),
    ] = GeneratedFormat.gru4rec_tsv,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same log.")] = 0,
    revisit: Annotated[
        float,
        typer.Option(
            help="Chance that a click returns to an earlier item of its session (repeat "
            "consumption, as in news and shop logs).",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
    mean_length: Annotated[
        float,
        typer.Option(
            help="Mean session length in events (lengths are geometric, at most 4 times the "
            "mean and at least 50).",
            min=1.0,
        ),
    ] = 5.0,
    follow: Annotated[
        float,
        typer.Option(
            help="Chance that a click goes to one of the item's three likely successors (the "
            "structure GRU4Rec learns); the rest jump to popular items.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.85,
) -> None:
    """Write a synthetic click log with learnable next-item structure and skewed popularity."""
    from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

    if old_out is not None:
        deprecated("gru4rec generate FILE", "gru4rec generate --out FILE")
    target = required("--out", out or old_out)
    spec = SyntheticLog(
        n_sessions=sessions,
        n_items=items,
        days=days,
        seed=seed,
        revisit=revisit,
        mean_length=mean_length,
        max_length=max(50, int(4 * mean_length)),
        follow=follow,
    )
    clicks = generate_clicks(spec)
    write_click_log(clicks, target, log_format.value)
    errors.print(f"wrote {clicks.height:,} events of {sessions:,} sessions to {target}")


def prepare(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT",
            help="One click log (cleaned and split by time): a file, a directory of its parts "
            "or a quoted glob such as 'clicks/clicks_hour_*.csv'; or two files of a published "
            "split: train then test (kept as given).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write (atomically).")],
    log_format: Annotated[
        FormatChoice,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help=f"Layout of the log, one of {', '.join(FormatChoice)}. The named formats "
            "set the column options below; generic needs them.",
        ),
    ] = FormatChoice.gru4rec_tsv,
    session_col: SessionCol = None,
    item_col: ItemCol = None,
    time_col: TimeCol = None,
    time_unit: TimeUnit = None,
    user_col: UserCol = None,
    event_col: EventCol = None,
    event_filter: EventFilter = None,
    order_col: OrderCol = None,
    split_col: SplitCol = None,
    separator: Separator = None,
    idle_gap: Annotated[
        float, typer.Option(help="Seconds of inactivity that end a user's session.")
    ] = 3600.0,
    remove_repeats: Annotated[
        bool | None,
        typer.Option(
            "--remove-repeats/--keep-repeats",
            help="Drop consecutive repeats of an item inside a session "
            "(default: remove for a whole log, keep for a published split).",
        ),
    ] = None,
    apply_filter: Annotated[
        bool | None,
        typer.Option(
            "--filter/--no-filter",
            help="Filter iteratively by session length and item support "
            "(default: on for a whole log, off for a published split).",
        ),
    ] = None,
    min_session_length: Annotated[int, typer.Option(help="Shortest session kept.", min=1)] = 2,
    min_item_support: Annotated[
        int, typer.Option(help="Fewest events of an item kept.", min=1)
    ] = 5,
    test_days: Annotated[
        float | None,
        typer.Option(
            help="Test = sessions starting in the last N days, counted back from the last "
            "session start of the log's bulk (late clicks of old sessions, and a few "
            "sessions on thin days after the bulk, do not move it) [default: the format's, "
            "1 day; 7 for diginetica and retailrocket]."
        ),
    ] = None,
    test_start: Annotated[
        str | None,
        typer.Option(
            help="Test = sessions starting at or after this time instead: an ISO date or "
            "datetime in UTC (2017-10-16, 2017-10-16T06:00) or seconds since 1970. The "
            "manifest records the boundary and the ranges of clicks and session starts."
        ),
    ] = None,
    valid_days: Annotated[
        float | None,
        typer.Option(
            help="Validation (train_tr/valid) = train's sessions starting in its last N days, "
            "counted back from train's last session start (default: as --test-days; 0: none)."
        ),
    ] = None,
    valid_fraction: Annotated[
        float | None,
        typer.Option(
            help="Validation = the last fraction of train sessions (for logs without time)."
        ),
    ] = None,
    min_split_sessions: Annotated[
        int | None,
        typer.Option(
            help="Refuse a test or validation split (made by time or fraction) with fewer "
            "sessions than this; 0: no minimum [default: 1% of the sessions split, at most "
            "100].",
            min=0,
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    buckets: Annotated[
        int | None,
        typer.Option(
            help="Prepare a log larger than memory in this many buckets of sessions, one in "
            "memory at a time (same output; intermediate files beside OUT; the pass that "
            "writes them holds a buffer per bucket, so tens, not thousands). 1: all in memory "
            "[default: by the log's size and the memory available].",
        ),
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Clean a click log into session data: filter events, build sessions, drop repeats,
    filter support, split by time, map items; writes Parquet + manifest.json to OUT.
    """
    from gru4rec import api
    from gru4rec.pipelines.prepare import summary_notes

    with errors.status("preparing") as status:
        manifest = api.prepare(
            inputs,
            out,
            format=log_format.value,
            overwrite=overwrite,
            buckets=buckets,
            report=lambda step: status.update(f"done: {step}"),
            session_col=session_col,
            item_col=item_col,
            time_col=time_col,
            time_unit=time_unit,
            user_col=user_col,
            event_col=event_col,
            event_filter=event_filter or None,
            order_col=order_col,
            split_col=split_col,
            separator=separator,
            idle_gap=idle_gap,
            remove_repeats=remove_repeats,
            apply_filter=apply_filter,
            min_session_length=min_session_length,
            min_item_support=min_item_support,
            test_days=test_days,
            test_start=test_start,
            valid_days=valid_days,
            valid_fraction=valid_fraction,
            min_split_sessions=min_split_sessions,
        )
    screen().print(summary_table(manifest))
    for line in summary_notes(manifest):
        screen().print(line)
    if json_out:
        write_json(json_out, manifest)
    errors.print(f"wrote {out} in {manifest['seconds']} s")


def summary_table(manifest: dict[str, Any]) -> Table:
    """The manifest's step counts as a table: what every step kept and dropped."""
    table = Table(title="prepare: counts after every step")
    table.add_column("scope", no_wrap=True)
    table.add_column("step", no_wrap=True)
    for column in (
        "events",
        "sessions",
        "items",
        "dropped events",
        "dropped sessions",
        "dropped items",
    ):
        table.add_column(column, justify="right", no_wrap=True)

    def show(value: object) -> str:
        return "?" if value is None else f"{value:,}"

    for row in manifest["steps"]:
        table.add_row(
            row["scope"],
            row["step"],
            *(
                show(row[key])
                for key in (
                    "events",
                    "sessions",
                    "items",
                    "dropped_events",
                    "dropped_sessions",
                    "dropped_items",
                )
            ),
        )
    return table


datasets_app = typer.Typer(
    help="The public click logs the project is measured on: source, licence, files and the "
    "`gru4rec prepare` command of each; `fetch NAME` downloads one where it can.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def datasets(ctx: typer.Context, json_out: JsonOut = None) -> None:
    """List the public click logs: source, licence, files and the prepare command."""
    if ctx.invoked_subcommand is not None:
        return
    from gru4rec.pipelines.datasets import CATALOGUE

    for log in CATALOGUE.values():
        screen().print(f"[bold]{log.name}[/]: {log.title}", highlight=False)
        for label, value in (
            ("domain", log.domain),
            ("source", log.source),
            ("licence", log.licence),
            ("files", ", ".join(log.files)),
            ("download", log.download or f"by hand: {log.by_hand}"),
            ("prepare", log.prepare.format(dir="DIR")),
        ):
            screen().print(f"  {label:<9} {value}", highlight=False, soft_wrap=True)
    if json_out:
        import dataclasses

        write_json(json_out, {name: dataclasses.asdict(log) for name, log in CATALOGUE.items()})


def fetch(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name from `gru4rec datasets`.")],
    directory: Annotated[Path, typer.Option("--dir", help="Folder to download into.")] = Path(
        "raw"
    ),
    url: Annotated[
        str | None,
        typer.Option(help="Download from this URL instead (a mirror).", show_default=False),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            help="The expected SHA-256 (hex); a download that differs is refused and "
            "removed [default: the one kept from an earlier download, if any].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download a public log into --dir, checked and renamed into place only when whole;
    where it cannot be downloaded, say where to get it and what to run next."""
    from gru4rec.commands.display import progress_bar
    from gru4rec.pipelines.datasets import download_source, public_log
    from gru4rec.pipelines.datasets import fetch as fetch_log

    log = public_log(name)
    download_source(name, directory, url)  # where there is none: what to do by hand
    with progress_bar(errors) as progress:
        task = progress.add_task(f"downloading {name}", total=None, info="")
        path, digest = fetch_log(
            name,
            directory,
            url=url,
            sha256=sha256,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    errors.print(f"wrote {path} (sha256 {digest})", highlight=False)
    if log.unpack:
        errors.print(f"next: cd {directory} && {log.unpack}", highlight=False)
    errors.print(f"then: {log.prepare.format(dir=directory)}", highlight=False)


datasets_app.callback()(friendly_errors(datasets))
datasets_app.command("fetch", short_help="Download a public log where the network allows.")(
    friendly_errors(fetch)
)
