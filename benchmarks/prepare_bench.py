"""Benchmark `gru4rec prepare` (Polars) against the same steps in plain pandas.

    python -m benchmarks.prepare_bench [--events 30000000] [--repeats 3] [--workdir DIR]

Generates a synthetic raw YOOCHOOSE-layout click log (`session,ISO time,item,category`,
no header) of at least `--events` events once, caching it in the workdir, then runs
each implementation `--repeats` times, every run in a fresh subprocess so that its peak
memory is its own (the child reads its high-water mark, VmHWM, at the end). Prints the
median seconds, events/s and peak RSS of each, the input CSV size, the Polars/pandas
throughput ratio and peak RSS / CSV size, and whether the targets pass (>= 5x pandas
throughput, Polars peak RSS below the CSV size). Progress goes to stderr, the table to
stdout. This is a command, not a timed test; tests/test_pandas_baseline.py checks that
both implementations write the same tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPLEMENTATIONS = ("polars", "pandas")
TARGET_RATIO = 5.0
GIB = 1024**3
MEAN_SESSION_LENGTH = 4.9  # a little under SyntheticLog's mean, so one draw is enough


def _progress(message: str) -> None:
    print(f"[prepare_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM: reset on exec, unlike ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------- children


CHUNK_SESSIONS = 2_000_000  # sessions drawn at once: the generator's memory stays ~3 GB


def _child_generate(path: Path, events: int, n_items: int, seed: int) -> None:
    """Write a log of at least `events` events (whole sessions), atomically, with a sidecar.

    Drawn in chunks of `CHUNK_SESSIONS` sessions (chunk c with seed `seed + c`, session ids
    continuing), each appended to the file, so that any size fits in memory; a log of one
    chunk is what a single draw gives.
    """
    import polars as pl

    from gru4rec.pipelines.synthetic import SyntheticLog, generate_clicks, write_click_log

    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    part = path.with_name(f".{path.name}.chunk-{os.getpid()}")
    written = sessions = 0
    try:
        with partial.open("wb") as out:
            for chunk in range(math.ceil(events / MEAN_SESSION_LENGTH / CHUNK_SESSIONS) + 10**6):
                wanted = events - written
                n_sessions = min(CHUNK_SESSIONS, math.ceil(wanted / MEAN_SESSION_LENGTH * 1.1))
                clicks = generate_clicks(
                    SyntheticLog(n_sessions=n_sessions, n_items=n_items, seed=seed + chunk)
                )
                if clicks.height > wanted:  # cut after the session of the last wanted event
                    last = clicks["session_id"][wanted - 1]
                    clicks = clicks.head(
                        int(clicks["session_id"].search_sorted(last, side="right"))
                    )
                clicks = clicks.with_columns(pl.col("session_id") + sessions)
                write_click_log(clicks, part, "yoochoose")
                with part.open("rb") as chunk_file:
                    shutil.copyfileobj(chunk_file, out, length=16 * 2**20)
                written += clicks.height
                sessions += int(clicks["session_id"].n_unique())
                _progress(f"generated {written:,} events")
                if written >= events:
                    break
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    meta = {"events": written, "sessions": sessions}
    _meta_path(path).write_text(json.dumps(meta) + "\n")


def _child_run(
    implementation: str, log: Path, out_dir: Path, pandas_engine: str, buckets: int | None
) -> None:
    """Run one implementation and print one JSON line: seconds, peak RSS, split counts."""
    if implementation == "polars":
        from gru4rec.pipelines.options import PrepareOptions
        from gru4rec.pipelines.prepare import prepare
        from gru4rec.pipelines.sources import resolve_spec

        started = time.perf_counter()
        manifest = prepare(
            [log],
            out_dir,
            resolve_spec("yoochoose"),
            PrepareOptions(),
            format_name="yoochoose",
            buckets=buckets,
        )
    else:
        from benchmarks.pandas_prepare import prepare_pandas

        started = time.perf_counter()
        manifest = prepare_pandas(log, out_dir, engine=pandas_engine)
    seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "peak_rss": _peak_rss_bytes(),
        "splits": manifest["splits"],
        "buckets": manifest.get("buckets"),
    }
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent


def _meta_path(log: Path) -> Path:
    return log.with_name(log.name + ".json")


def _ensure_log(workdir: Path, events: int, n_items: int, seed: int) -> tuple[Path, int]:
    log = workdir / f"yoochoose-{events}-items{n_items}-seed{seed}.dat"
    if log.exists() and _meta_path(log).exists():
        _progress(f"reusing the cached log {log}")
    else:
        _progress(f"generating a log of >= {events:,} events into {log} (once; cached)")
        started = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "benchmarks.prepare_bench",
            "--generate-into",
            str(log),
            "--events",
            str(events),
            "--n-items",
            str(n_items),
            "--seed",
            str(seed),
        ]
        subprocess.run(command, check=True)
        _progress(f"generated in {time.perf_counter() - started:.1f} s")
    meta = json.loads(_meta_path(log).read_text())
    return log, int(meta["events"])


def _run_child(
    implementation: str,
    log: Path,
    out_dir: Path,
    pandas_engine: str,
    buckets: int | None,
    keep: bool = False,
) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.prepare_bench",
        "--child",
        implementation,
        "--input",
        str(log),
        "--out",
        str(out_dir),
        "--pandas-engine",
        pandas_engine,
    ]
    if buckets is not None:
        command += ["--buckets", str(buckets)]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(
                f"{implementation} failed (exit {done.returncode}); see its error above."
            )
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if not keep:
            shutil.rmtree(out_dir, ignore_errors=True)


def same_as_in_memory(log: Path, workdir: Path, buckets: int) -> bool:
    """Prepare the log in memory and in `buckets`; whether every file and every step's
    counts are the same (printed per file)."""
    import polars as pl

    outs = [workdir / f"same-{n}-{os.getpid()}" for n in (1, buckets)]
    try:
        for n, out in zip((1, buckets), outs, strict=True):
            _progress(f"same output: preparing with --buckets {n} ...")
            _run_child("polars", log, out, "c", n, keep=True)
        same = True
        for name in ("train", "test", "train_tr", "valid", "items"):
            frames = [pl.read_parquet(out / f"{name}.parquet") for out in outs]
            equal = frames[0].equals(frames[1])
            same &= equal
            print(f"{name}: {frames[0].height:,} rows, " + ("identical" if equal else "DIFFER"))
            del frames
        manifests = [json.loads((out / "manifest.json").read_text()) for out in outs]
        for key in ("steps", "time_splits", "splits", "n_items"):
            equal = manifests[0][key] == manifests[1][key]
            same &= equal
            print(f"manifest {key}: " + ("identical" if equal else "DIFFER"))
        return same
    finally:
        for out in outs:
            shutil.rmtree(out, ignore_errors=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def benchmark(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir()) / "gru4rec-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    log, events = _ensure_log(workdir, args.events, args.n_items, args.seed)
    csv_bytes = log.stat().st_size
    _progress(f"input: {events:,} events, {csv_bytes / GIB:.2f} GiB of CSV")
    _progress(f"load average now: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")

    results: dict[str, list[dict]] = {name: [] for name in args.impl}
    for repeat in range(1, args.repeats + 1):
        for name in args.impl:
            out_dir = workdir / f"out-{name}-{os.getpid()}-{repeat}"
            _progress(f"run {repeat}/{args.repeats}: {name} ...")
            result = _run_child(name, log, out_dir, args.pandas_engine, args.buckets)
            results[name].append(result)
            _progress(
                f"run {repeat}/{args.repeats}: {name}: {result['seconds']:.1f} s, "
                f"peak RSS {result['peak_rss'] / GIB:.2f} GiB"
            )

    if len(args.impl) == 2:
        same = results["polars"][0]["splits"] == results["pandas"][0]["splits"]
        _progress("split counts of the two implementations " + ("agree" if same else "DIFFER"))
        if not same:
            _progress(f"polars: {results['polars'][0]['splits']}")
            _progress(f"pandas: {results['pandas'][0]['splits']}")

    summary: dict[str, dict[str, float]] = {}
    rows = [["implementation", "median s", "events/s", "peak RSS GiB", "CSV GiB", "RSS/CSV"]]
    for name, runs in results.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        peak = max(run["peak_rss"] for run in runs)
        summary[name] = {"seconds": seconds, "events_per_s": events / seconds, "peak_rss": peak}
        rows.append(
            [
                name
                + (
                    f" (read_csv engine={args.pandas_engine})"
                    if name == "pandas"
                    else f" ({runs[0]['buckets']} bucket(s))"
                ),
                f"{seconds:.2f}",
                f"{events / seconds:,.0f}",
                f"{peak / GIB:.2f}",
                f"{csv_bytes / GIB:.2f}",
                f"{peak / csv_bytes:.2f}",
            ]
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nprepare benchmark: {events:,} events, {args.repeats} run(s) each, "
        f"{os.cpu_count()} CPU(s), load average at the end {load} (other work skews "
        "the timings); seconds are medians, peak RSS the max over runs\n"
    )
    print(_table(rows))
    print()
    passed = True
    if "polars" in summary and "pandas" in summary:
        ratio = summary["polars"]["events_per_s"] / summary["pandas"]["events_per_s"]
        ok = ratio >= TARGET_RATIO
        passed &= ok
        print(
            f"throughput polars / pandas: {ratio:.2f}x   "
            f"target >= {TARGET_RATIO:g}x: {'PASS' if ok else 'FAIL'}"
        )
    if "polars" in summary:
        share = summary["polars"]["peak_rss"] / csv_bytes
        ok = share < 1.0
        passed &= ok
        print(f"polars peak RSS / CSV size: {share:.2f}   target < 1: {'PASS' if ok else 'FAIL'}")
    if args.same_as_memory:
        passed &= same_as_in_memory(log, workdir, args.buckets)
    if args.json:
        record = {
            "events": events,
            "csv_bytes": csv_bytes,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "runs": results,
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 1 if args.check and not passed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prepare_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=30_000_000, help="at least this many")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workdir", help="where the log is cached (default: $TMPDIR/gru4rec-bench)"
    )
    parser.add_argument("--n-items", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impl", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    parser.add_argument(
        "--pandas-engine",
        choices=("c", "pyarrow"),
        default="c",
        help="pandas.read_csv engine of the baseline (default: c, pandas' default)",
    )
    parser.add_argument(
        "--buckets",
        type=int,
        help="gru4rec prepare's --buckets (default: its own choice by log size and memory)",
    )
    parser.add_argument(
        "--same-as-memory",
        action="store_true",
        help="with --buckets N: also prepare in memory and in N buckets, and check that every "
        "file and every step's counts are the same",
    )
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--generate-into", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate_into:
        _child_generate(Path(args.generate_into), args.events, args.n_items, args.seed)
        return 0
    if args.child:
        _child_run(args.child, Path(args.input), Path(args.out), args.pandas_engine, args.buckets)
        return 0
    if args.events < 1 or args.repeats < 1:
        parser.error("--events and --repeats must be >= 1")
    if args.same_as_memory and not (args.buckets and args.buckets > 1):
        parser.error("--same-as-memory compares with --buckets N (N > 1)")
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
