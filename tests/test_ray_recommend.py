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
from tests.rankings import assert_same_ranking

ray = pytest.importorskip("ray", reason="Ray is the optional extra gru4rec[ray]")
from gru4rec.jobs.ray_recommend import RayPool, SessionScorer, recommend_on_ray  # noqa: E402

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
        str(tiny_model), sessions, PREPARED, tmp_path / "ray", k=7, batch_size=40, pool=RayPool(2)
    )
    expected, got = _read(tmp_path / "local.parquet"), _read(tmp_path / "ray")
    assert len(list((tmp_path / "ray").glob("*.parquet"))) > 2
    assert got.columns == expected.columns == ["session_id", "rank", "item_id", "score"]
    assert_same_ranking(got, expected, "session_id")
    for key in ("sessions", "sessions_served", "sessions_skipped", "unknown_item_events", "rows"):
        assert summary[key] == local[key], key
    assert local["sessions_skipped"] == 1 and local["unknown_item_events"] == 3
    # Each file holds its sessions in the single-process output's order (start, then rank);
    # the items were compared above.
    in_order = pl.read_parquet(tmp_path / "local.parquet")
    for part in sorted((tmp_path / "ray").glob("*.parquet")):
        frame = pl.read_parquet(part).select("session_id", "rank")
        mine = in_order.filter(pl.col("session_id").is_in(frame["session_id"].implode()))
        assert frame.equals(mine.select("session_id", "rank")), part.name


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
            pool=RayPool(1),
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
    recommend_on_ray("models:/tiny/1", sessions, PREPARED, tmp_path / "uri", k=3, pool=RayPool(1))
    recommend_on_ray(str(tiny_model), sessions, PREPARED, tmp_path / "dir", k=3, pool=RayPool(1))
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


def test_a_sessions_scores_do_not_depend_on_batch_threads_or_engine(
    local_ray: None, tiny_model: Path, tmp_path: Path
) -> None:
    """Long sessions mixed with short ones: the same top-k up to near-ties, and scores equal
    to float32 rounding, with batches of 1 and 512, 1 and 2 threads, in one process and on
    Ray."""
    import torch

    recommender = Recommender.from_path(tiny_model, device="cpu", index="none")
    items = recommender.item_ids.to_list()
    rng = np.random.default_rng(7)
    lengths = [80, 2, 3, 60, 1, 2, 45, 5, *rng.integers(1, 12, 200).tolist()]
    sessions = [rng.choice(items, size=n).tolist() for n in lengths]

    def scored(batch_size: int, threads: int) -> pl.DataFrame:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return recommender.recommend(sessions, 10, batch_size=batch_size)[0]
        finally:
            torch.set_num_threads(before)

    base = scored(1, 1)
    assert base.height == 10 * len(sessions)
    for batch_size, threads in ((512, 1), (1, 2), (512, 2)):
        assert_same_ranking(scored(batch_size, threads), base, "session")
    events = pl.DataFrame(
        {
            "session_id": [s for s, session in enumerate(sessions) for _ in session],
            "item_id": [item for session in sessions for item in session],
            "time": [float(t) for session in sessions for t in range(len(session))],
        }
    )
    events.write_parquet(tmp_path / "s.parquet")
    prepared = resolve_spec("prepared")
    recommend_file(recommender, tmp_path / "s.parquet", prepared, tmp_path / "one.parquet", k=10)
    recommend_on_ray(
        str(tiny_model), tmp_path / "s.parquet", prepared, tmp_path / "ray", k=10, batch_size=64
    )
    one = pl.read_parquet(tmp_path / "one.parquet")
    on_ray = pl.read_parquet(tmp_path / "ray")
    assert_same_ranking(on_ray, one, "session_id")
    assert_same_ranking(one.rename({"session_id": "session"}), base, "session")


