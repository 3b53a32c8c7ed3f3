"""The protocol of selection, under test: every candidate is fitted on train_tr and scored
on valid, the choice is refitted on train, and test is read once, at the end; the ranker's
validation figures are out of fold.

Two ways: a spy on what each stage reads, and the data itself (the candidates' validation
figures and the choice do not move when train and test are replaced by other sessions).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gru4rec.jobs import selection
from gru4rec.jobs.selection import SelectionResult, parse_candidates, select_model
from gru4rec.options import Compute
from gru4rec.scoring.ranker import FEATURES, RankerTable, fitting
from gru4rec.scoring.ranker.fitting import N_FOLDS, fit_ranker
from tests.conftest import prepared_log

TINY_GRU = {"n_epochs": "1", "layers": "8", "n_sample": "16", "batch_size": "16"}
EVERY_FAMILY = "pop,spop,iknn,sknn,vsknn,gru4rec,repeat,hybrid,ranker"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gru4rec.pipelines.synthetic import SyntheticLog

    spec = SyntheticLog(n_sessions=700, n_items=40, days=6, seed=6, revisit=0.3)
    return prepared_log(tmp_path_factory.mktemp("protocol"), spec)


def _select(data: Path, out: Path, on_candidate: Any = None) -> SelectionResult:
    return select_model(
        data,
        out,
        parse_candidates(EVERY_FAMILY),
        settings=TINY_GRU,
        compute=Compute("cpu", threads=1),
        on_candidate=on_candidate,
    )


@pytest.fixture(scope="module")
def watched(
    log: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SelectionResult, list[str]]:
    """A selection over every family, with the splits each stage read, in order (a marker
    `<name>` after each candidate's validation)."""
    reads: list[str] = []
    real_load, real_train, real_eval = (
        selection.load_split,
        selection.train_model,
        selection.evaluate_split,
    )

    def load_split(data_dir: Path, split: str, **options: Any) -> Any:
        reads.append(split)
        return real_load(data_dir, split, **options)

    def train_model(data_dir: Path, config: Any, out: Path, *, split: str, **options: Any) -> Any:
        reads.append(split)
        return real_train(data_dir, config, out, split=split, **options)

    def evaluate_split(
        scorer: Any, items: Any, data_dir: Path, *, split: str, **options: Any
    ) -> Any:
        reads.append(split)
        return real_eval(scorer, items, data_dir, split=split, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection, "load_split", load_split)
        patch.setattr(selection, "train_model", train_model)
        patch.setattr(selection, "evaluate_split", evaluate_split)
        out = tmp_path_factory.mktemp("watched") / "model"
        result = _select(log, out, on_candidate=lambda name, _m: reads.append(f"<{name}>"))
    return result, reads


def test_candidates_are_fitted_on_train_tr_and_scored_on_valid_only(
    watched: tuple[SelectionResult, list[str]],
) -> None:
    _result, reads = watched
    last_marker = max(i for i, read in enumerate(reads) if read.startswith("<"))
    choosing = {read for read in reads[:last_marker] if not read.startswith("<")}
    assert choosing == {"train_tr", "valid"}


def test_the_choice_is_refitted_on_train_and_test_is_read_once_at_the_end(
    watched: tuple[SelectionResult, list[str]],
) -> None:
    result, reads = watched
    last_marker = max(i for i, read in enumerate(reads) if read.startswith("<"))
    refitting = reads[last_marker + 1 :]
    assert reads.count("test") == 1 and refitting[-1] == "test"
    assert set(refitting[:-1]) <= {"train"} and "train" in refitting[:-1]
    assert result.test["n_events"] > 0


def test_validation_figures_and_choice_do_not_move_when_train_and_test_are_replaced(
    log: Path, watched: tuple[SelectionResult, list[str]], tmp_path: Path
) -> None:
    """train.parquet becomes train_tr's sessions and test.parquet valid's: a candidate fitted
    on train, or scored on test, would show other validation figures."""
    result, _reads = watched
    swapped = shutil.copytree(log, tmp_path / "swapped")
    shutil.copy(log / "train_tr.parquet", swapped / "train.parquet")
    shutil.copy(log / "valid.parquet", swapped / "test.parquet")
    again = _select(swapped, tmp_path / "model")
    assert again.candidates == result.candidates
    assert again.chosen == result.chosen
    assert again.test != result.test  # the test figures did read the new test split


def _crafted_table(n_sessions: int = 60, per_session: int = 3, size: int = 8) -> RankerTable:
    """Predictions of `n_sessions` sessions, `size` candidates each, one of them the target;
    random features, except the first: the prediction's number (to trace what is scored)."""
    rng = np.random.default_rng(0)
    n_groups = n_sessions * per_session
    features = rng.random((n_groups * size, len(FEATURES))).astype(np.float32)
    features[:, 0] = np.repeat(np.arange(n_groups), size)
    labels = np.zeros(n_groups * size, dtype=np.int8)
    labels[np.arange(n_groups) * size + rng.integers(0, size, n_groups)] = 1
    return RankerTable(
        features=features,
        labels=labels,
        group_sizes=np.full(n_groups, size, dtype=np.int64),
        sessions=np.repeat(np.arange(n_sessions), per_session),
        repeat=np.zeros(n_groups, dtype=bool),
        outside=np.zeros(n_groups, dtype=np.float64),
    )


def test_no_fold_model_of_the_ranker_scores_a_session_it_learned_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = _crafted_table()
    models: list[dict[str, set[int]]] = []
    real_train = fitting._train

    def train(lightgbm: Any, table: RankerTable, groups: np.ndarray, stop: Any, *rest: Any) -> Any:
        booster = real_train(lightgbm, table, groups, stop, *rest)
        seen = groups if stop is None else groups | stop
        model = {"learned": set(table.sessions[seen].tolist()), "scored": set()}
        models.append(model)
        predict = booster.predict

        def traced(features: np.ndarray, **options: Any) -> Any:
            model["scored"] |= set(table.sessions[features[:, 0].astype(int)].tolist())
            return predict(features, **options)

        booster.predict = traced
        return booster

    monkeypatch.setattr(fitting, "_train", train)
    fit_ranker(table, n_items=100, num_threads=1)
    scoring = [model for model in models if model["scored"]]
    assert len(scoring) == N_FOLDS  # one model per fold scores; the final model does not
    for model in scoring:
        assert not model["learned"] & model["scored"]
    scored = [session for model in scoring for session in model["scored"]]
    assert sorted(scored) == sorted(set(table.sessions.tolist()))  # every session once
