"""The option objects that travel from the command line to the jobs: checked once, at the
door, and the same setting whatever way it came in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.errors import ConfigError
from gru4rec.options import CUTOFFS, Compute, Evaluation, with_metric

runner = CliRunner()


def test_evaluation_sorts_its_cutoffs_and_refuses_bad_values() -> None:
    assert Evaluation(cutoffs=(20, 5, 5, 1)).cutoffs == (1, 5, 20)
    assert Evaluation().cutoffs == CUTOFFS == (1, 5, 10, 20)
    assert Evaluation().scoring == {"cutoffs": (1, 5, 10, 20), "ties": "conservative"}
    for bad, message in (
        ({"cutoffs": (0, 5)}, "--cutoffs"),
        ({"ties": "optimistic"}, "--ties must be one of standard, conservative, median"),
        ({"metric": "hits@20"}, "--metric must be recall@k, mrr@k or ndcg@k"),
        ({"metric": "mrr@0"}, "--metric"),
    ):
        with pytest.raises(ConfigError, match=message):
            Evaluation(**bad)  # type: ignore[arg-type]


def test_the_metric_adds_its_cutoff() -> None:
    assert with_metric("mrr@50") == (1, 5, 10, 20, 50)
    assert with_metric("recall@5", (10,)) == (5, 10)


def test_compute_seeds_the_settings_only_when_asked() -> None:
    assert Compute().seeded({"layers": "8"}) == {"layers": "8"}
    assert Compute(seed=7).seeded({"seed": "1"}) == {"seed": "7"}
    with pytest.raises(ConfigError, match="--threads"):
        Compute(threads=0)


def test_seed_on_the_command_line_is_the_settings_seed(tiny_prepared: Path, tmp_path: Path) -> None:
    tiny = ["--set", "n_epochs=1", "--set", "layers=8", "--set", "n_sample=16"]
    common = [str(tiny_prepared), *tiny, "--no-track", "--device", "cpu", "--threads", "1"]
    for name, seeding in (("flag", ["--seed", "3"]), ("set", ["--set", "seed=3"])):
        out = tmp_path / name
        result = runner.invoke(
            app, ["train", *common, *seeding, "--out", str(out), "--json", f"{out}.json"]
        )
        assert result.exit_code == 0, result.output
    by_flag = json.loads((tmp_path / "flag.json").read_text())
    by_set = json.loads((tmp_path / "set.json").read_text())
    assert by_flag["mrr@20"] == by_set["mrr@20"] and by_flag["recall@20"] == by_set["recall@20"]
    config = json.loads((tmp_path / "flag" / "config.json").read_text())["config"]
    assert config["seed"] == 3
