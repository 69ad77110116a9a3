"""Models exported before multi-label heads existed still load and score exactly as they did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cybulde.serving.scorer import TextScorer

FIXTURES = Path(__file__).parent / "fixtures" / "exported-single-label"


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_a_single_label_model_exported_earlier_scores_as_it_did_then(head: str) -> None:
    recorded = json.loads((FIXTURES / f"{head}-scores.json").read_text())
    scorer = TextScorer.from_dir(FIXTURES / f"{head}-model", threshold=recorded["threshold"], precision="32-true")
    frame = scorer.score(recorded["texts"])
    assert list(frame.columns) == recorded["columns"]
    for row, expected in zip(frame.to_dict(orient="records"), recorded["rows"], strict=True):
        assert row["label"] == expected["label"]
        for column in recorded["columns"][1:]:
            assert row[column] == pytest.approx(expected[column], abs=1e-7)