def test_the_batch_benchmarks_run(
    local_ray: None,
    tiny_model: Path,
    tiny_prepared: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """benchmarks.ray_bench, score_identity and retrieval_bench on tiny data: the code behind
    docs/results.md's tables runs."""
    import ast
    import json

    from benchmarks import ray_bench, retrieval_bench, score_identity

    argv = ["--model", str(tiny_model), "--data", str(tiny_prepared)]
    assert (
        ray_bench.main(
            [*argv, "--sessions", "300", "--batch-size", "64", "--json", str(tmp_path / "ray.json")]
        )
        == 0
    )
    figures = json.loads((tmp_path / "ray.json").read_text())
    assert figures and all(value for value in figures.values())
    capsys.readouterr()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # a count the benchmark never sets itself
    try:
        assert score_identity.main([*argv, "--k", "5"]) == 0
        assert torch.get_num_threads() == 3  # the benchmark gives back the caller's threads
    finally:
        torch.set_num_threads(threads)
    said = capsys.readouterr().out.splitlines()
    n_sessions = pl.read_parquet(tiny_prepared / "test.parquet")["session_id"].n_unique()
    assert said[0].startswith(f"{n_sessions:,} sessions (longest ")
    assert said[0].endswith("k 5; against batch 1, 1 thread:")
    rows = [line.split(" threads: ", 1) for line in said[1:]]
    assert [head.split() for head, _ in rows] == [
        ["batch", "512,", "1"],
        ["batch", "1,", "2"],
        ["batch", "512,", "2"],
        ["batch", "4096,", "2"],
    ]
    for _, figures in rows:
        moved = ast.literal_eval(figures)
        # Only float32 rounding moves: scores by far less than 1e-3, items only at near-ties.
        assert moved["max_abs"] < 1e-3 and moved["identical_items"] >= 0.9, moved
    retrieval_bench.main(
        [
            *argv,
            "--catalogue",
            "0",  # the model's own catalogue only (a generated one needs 4,096+ items)
            "--queries",
            "50",
            "--repeats",
            "1",
            "--batch-sizes",
            "16",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert json.loads((tmp_path / "r.json").read_text())


@pytest.fixture(scope="module")
def tiny_ranker(
    tiny_prepared: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ranker over the tiny GRU4Rec, learned on the test split (a fixture, not a protocol),
    saved with an HNSW index of its GRU4Rec."""
    from gru4rec.jobs.indexing import build_index
    from gru4rec.network.data import load_items, load_split
    from gru4rec.scoring.baselines import fit_baseline
    from gru4rec.scoring.hybrid import MixtureWeights
    from gru4rec.scoring.ranker import RankerParts, RankerScorer, fit_ranker, ranker_table
    from gru4rec.serving.families.ranker import RANKER_BASELINES
    from gru4rec.serving.retrieval import IndexOptions
    from gru4rec.serving.saved_models import load_scorer, save_scorer

    items = load_items(tiny_prepared)
    train, _ = load_split(tiny_prepared, "train")
    test, _ = load_split(tiny_prepared, "test")
    gru, _ = load_scorer(tiny_model, device="cpu")
    baselines = {name: fit_baseline(name, train, items.height) for name in RANKER_BASELINES}
    parts = RankerParts.fit(gru, baselines, train, MixtureWeights(repeat=0.1, knn=0.1))  # type: ignore[arg-type]
    booster = fit_ranker(ranker_table(parts, test), n_items=items.height).booster
    out = tmp_path_factory.mktemp("ranker") / "model"
    save_scorer(out, RankerScorer(parts, booster), items, train_data=train)
    build_index(out, IndexOptions("hnsw"), data=tiny_prepared)
    return out


def test_ray_serves_the_ranker_with_candidates_from_its_index(
    local_ray: None, tiny_ranker: Path, sessions: Path, tmp_path: Path
) -> None:
    recommender = Recommender.from_path(tiny_ranker, device="cpu", index="auto")  # the saved one
    assert recommender.index is not None and recommender.index.options.kind == "hnsw"
    assert recommender.scorer.builder.index is recommender.index  # type: ignore[attr-defined]
    local = recommend_file(recommender, sessions, PREPARED, tmp_path / "local.parquet", k=7)
    recommend_on_ray(
        str(tiny_ranker),
        sessions,
        PREPARED,
        tmp_path / "ray",
        k=7,
        batch_size=40,
        pool=RayPool(2),
        index="hnsw",
    )
    expected, got = _read(tmp_path / "local.parquet"), _read(tmp_path / "ray")
    assert_same_ranking(got, expected, "session_id")
    assert local["rows"] == len(expected) > 0
