"""Benchmark training speed against the machine's own matmul rate, measured in the same run.

    python -m benchmarks.train_bench [--repeats 5] [--threads N] [--precisions fp32 bf16]

For each preset and data set (diginetica on DIGINETICA, rsc15 on YOOCHOOSE 100k) a child
process loads the prepared data (preparing it from ../shared/data first if needed) and,
`--repeats` times, interleaves:
  1. the matmul rate of this machine in fp32 and bf16: the training step's own matmuls
     (same shapes and transposes, forward and backward) back to back, and a square one;
  2. a fixed number of full-batch training steps of the fast step, per precision;
  3. the same steps with the plain autograd step (fp32), the in-project reference.
It prints per preset and precision the medians: events/s, FLOPs per step (scoring and
GRU, forward + backward), the measured matmul rate, and the achieved fraction of it.

FLOPs are counted two ways. "Model" FLOPs follow the usual convention (and the issue's
2.0 GFLOP/step): every score column and every backward matmul, including the gradient
w.r.t. the carried hidden state. "Executed" FLOPs are what the fast step does: it scores
each distinct item once and skips the hidden-state gradient nobody needs. The achieved
fraction (MFU) is model FLOP/s over the measured rate at the training shapes.
Events are counted as `gru4rec train` counts them (input-target pairs), and by default
with the thread count it would choose (the cores other jobs leave idle): with a fixed 2
threads while another job held one of 2 cores, the rsc15 step ran at 11,800 events/s
against 34,000 with 1 thread, which is what `gru4rec train` logged in the same conditions.
Each ratio is taken within a repeat, then the median over repeats, so a machine shared
with other jobs moves the absolute numbers more than the ratios; the load average is
printed before and after. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
PRESETS = {"diginetica": "diginetica", "rsc15": "yoochoose_100k"}
DEFAULT_STEPS = {"diginetica": 150, "rsc15": 1500}
TARGETS = {"diginetica_mfu": 0.70, "rsc15_events_per_s": 40_000, "bf16_speedup": 1.5}


def _progress(message: str) -> None:
    print(f"[train_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- data


def ensure_data(name: str, data_dir: Path) -> Path:
    """A prepared directory for `name` ("yoochoose_100k" or "diginetica"), prepared once."""
    if (data_dir / "items.parquet").exists():
        return data_dir
    from gru4rec.pipelines.options import PrepareOptions
    from gru4rec.pipelines.prepare import prepare
    from gru4rec.pipelines.sources import resolve_spec

    if name == "yoochoose_100k":
        folder = SHARED_DATA / "yoochoose_100k"
        paths = [
            folder / "yoochoose-clicks-100k_train_full.txt.gz",
            folder / "yoochoose-clicks-100k_test.txt.gz",
        ]
    else:
        paths = [SHARED_DATA / "diginetica_srgnn.tsv.gz"]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise SystemExit(
            f"train_bench: the {name} log is missing ({', '.join(missing)}); the benchmark "
            f"reads the public logs from {SHARED_DATA} (see ../shared/data/README.md)."
        )
    _progress(f"preparing {name} into {data_dir} (once)")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if name == "yoochoose_100k":
        prepare(paths, data_dir, resolve_spec("gru4rec-tsv"))
    else:
        spec = resolve_spec(
            "generic",
            session_col="SessionId",
            item_col="ItemId",
            order_col="Pos",
            split_col="Split",
        )
        prepare(paths, data_dir, spec, PrepareOptions(valid_fraction=0.1))
    return data_dir


# ---------------------------------------------------------------- FLOPs and matmul shapes


@dataclasses.dataclass(frozen=True)
class MatmulShape:
    """a (m, k) @ b (k, n); `a_t`/`b_t`: the operand is a transposed view, as in the step."""

    m: int
    k: int
    n: int
    a_t: bool = False
    b_t: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def step_matmuls(config: Any, n_rows: int, n_scored: int, embed_width: int) -> list[MatmulShape]:
    """The fast step's matmuls (forward and backward) for one full-batch step."""
    shapes = []
    inputs = [embed_width, *config.layers[:-1]]
    for index, (width_in, size) in enumerate(zip(inputs, config.layers, strict=True)):
        one_hot = index == 0 and config.embedding == "none"
        if not one_hot:
            shapes.append(MatmulShape(n_rows, width_in, 3 * size))  # x W
        shapes += [
            MatmulShape(n_rows, size, 2 * size),
            MatmulShape(n_rows, size, size),  # h U
            MatmulShape(n_rows, size, size, b_t=True),  # d(rh) = da_c U_c^T
            MatmulShape(size, n_rows, size, a_t=True),  # dU_c
            MatmulShape(size, n_rows, 2 * size, a_t=True),
        ]  # dU_rz
        if not one_hot:
            shapes += [
                MatmulShape(width_in, n_rows, 3 * size, a_t=True),  # dW
                MatmulShape(n_rows, 3 * size, width_in, b_t=True),
            ]  # dx
    width = config.layers[-1]
    shapes += [
        MatmulShape(n_rows, width, n_scored, b_t=True),  # scores
        MatmulShape(n_rows, n_scored, width),  # d out
        MatmulShape(n_scored, n_rows, width, a_t=True),
    ]  # d W_items
    return shapes


