"""`--device cuda`: training runs on the GPU and learns, and a model scores the same on the
GPU as on the CPU. Skipped, with the reason, on a machine without a CUDA GPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.jobs.train_evaluate import evaluate_model_dir, evaluate_split, train_model
from gru4rec.network.config import apply_overrides, get_preset
from gru4rec.network.data import load_items
from gru4rec.network.families import build_network

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU on this machine: --device cuda is checked where one is",
)
SETTINGS = {"n_epochs": "3", "layers": "32", "n_sample": "64", "batch_size": "16"}


def test_training_on_the_gpu_learns(tiny_prepared: Path, tmp_path: Path) -> None:
    config = apply_overrides(get_preset("rsc15"), SETTINGS)
    model, _, fit = train_model(tiny_prepared, config, tmp_path / "gpu", device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    losses = [epoch.loss for epoch in fit.epochs]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    # The checkpoint is the CPU's format: it loads and scores on a machine without a GPU.
    on_cpu = evaluate_model_dir(tmp_path / "gpu", tiny_prepared, device="cpu", cutoffs=(20,))
    # Learned, not drawn: well above the same network untrained (chance is about 20 / 60).
    untrained = evaluate_split(
        build_network(model.n_items, config),
        load_items(tiny_prepared),
        tiny_prepared,
        cutoffs=(20,),
    )
    assert on_cpu["mrr@20"] > 2 * untrained["mrr@20"]
    assert on_cpu["recall@20"] > untrained["recall@20"] + 0.1


def test_a_model_scores_the_same_on_the_gpu(tiny_model: Path, tiny_prepared: Path) -> None:
    cpu = evaluate_model_dir(tiny_model, tiny_prepared, device="cpu", cutoffs=(20,))
    gpu = evaluate_model_dir(tiny_model, tiny_prepared, device="cuda", cutoffs=(20,))
    for metric in ("recall@20", "mrr@20"):  # float sums differ; a near tie may flip a rank
        assert gpu[metric] == pytest.approx(cpu[metric], abs=2e-3), metric


def test_cli_train_device_cuda(tiny_prepared: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(tiny_prepared),
            "--out",
            str(tmp_path / "m"),
            "--device",
            "cuda",
            "--no-track",
            *[f"--set={k}={v}" for k, v in SETTINGS.items()],
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").exists()
