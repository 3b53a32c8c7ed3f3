"""One spelling per concept on every command; the old spellings still work for one release,
with a warning; a stray argument is refused as what it is. And the quick looks: one
session's recommendations (`recommend --items`) and an item's neighbours (`similar`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from gru4rec.cli import app

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def table_rows(said: str, n_columns: int) -> list[list[str]]:
    """The body rows of the rich tables in `said` (whitespace collapsed by `run`), cell by cell."""
    cells = r"│ " + r" │ ".join([r"([^│┃\s]+)"] * n_columns) + r" │"
    return [list(row) for row in re.findall(cells, said)]


def test_generate_writes_to_out_and_the_old_positional_warns(tmp_path: Path) -> None:
    new, old = tmp_path / "new.tsv", tmp_path / "old.tsv"
    said = run("generate", "--out", str(new), "--sessions", "50")
    assert "deprecated" not in said
    log = pl.read_csv(new, separator="\t")
    assert log.columns == ["SessionId", "ItemId", "Time"] and log["SessionId"].n_unique() == 50
    assert f"wrote {log.height:,} events of 50 sessions to" in said
    said = run("generate", str(old), "--sessions", "50")
    assert "deprecated: gru4rec generate FILE is now gru4rec generate --out FILE" in said
    assert new.read_bytes() == old.read_bytes()
    assert "missing option --out" in run("generate", "--sessions", "50", code=2)


def test_evaluate_and_index_take_the_data_as_a_positional(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    said = run("evaluate", str(tiny_model), str(tiny_prepared), "--json", str(new))
    metrics = json.loads(new.read_text())
    assert "deprecated" not in said and metrics["cutoffs"] == [1, 5, 10, 20]
    assert metrics["n_events"] > 0 and 0 < metrics["recall@20"] <= 1
    assert f"{metrics['n_events']:,} events" in said
    said = run("evaluate", str(tiny_model), "--data", str(tiny_prepared), "--json", str(old))
    assert "deprecated: --data is now DATA" in said
    assert json.loads(old.read_text()) == metrics
    assert "missing option DATA" in run("evaluate", str(tiny_model), code=2)
    model = shutil.copytree(tiny_model, tmp_path / "model")  # the shared model stays unindexed
    said = run("index", str(model), "--data", str(tiny_prepared), "--no-track")
    assert "deprecated: --data is now DATA" in said and "recall@20 against exact" in said
    index_json = tmp_path / "index.json"
    run("index", str(model), str(tiny_prepared), "--no-track", "--json", str(index_json))
    assert json.loads(index_json.read_text())["recall_at_20"] == pytest.approx(1.0)


def test_recommend_writes_to_out_with_k_and_the_old_spellings_warn(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    sessions = str(tiny_prepared / "test.parquet")
    new, old = tmp_path / "new.parquet", tmp_path / "old.parquet"
    summary = tmp_path / "summary.json"
    run(
        "recommend",
        str(tiny_model),
        "-i",
        sessions,
        "--out",
        str(new),
        "-k",
        "5",
        "--json",
        str(summary),
    )
    said = run("recommend", str(tiny_model), "-i", sessions, "--output", str(old), "--k", "5")
    assert "deprecated: --output is now --out" in said and "deprecated: --k is now -k" in said
    assert pl.read_parquet(new).equals(pl.read_parquet(old))
    assert pl.read_parquet(new)["rank"].max() == 5
    assert json.loads(summary.read_text())["rows"] == pl.read_parquet(new).height
    assert "same option" in run(
        "recommend",
        str(tiny_model),
        "-i",
        sessions,
        "--out",
        str(new),
        "--output",
        str(old),
        code=2,
    )


def test_baselines_take_candidates_and_the_old_models_warns(
    tiny_prepared: Path, tmp_path: Path
) -> None:
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    run(
        "baselines",
        str(tiny_prepared),
        "--candidates",
        "pop,spop",
        "--no-track",
        "--json",
        str(new),
    )
    said = run(
        "baselines", str(tiny_prepared), "--models", "pop,spop", "--no-track", "--json", str(old)
    )
    assert "deprecated: --models is now --candidates" in said
    written = json.loads(new.read_text())
    assert list(written) == ["pop", "spop"]
    assert all(m["n_events"] > 0 and 0 < m["recall@20"] <= 1 for m in written.values())
    drop = {"fit_seconds"}
    assert [
        {k: v for k, v in m.items() if k not in drop} for m in json.loads(new.read_text()).values()
    ] == [
        {k: v for k, v in m.items() if k not in drop} for m in json.loads(old.read_text()).values()
    ]


def test_cutoffs_old_space_form_warns_and_a_stray_argument_is_named(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.json"
    said = run(
        "evaluate", str(tiny_model), str(tiny_prepared), "--cutoffs", "3", "7", "--json", str(out)
    )
    assert "deprecated: --cutoffs 3 7 is now --cutoffs 3,7" in said
    assert json.loads(out.read_text())["cutoffs"] == [3, 7]
    repeated = tmp_path / "repeated.json"
    said = run(
        "evaluate",
        str(tiny_model),
        str(tiny_prepared),
        "--cutoffs",
        "5",
        "--cutoffs",
        "1",
        "--json",
        str(repeated),
    )
    assert "deprecated" not in said  # the repeated option is a current spelling
    metrics = json.loads(repeated.read_text())
    assert metrics["cutoffs"] == [1, 5]
    # The table: one row per cutoff, in order, with the metrics the run measured.
    names = ("recall", "mrr", "ndcg", "coverage", "popularity", "repeat_recall", "new_recall")
    assert table_rows(said, 1 + len(names)) == [
        [str(k), *(f"{metrics[f'{name}@{k}']:.4f}" for name in names)] for k in (1, 5)
    ]
    said = run(
        "train", str(tiny_prepared), "--out", str(tmp_path / "x"), "--no-track", "oops", code=2
    )
    assert "unexpected argument(s): oops" in said and "--cutoffs" not in said.split("oops")[0]


@pytest.mark.parametrize("with_json", [False, True])
def test_recommend_items_prints_one_session(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path, with_json: bool
) -> None:
    from gru4rec import api

    items = pl.read_parquet(tiny_model / "items.parquet").sort("item_idx")["item_id"].to_list()
    session = [str(items[3]), str(items[7])]
    expected, _ = api.load(tiny_model).recommend([[items[3], items[7]]], k=5)
    extra = ["--json", str(tmp_path / "one.json")] if with_json else []
    said = run("recommend", str(tiny_model), "--items", ",".join(session), "-k", "5", *extra)
    # The same model, index and session as `expected`: the same ranking, printed rank by rank.
    assert table_rows(said, 3) == [
        [str(rank), str(item), f"{score:.4f}"]
        for rank, item, score in expected.select("rank", "item_id", "score").iter_rows()
    ]
    if with_json:
        ranked = json.loads((tmp_path / "one.json").read_text())["ranked"]
        assert [row["item_id"] for row in ranked] == expected["item_id"].to_list()
    # An id of the model's type that it does not know is skipped, and named, like text.
    said = run("recommend", str(tiny_model), "--items", f"{session[0]},-5,nope", "-k", "5")
    assert "skipped items the model does not know: -5, nope" in said
    said = run("recommend", str(tiny_model), "--items", "nope,nada", code=2)
    assert "none of the items nope, nada is in the model's catalogue" in said


def test_similar_lists_the_nearest_items_through_the_index(
    tiny_model: Path, tmp_path: Path
) -> None:
    import numpy as np

    from gru4rec import api

    model = api.load(tiny_model)
    items = model.item_ids.to_list()
    vectors = model.scorer.item_vectors()[:, :-1]  # the output vectors, without the bias
    scores = vectors @ vectors[4]
    scores[4] = -np.inf
    order = np.argsort(-scores, kind="stable")[:6]  # one beyond k: the 5th may tie the 6th
    out = tmp_path / "similar.json"
    said = run("similar", str(tiny_model), str(items[4]), "-k", "5", "--json", str(out))
    ranked = json.loads(out.read_text())["ranked"]
    got = [items.index(row["item_id"]) for row in ranked]
    # The index sums in another order than numpy: scores agree to float32 rounding, and items
    # must be the same wherever no other score is near enough for that rounding to swap them.
    reported = np.array([row["score"] for row in ranked])
    np.testing.assert_allclose(reported, scores[order[:5]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores[got], reported, rtol=1e-5, atol=1e-5)
    assert len(set(got)) == 5 and 4 not in got
    apart = np.abs(np.diff(scores[order])) > 1e-4 * np.maximum(1.0, np.abs(scores[order[1:]]))
    alone = np.concatenate(([True], apart[:-1])) & apart
    assert [g for g, a in zip(got, alone, strict=True) if a] == [
        o for o, a in zip(order[:5].tolist(), alone, strict=True) if a
    ]
    assert table_rows(said, 3) == [
        [str(row["rank"]), str(row["item_id"]), f"{row['score']:.4f}"] for row in ranked
    ]
    assert "is not in the model's catalogue" in run("similar", str(tiny_model), "nope", code=2)
