"""Models saved by an earlier release still load, and score as they did.

tests/data/saved_models/0.1.0/ holds one tiny model of every family, saved by release
0.1.0 (commit f4ecb28) from a generated log of 300 sessions and 30 items, with the scores
that release gave for three sessions (scores.json over sessions.json). A change of a
family's directory format that breaks these models fails here: keep a reader for the old
format, or bump the format version and say so in CHANGELOG.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gru4rec.scoring.contract import session_batch
from gru4rec.serving.saved_models import load_scorer, model_family

SAVED = Path(__file__).parent / "data" / "saved_models" / "0.1.0"
EXPECTED = json.loads((SAVED / "scores.json").read_text())
SESSIONS = json.loads((SAVED / "sessions.json").read_text())


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_a_model_of_release_0_1_0_loads_and_scores_as_it_did(family: str, tmp_path: Path) -> None:
    # A copy: loading must not need to write, and must not change the stored files.
    model_dir = shutil.copytree(SAVED / family, tmp_path / family)
    assert model_family(model_dir) == family
    scorer, items = load_scorer(model_dir, device="cpu")
    assert scorer.family == family and items.height == scorer.n_items
    with torch.inference_mode():
        scores = scorer.score(session_batch(scorer, SESSIONS)).float()
    torch.testing.assert_close(
        scores, torch.tensor(EXPECTED[family]), rtol=1e-5, atol=2e-6, msg=family
    )


def test_every_family_of_this_release_has_a_saved_model_of_0_1_0() -> None:
    from gru4rec.serving import families

    assert set(EXPECTED) == set(families.names())
