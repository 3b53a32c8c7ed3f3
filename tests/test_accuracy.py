"""End-to-end accuracy on the real logs (slow: `make accuracy`).

Fidelity: the seed means of the reference presets are at parity with the reference's
(within two standard errors; figures and criterion in benchmarks/reference.py).
Selection: `select_model` with its default candidates, every choice on valid, scores on test
at least as well as the best baseline on both metrics, on both logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reference import parity
from benchmarks.seed_sweep import sweep
from gru4rec.jobs.selection import DEFAULT_CANDIDATES, parse_candidates, select_model
from gru4rec.jobs.train_evaluate import evaluate_baseline
from gru4rec.pipelines.options import PrepareOptions
from gru4rec.pipelines.prepare import prepare
from gru4rec.pipelines.sources import resolve_spec
from tests.conftest import shared_file

pytestmark = pytest.mark.slow
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def yoochoose(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = shared_file("yoochoose_100k/yoochoose-clicks-100k_train_full.txt.gz")
    test = shared_file("yoochoose_100k/yoochoose-clicks-100k_test.txt.gz")
    out = tmp_path_factory.mktemp("yoochoose") / "data"
    prepare([train, test], out, resolve_spec("gru4rec-tsv"))
    return out


@pytest.fixture(scope="module")
def diginetica(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = shared_file("diginetica_srgnn.tsv.gz")
    spec = resolve_spec(
        "generic", session_col="SessionId", item_col="ItemId", order_col="Pos", split_col="Split"
    )
    out = tmp_path_factory.mktemp("diginetica") / "data"
    prepare([path], out, spec, PrepareOptions(valid_fraction=0.1))
    return out


def assert_parity(data_dir: Path, data: str, preset: str) -> None:
    jobs = [
        {
            "seed": seed,
            "preset": preset,
            "overrides": {},
            "data_dir": str(data_dir),
            "train_split": "train",
            "test_split": "test",
        }
        for seed in SEEDS
    ]
    results = sweep(jobs, processes=2)
    for metric in ("recall@20", "mrr@20"):
        found = parity([result[metric] for result in results], data, preset, metric)
        print(f"\n{data} {preset} {metric}: {found}")
        assert found.holds, f"{metric}: {found}"


def assert_selection_beats_baselines(data_dir: Path, preset: str, tmp_path: Path) -> None:
    result = select_model(
        data_dir, tmp_path / "model", parse_candidates(DEFAULT_CANDIDATES, preset)
    )
    print(
        f"\nchosen {result.chosen}: test {result.test['recall@20']:.4f} / {result.test['mrr@20']:.4f}"
    )
    for name in ("spop", "sknn", "vsknn"):
        baseline = evaluate_baseline(name, data_dir)
        for metric in ("recall@20", "mrr@20"):
            assert result.test[metric] >= baseline[metric], (name, metric)


def test_yoochoose_100k_rsc15_at_parity_with_the_reference(yoochoose: Path) -> None:
    assert_parity(yoochoose, "yoochoose_100k", "rsc15")


def test_yoochoose_100k_selection_beats_every_baseline(yoochoose: Path, tmp_path: Path) -> None:
    assert_selection_beats_baselines(yoochoose, "rsc15", tmp_path)


def test_diginetica_preset_at_parity_with_the_reference(diginetica: Path) -> None:
    assert_parity(diginetica, "diginetica", "diginetica")


def test_diginetica_selection_beats_every_baseline(diginetica: Path, tmp_path: Path) -> None:
    assert_selection_beats_baselines(diginetica, "diginetica", tmp_path)