def model_flops(config: Any, n_rows: int, n_cols: int, embed_width: int) -> dict[str, int]:
    """FLOPs of one step by the usual convention: all C columns, full backward (2x forward)."""
    gru = 0
    inputs = [embed_width, *config.layers[:-1]]
    for index, (width_in, size) in enumerate(zip(inputs, config.layers, strict=True)):
        projection = 0 if index == 0 and config.embedding == "none" else width_in * 3 * size
        gru += 3 * 2 * n_rows * (projection + size * 3 * size)
    scoring = 3 * 2 * n_rows * n_cols * config.layers[-1]
    return {"scoring": scoring, "gru": gru}


def executed_flops(shapes: list[MatmulShape], n_scoring: int = 3) -> dict[str, int]:
    return {
        "scoring": sum(s.flops for s in shapes[-n_scoring:]),
        "gru": sum(s.flops for s in shapes[:-n_scoring]),
    }


def matmul_rate(shapes: list[MatmulShape], dtype: Any, seconds: float = 0.3) -> float:
    """FLOP/s of running `shapes` back to back (as a step does), best of a few timings."""
    import torch

    pairs = []
    for s in shapes:
        a = torch.randn(s.k, s.m, dtype=dtype).T if s.a_t else torch.randn(s.m, s.k, dtype=dtype)
        b = torch.randn(s.n, s.k, dtype=dtype).T if s.b_t else torch.randn(s.k, s.n, dtype=dtype)
        pairs.append((a, b, torch.empty(s.m, s.n, dtype=dtype)))
    flops = sum(s.flops for s in shapes)

    def run() -> None:
        for a, b, out in pairs:
            torch.mm(a, b, out=out)

    run()
    started = time.perf_counter()
    run()
    once = max(time.perf_counter() - started, 1e-6)
    loops = max(1, int(seconds / once / 3))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(loops):
            run()
        best = min(best, (time.perf_counter() - started) / loops)
    return flops / best


def square_rate(dtype: Any, size: int = 1024) -> float:
    return matmul_rate([MatmulShape(size, size, size)], dtype, seconds=0.2)


# ---------------------------------------------------------------- the child: one preset


