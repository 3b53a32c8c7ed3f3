"""One spelling per concept on every command; the old spellings still work for one release,
with a warning; a stray argument is refused as what it is. And the quick looks: one
session's recommendations (`recommend --items`) and an item's neighbours (`similar`)."""

from __future__ import annotations

import json
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


def test_generate_writes_to_out_and_the_old_positional_warns(tmp_path: Path) -> None:
    new, old = tmp_path / "new.tsv", tmp_path / "old.tsv"
    assert "deprecated" not in run("generate", "--out", str(new), "--sessions", "50")
    said = run("generate", str(old), "--sessions", "50")
    assert "deprecated: gru4rec generate FILE is now gru4rec generate --out FILE" in said
    assert new.read_bytes() == old.read_bytes()
    assert "missing option --out" in run("generate", "--sessions", "50", code=2)


def test_evaluate_and_index_take_the_data_as_a_positional(
    tiny_model: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    run("evaluate", str(tiny_model), str(tiny_prepared), "--json", str(new))
    said = run("evaluate", str(tiny_model), "--data", str(tiny_prepared), "--json", str(old))
    assert "deprecated: --data is now DATA" in said
    assert json.loads(new.read_text()) == json.loads(old.read_text())
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
    said = run("evaluate", str(tiny_model), str(tiny_prepared), "--cutoffs", "5", "--cutoffs", "1")
    assert "recall@5" in said or "5" in said
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
    assert all(str(item) in said for item in expected["item_id"].to_list())
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
    expected = [items[i] for i in np.argsort(-scores, kind="stable")[:5]]
    out = tmp_path / "similar.json"
    said = run("similar", str(tiny_model), str(items[4]), "-k", "5", "--json", str(out))
    ranked = json.loads(out.read_text())["ranked"]
    assert [row["item_id"] for row in ranked] == expected
    assert str(items[4]) not in [str(row["item_id"]) for row in ranked]
    assert str(expected[0]) in said
    assert "is not in the model's catalogue" in run("similar", str(tiny_model), "nope", code=2)
