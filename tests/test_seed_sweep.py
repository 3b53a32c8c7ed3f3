"""`python -m benchmarks.seed_sweep`: one training run per seed, and the spread of the metrics."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks.seed_sweep import main, parse_seeds
from gru4rec.jobs.train_evaluate import evaluate_split, train_model
from gru4rec.network.config import apply_overrides, get_preset

TINY = {"n_epochs": "1", "layers": "16", "n_sample": "32", "batch_size": "16"}
TINY_ARGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]


def test_parse_seeds() -> None:
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    assert parse_seeds("5") == [5]
    assert parse_seeds("2,1-3") == [2, 1, 3]  # given order, no repeats
    for bad in ("3-1", "a", "1-x", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_sweep_reports_each_seed_and_the_spread(
    tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    main(
        [
            str(tiny_prepared),
            "--seeds",
            "1-2",
            "--jobs",
            "1",
            *TINY_ARGS,
            "--bar",
            "recall@20=0",
            "--bar",
            "mrr@20=1.01",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert [run["seed"] for run in result["seeds"]] == [1, 2]
    # Each seed's metrics are those of a plain training run with that seed.
    config = apply_overrides(get_preset("rsc15"), {**TINY, "seed": "2"})
    model, items, _ = train_model(tiny_prepared, config, tmp_path / "m", num_threads=1)
    direct = evaluate_split(model, items, tiny_prepared)
    assert result["seeds"][1]["recall@20"] == direct["recall@20"]
    assert result["seeds"][1]["mrr@20"] == direct["mrr@20"]
    recalls = [run["recall@20"] for run in result["seeds"]]
    summary = result["summary"]["recall@20"]
    assert summary["mean"] == pytest.approx(statistics.fmean(recalls))
    assert summary["sd"] == pytest.approx(statistics.stdev(recalls))
    assert (summary["min"], summary["max"]) == (min(recalls), max(recalls))
    assert result["bars_reached"] == {"recall@20>=0.0": 2, "mrr@20>=1.01": 0}
    printed = capsys.readouterr().out
    assert "recall@20 >= 0.0: 2 of 2 seeds" in printed and "mean" in printed


def test_parallel_jobs_give_the_same_results(tiny_prepared: Path, tmp_path: Path) -> None:
    outputs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}.json"
        main([str(tiny_prepared), "--seeds", "3,4", "--jobs", jobs, *TINY_ARGS, "--json", str(out)])
        outputs.append(
            [
                {k: v for k, v in run.items() if k != "train_s"}
                for run in json.loads(out.read_text())["seeds"]
            ]
        )
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "seed=3"], "not --set seed"),
        (["--set", "n_epochs"], "key=value"),
        (["--preset", "nope"], "unknown preset"),
        (["--set", "dropout_p_hidden=-1"], "dropout_p_hidden"),
        (["--bar", "hits@20=0.5"], "unknown metric"),
        (["--bar", "recall@20"], "METRIC=VALUE"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_arguments_exit_before_training(
    tiny_prepared: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny_prepared), "--seeds", "1", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_parity_with_the_reference_by_hand() -> None:
    from benchmarks.reference import parity

    # YOOCHOOSE: three seeds whose sample sd (0.001) is below the known per-run sd (0.0033):
    # SE = sqrt(0.0033^2 / 3 + 0.0017^2 / 7) = 0.0020281...
    found = parity([0.677, 0.678, 0.679], "yoochoose_100k", "rsc15", "recall@20")
    assert found.standard_error == pytest.approx((0.0033**2 / 3 + 0.0017**2 / 7) ** 0.5)
    assert found.z == pytest.approx((0.678 - 0.6799) / found.standard_error)
    assert found.holds and not parity([0.670] * 3, "yoochoose_100k", "rsc15", "recall@20").holds
    # DIGINETICA: one reference run takes our per-run sd: SE = 0.0005 * sqrt(1/3 + 1).
    single = parity([0.5410] * 3, "diginetica", "diginetica", "recall@20")
    assert single.standard_error == pytest.approx(0.0005 * (1 / 3 + 1) ** 0.5)
    assert single.holds  # 0.0009 below, 1.56 standard errors


def test_the_training_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks.train_bench, the source of docs/results.md's training speed, on YOOCHOOSE
    100k with a few steps (skipped without ../shared/data)."""
    from benchmarks import train_bench
    from tests.conftest import shared_file

    shared_file("yoochoose_100k/yoochoose-clicks-100k_train_full.txt.gz")
    out = tmp_path / "train.json"
    argv = [
        "--presets",
        "rsc15",
        "--precisions",
        "fp32",
        "--repeats",
        "1",
        "--steps",
        "20",
        "--threads",
        "1",
        "--workdir",
        str(tmp_path / "work"),
        "--json",
        str(out),
    ]
    assert train_bench.main(argv) == 0
    assert json.loads(out.read_text())