def _child(preset: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from gru4rec.network import kernels
    from gru4rec.network.batching import plan_session_parallel
    from gru4rec.network.config import get_preset
    from gru4rec.network.data import load_items, load_split
    from gru4rec.network.fast_step import FastStep
    from gru4rec.network.model import GRU4Rec
    from gru4rec.network.sampling import NegativeSampler
    from gru4rec.network.train import AutogradStep, _check_inputs, _device_steps

    torch.set_num_threads(args.threads)
    held = _hold_lightgbm(args.threads) if args.hold_lightgbm else None
    base = get_preset(preset)
    items = load_items(data_dir)
    data, _ = load_split(data_dir, "train")
    plan = plan_session_parallel(data, base.batch_size)
    device = torch.device("cpu")
    steps = [
        s
        for s in _device_steps(plan, device)
        if s.keep is None and s.stop - s.start == base.batch_size
    ]
    targets = torch.from_numpy(plan.targets)
    n_steps = args.steps or DEFAULT_STEPS[preset]

    other_form: Any = "reset_after" if base.gru_form == "reset_before" else "reset_before"

    def make(kind: str, precision: Any) -> tuple[Any, Any]:
        config = dataclasses.replace(base, precision=precision)
        if kind == "fast-other-form":
            config = dataclasses.replace(config, gru_form=other_form)
        model = GRU4Rec.from_config(items.height, config).train()
        support = _check_inputs(model, data, items["support"].to_numpy())
        if kind in ("fast", "fast-other-form"):
            return model, FastStep(model, config, support, device)
        if kind == "fast-torch-kernels":  # what training falls back to without the build
            return model, FastStep(model, config, support, device, kernels=kernels.TorchKernels())
        return model, AutogradStep(model, config, support, device)

    def run(model: Any, step: Any, cursor: int, count: int) -> int:
        hidden = model.init_hidden(base.batch_size, device)
        for rows in steps[cursor : cursor + count]:
            if rows.reset_rows is not None:
                for layer in hidden:
                    layer.index_fill_(0, rows.reset_rows, 0.0)
            loss, hidden = step.loss(rows.inputs, rows.targets, hidden)  # as in fit's loop
            loss.item()
            step.update(loss)
            if hidden[0].requires_grad:
                hidden = [layer.detach() for layer in hidden]
        return (cursor + count) % max(len(steps) - count, 1)

    # Distinct scored items per step (what the fast step's scoring matmuls run over).
    sampler = NegativeSampler(
        items["support"].to_numpy(),
        base.sample_alpha,
        base.n_sample,
        base.sample_cache_size,
        seed=base.seed,
    )
    distinct = [
        len(torch.unique(torch.cat((targets[s.start : s.stop], sampler.next()))))
        for s in steps[:200]
    ]
    n_rows, n_cols = base.batch_size, base.batch_size + base.n_sample
    n_scored = round(float(np.mean(distinct)))
    embed_width = GRU4Rec.from_config(1, base).dropout_sites()[0][0]
    shapes = step_matmuls(base, n_rows, n_scored, embed_width)
    model_count = model_flops(base, n_rows, n_cols, embed_width)
    executed_count = executed_flops(shapes)

    # As `fit` does: subnormals flushed to zero on every thread while training.
    flush = kernels.subnormals_flushed()
    flush.__enter__()
    runners = {f"fast-{p}": make("fast", p) for p in args.precisions}
    if args.torch_kernels:
        runners["fast-fp32-torchkernels"] = make("fast-torch-kernels", "fp32")
    if args.other_gru_form:
        runners[f"fast-fp32-{other_form}"] = make("fast-other-form", "fp32")
    if not args.no_autograd:
        runners["autograd-fp32"] = make("autograd", "fp32")
    cursors = dict.fromkeys(runners, 0)
    for name, (model, step) in runners.items():  # warm up: buffers, caches, the kernels
        cursors[name] = run(model, step, cursors[name], 10)

    repeats: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        record: dict[str, Any] = {"load": _load()}
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            record[f"rate_{dtype_name}"] = matmul_rate(shapes, dtype)
            record[f"square_{dtype_name}"] = square_rate(dtype)
        for name, (model, step) in runners.items():
            count = n_steps if name.startswith("fast") else max(n_steps // 4, 10)
            started = time.perf_counter()
            cursors[name] = run(model, step, cursors[name], count)
            record[name] = count * n_rows / (time.perf_counter() - started)
        _progress(
            f"{preset} repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in record.items() if k not in ("load",))
        )
        repeats.append(record)
    return {
        "preset": preset,
        "n_rows": n_rows,
        "n_cols": n_cols,
        "n_scored": n_scored,
        "model_flops": model_count,
        "executed_flops": executed_count,
        "repeats": repeats,
        "peak_rss": _peak_rss_bytes(),
        "threads": args.threads,
        "steps": n_steps,
        "lightgbm": held,
    }


def _hold_lightgbm(threads: int) -> dict[str, Any]:
    """Train a small LambdaMART model in this process first (as `select` does before it
    refits GRU4Rec), so that LightGBM's OpenMP runtime and its threads are up while GRU4Rec
    trains; returns the OpenMP libraries mapped and the process's threads afterwards."""
    import lightgbm
    import numpy as np

    rng = np.random.default_rng(0)
    features = rng.random((20_000, 20))
    labels = (rng.random(20_000) < 0.01).astype(int)
    data = lightgbm.Dataset(features, label=labels, group=[100] * 200)
    params = {"objective": "lambdarank", "verbose": -1, "num_threads": threads}
    lightgbm.train(params, data, num_boost_round=20)
    maps = Path("/proc/self/maps").read_text().splitlines()
    paths = {line.split()[-1] for line in maps if "/" in line}
    runtimes = sorted(p for p in paths if Path(p).name.startswith(("libgomp", "libiomp", "libomp")))
    status = Path("/proc/self/status").read_text()
    os_threads = int(status.split("Threads:")[1].split()[0])
    return {"openmp_runtimes": runtimes, "os_threads": os_threads}


# ---------------------------------------------------------------- the parent: the table


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per runner: medians over repeats of events/s and of the within-repeat ratios."""
    repeats = result["repeats"]
    model_per_event = sum(result["model_flops"].values()) / result["n_rows"]
    executed_per_event = sum(result["executed_flops"].values()) / result["n_rows"]
    rows = []
    names = [k for k in repeats[0] if k.startswith(("fast-", "autograd-"))]
    for name in names:
        precision = name.split("-")[1]
        rate_key = f"rate_{precision}"
        rows.append(
            {
                "preset": result["preset"],
                "runner": name,
                "events_per_s": statistics.median(r[name] for r in repeats),
                "vs_autograd": statistics.median(r[name] / r["autograd-fp32"] for r in repeats)
                if "autograd-fp32" in repeats[0]
                else float("nan"),
                "vs_fast_fp32": statistics.median(r[name] / r["fast-fp32"] for r in repeats)
                if "fast-fp32" in repeats[0]
                else float("nan"),
                "rate": statistics.median(r[rate_key] for r in repeats),
                "square": statistics.median(r[f"square_{precision}"] for r in repeats),
                "mfu": statistics.median(r[name] * model_per_event / r[rate_key] for r in repeats),
                "executed_fraction": statistics.median(
                    r[name] * executed_per_event / r[rate_key] for r in repeats
                ),
            }
        )
    return rows


def _fmt_flops(counts: dict[str, int]) -> str:
    return f"{sum(counts.values()) / 1e9:.3f} ({counts['scoring'] / 1e9:.3f}+{counts['gru'] / 1e9:.3f})"


def print_report(results: list[dict[str, Any]], load_before: str, load_after: str) -> bool:
    threads = ", ".join(f"{r['preset']} {r['threads']}" for r in results)
    print(f"threads: {threads}; load average before {load_before}, after {load_after}")
    print("FLOP/step: total (scoring + GRU), forward + backward")
    for result in results:
        print(
            f"  {result['preset']}: B={result['n_rows']} C={result['n_cols']} "
            f"distinct scored U={result['n_scored']}; model {_fmt_flops(result['model_flops'])}"
            f" GFLOP, executed {_fmt_flops(result['executed_flops'])} GFLOP; "
            f"{result['steps']} steps x {len(result['repeats'])} repeats; "
            f"peak RSS {result['peak_rss'] / 2**30:.2f} GiB"
        )
        if result.get("lightgbm"):
            held = result["lightgbm"]
            print(
                f"    LightGBM held: OpenMP libraries mapped {held['openmp_runtimes']}; "
                f"{held['os_threads']} threads in the process after its training"
            )
    header = [
        "preset",
        "runner",
        "events/s",
        "x autograd",
        "x fast-fp32",
        "matmul GF/s @shapes",
        "square GF/s",
        "MFU (model)",
        "executed/rate",
    ]
    table: list[list[str]] = [header]
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        for summary in summarise(result):
            summaries[(summary["preset"], summary["runner"])] = summary
            table.append(
                [
                    summary["preset"],
                    summary["runner"],
                    f"{summary['events_per_s']:,.0f}",
                    f"{summary['vs_autograd']:.2f}",
                    f"{summary['vs_fast_fp32']:.2f}",
                    f"{summary['rate'] / 1e9:,.0f}",
                    f"{summary['square'] / 1e9:,.0f}",
                    f"{summary['mfu']:.1%}",
                    f"{summary['executed_fraction']:.1%}",
                ]
            )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for index, line in enumerate(table):
        print(
            "  ".join(
                c.rjust(w) if i > 1 else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
    checks = []
    if ("diginetica", "fast-fp32") in summaries:
        mfu = summaries[("diginetica", "fast-fp32")]["mfu"]
        checks.append(
            (
                f"diginetica fp32 MFU {mfu:.1%} >= {TARGETS['diginetica_mfu']:.0%}",
                mfu >= TARGETS["diginetica_mfu"],
            )
        )
    if ("rsc15", "fast-fp32") in summaries:
        speed = summaries[("rsc15", "fast-fp32")]["events_per_s"]
        checks.append(
            (
                f"rsc15 fp32 {speed:,.0f} events/s >= {TARGETS['rsc15_events_per_s']:,}",
                speed >= TARGETS["rsc15_events_per_s"],
            )
        )
    if ("diginetica", "fast-bf16") in summaries:
        ratio = summaries[("diginetica", "fast-bf16")]["vs_fast_fp32"]
        checks.append(
            (
                f"diginetica bf16 {ratio:.2f}x fp32 >= {TARGETS['bf16_speedup']}",
                ratio >= TARGETS["bf16_speedup"],
            )
        )
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=0, help="steps per timing (0: per preset)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per timing; 0 (default): what `gru4rec train` would use now, the cores "
        "other jobs leave idle (gru4rec.network.train.default_threads), decided before each preset",
    )
    parser.add_argument(
        "--omp-wait-policy",
        default="default",
        choices=["PASSIVE", "ACTIVE", "default"],
        help="OpenMP wait policy of the child processes (PASSIVE: idle threads sleep; the "
        "default spins, which collapses when other jobs share the cores)",
    )
    parser.add_argument("--no-autograd", action="store_true", help="skip the autograd baseline")
    parser.add_argument(
        "--torch-kernels",
        action="store_true",
        help="also time the fast step on the torch kernel backend (fp32): the cost of running "
        "without the compiled kernels",
    )
    parser.add_argument(
        "--other-gru-form",
        action="store_true",
        help="also time the fast step (fp32) with the GRU form the preset does not use "
        "(gru_form reset_before / reset_after)",
    )
    parser.add_argument(
        "--no-huge-pages",
        action="store_true",
        help="train without transparent huge pages (the `gru4rec` command turns them on)",
    )
    parser.add_argument(
        "--workdir",
        default=str(Path(tempfile.gettempdir()) / f"gru4rec-train-bench-{os.getuid()}"),
        help="where the prepared data sets are kept (created if missing)",
    )
    parser.add_argument(
        "--lightgbm",
        default="with",
        choices=["with", "without", "both"],
        help="whether the training process also holds LightGBM (a LambdaMART model trained in "
        "it first, as in `select` with the ranker): its OpenMP runtime must not slow GRU4Rec; "
        "both: each preset twice, the held one labelled +lightgbm",
    )
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--hold-lightgbm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_child(args.child, Path(args.data), args)), flush=True)
        return 0

    from gru4rec.network.train import default_threads

    load_before = _load()
    results = []
    holds = {"with": [True], "without": [False], "both": [False, True]}[args.lightgbm]
    for preset, hold in [(p, h) for p in args.presets for h in holds]:
        data_dir = ensure_data(PRESETS[preset], Path(args.workdir) / PRESETS[preset])
        threads = args.threads or default_threads()  # as `fit` decides (see its docstring)
        _progress(
            f"{preset}: matmul rates and {args.repeats} timed repeats in a child process, "
            f"{threads} threads"
        )
        command = [
            sys.executable,
            "-m",
            "benchmarks.train_bench",
            "--child",
            preset,
            "--data",
            str(data_dir),
            "--repeats",
            str(args.repeats),
            "--steps",
            str(args.steps),
            "--threads",
            str(threads),
            "--precisions",
            *args.precisions,
        ]
        if hold:
            command.append("--hold-lightgbm")
        if args.no_autograd:
            command.append("--no-autograd")
        if args.torch_kernels:
            command.append("--torch-kernels")
        if args.other_gru_form:
            command.append("--other-gru-form")
        env = dict(os.environ)
        env["THP_MEM_ALLOC_ENABLE"] = "0" if args.no_huge_pages else "1"  # as the CLI
        if args.omp_wait_policy != "default":
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{preset} failed (exit {done.returncode}); see the error above.")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if hold and args.lightgbm == "both":
            result["preset"] = f"{preset}+lightgbm"
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"OMP_WAIT_POLICY {args.omp_wait_policy}; transparent huge pages "
        f"{'off' if args.no_huge_pages else 'on'}"
    )
    ok = print_report(results, load_before, _load())
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
