"""`gru4rec recommend --engine ray`: the same rows as the single-process path on a local Ray
instance with 2 CPUs (the sessions spread over many buckets on purpose), and no output when
an actor fails mid-way."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app
from gru4rec.jobs.batch_recommend import recommend_file
from gru4rec.pipelines.sources import resolve_spec
from gru4rec.serving.recommend import Recommender

ray = pytest.importorskip("ray", reason="Ray is the optional extra gru4rec[ray]")
from gru4rec.jobs.ray_recommend import SessionScorer, recommend_on_ray  # noqa: E402

runner = CliRunner()
PREPARED = resolve_spec("prepared")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The failing scorer below is this module's: workers get it by value, not by import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sessions(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test sessions, plus unknown items in some and a session of unknown items only."""
    events = pl.read_parquet(tiny_prepared / "test.parquet").select("session_id", "item_id", "time")
    first = events["session_id"][0]
    extra = pl.DataFrame(
        {
            "session_id": [first, -1, -1],
            "item_id": [10**9, 10**9 + 1, 10**9 + 2],
            "time": [float(events["time"].max()) + 1.0] * 3,
        },
        schema=events.schema,
    )
    path = tmp_path_factory.mktemp("ray") / "sessions.parquet"
    pl.concat([events, extra]).write_parquet(path)
    return path


def _read(output: Path) -> pl.DataFrame:
    frame = pl.read_parquet(output / "*.parquet") if output.is_dir() else pl.read_parquet(output)
    return frame.sort("session_id", "rank")


def test_ray_writes_the_rows_the_single_process_path_writes(
    local_ray: None, tiny_model: Path, sessions: Path, tmp_path: Path
) -> None:
    local = recommend_file(
        Recommender.from_path(tiny_model, device="cpu"),
        sessions,
        PREPARED,
        tmp_path / "local.parquet",
        k=7,
    )
    # Buckets of about 40 sessions over 2 actors: the sessions spread over many buckets.
    summary = recommend_on_ray(
        str(tiny_model), sessions, PREPARED, tmp_path / "ray", k=7, batch_size=40, actors=2
    )
    expected, got = _read(tmp_path / "local.parquet"), _read(tmp_path / "ray")
    assert len(list((tmp_path / "ray").glob("*.parquet"))) > 2
    assert got.columns == expected.columns == ["session_id", "rank", "item_id", "score"]
    assert got.select("session_id", "rank", "item_id").equals(
        expected.select("session_id", "rank", "item_id")
    )
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5)
    for key in ("sessions", "sessions_served", "sessions_skipped", "unknown_item_events", "rows"):
        assert summary[key] == local[key], key
    assert local["sessions_skipped"] == 1 and local["unknown_item_events"] == 3
    # Each file holds its sessions in the single-process output's order (start, then rank).
    in_order = pl.read_parquet(tmp_path / "local.parquet")
    for part in sorted((tmp_path / "ray").glob("*.parquet")):
        frame = pl.read_parquet(part).select("session_id", "rank", "item_id")
        mine = in_order.filter(pl.col("session_id").is_in(frame["session_id"].implode()))
        assert frame.equals(mine.select("session_id", "rank", "item_id")), part.name


class FailingScorer(SessionScorer):
    """Fails on its third batch: a worker that dies mid-way."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.batches = 0

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        self.batches += 1
        if self.batches == 3:
            raise RuntimeError("scoring failed mid-way")
        return super().__call__(batch)


def test_a_failure_mid_way_leaves_no_output(
    local_ray: None, tiny_model: Path, sessions: Path, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="scoring failed mid-way"):
        recommend_on_ray(
            str(tiny_model),
            sessions,
            PREPARED,
            tmp_path / "ray",
            k=5,
            batch_size=20,
            actors=1,
            scorer=FailingScorer,
        )
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging folder


def test_a_registered_model_by_its_mlflow_uri(
    local_ray: None,
    tiny_model: Path,
    sessions: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gru4rec.serving import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.start_run(uri, "ray", "log"):
        tracking.log_model(tiny_model, registered_name="tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    recommend_on_ray("models:/tiny/1", sessions, PREPARED, tmp_path / "uri", k=3, actors=1)
    recommend_on_ray(str(tiny_model), sessions, PREPARED, tmp_path / "dir", k=3, actors=1)
    got = _read(tmp_path / "uri")
    assert got.equals(_read(tmp_path / "dir")) and got["rank"].max() == 3


def test_cli_engine_ray(local_ray: None, tiny_model: Path, sessions: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs"
    result = runner.invoke(
        app,
        [
            "recommend",
            str(tiny_model),
            "--input",
            str(sessions),
            "--out",
            str(out),
            "--engine",
            "ray",
            "--actors",
            "2",
            "--batch-size",
            "64",
            "-k",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "on 2 Ray actors" in result.output and "1 skipped" in result.output
    assert _read(out)["rank"].max() == 5
    again = runner.invoke(
        app,
        [
            "recommend",
            str(tiny_model),
            "--input",
            str(sessions),
            "--out",
            str(out),
            "--engine",
            "spark",
        ],
    )
    assert again.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in again.output
