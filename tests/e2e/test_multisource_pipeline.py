"""The real pipeline (`dvc repro`) on a tiny multi-source version: three generated sources combined by
the project's mapping file (configs/questions/harm.yaml), a multi-label head, every stage for real.
Its per-source numbers must be the ones plain sklearn computes from the stored predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from tests.helpers.tiny_project import make_tiny_multisource_project, run

pytestmark = pytest.mark.slow

QUESTIONS = ["abusive", "hate"]
SOURCES = ["tweeteval_offensive", "davidson2017", "tweeteval_hate"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("e2e-multisource")
    project = make_tiny_multisource_project(base, f"sqlite:///{base / 'mlflow.db'}")
    run(project, "dvc", "repro")
    return project


def decided(frame: pd.DataFrame, question: str, threshold: float) -> np.ndarray:
    return (frame[f"{question}_probability"] >= threshold).astype(int).to_numpy()


def test_per_source_metrics_equal_sklearn_on_the_stored_predictions(project: Path) -> None:
    frame = pq.read_table(project / "predictions" / "test.parquet").to_pandas()
    detail = read_json(project / "metrics" / "test_per_class.json")
    tuned = read_json(project / "metrics" / "validation_per_class.json")["sources"]
    assert sorted(set(frame["source"])) == sorted(SOURCES)
    source_means = []
    for source in SOURCES:
        values = []
        for question in QUESTIONS:
            cells = frame[(frame["source"] == source) & (frame[f"{question}_label"] != -1)]
            if cells[f"{question}_label"].nunique() < 2:  # a question the source answers one way only
                assert question not in detail["sources"][source]
                continue
            threshold = tuned[source][question]["threshold"]  # tuned on this source's validation rows
            expected = f1_score(cells[f"{question}_label"], decided(cells, question, threshold), average="macro",
                                labels=[0, 1], zero_division=0)
            assert detail["sources"][source][question]["macro_f1"] == pytest.approx(expected, abs=1e-6)
            if cells[f"{question}_label"].nunique() == 2:
                assert detail["sources"][source][question]["roc_auc"] == pytest.approx(
                    roc_auc_score(cells[f"{question}_label"], cells[f"{question}_probability"]), abs=1e-5)
            values.append(expected)
        source_means.append(sum(values) / len(values))
    # The headline: the mean over sources of each source's mean over the questions it answers.
    headline = read_json(project / "metrics" / "test.json")
    assert headline["macro_f1"] == pytest.approx(sum(source_means) / len(source_means), abs=1e-6)


def test_the_map_leaves_the_cells_a_source_cannot_answer_missing(project: Path) -> None:
    frame = pq.read_table(project / "predictions" / "test.parquet").to_pandas()
    offensive = frame[frame["source"] == "tweeteval_offensive"]
    hate = frame[frame["source"] == "tweeteval_hate"]
    # OLID's `offensive` says nothing about hate; HatEval's `not-hate` nothing about abuse.
    assert ((offensive["abusive_label"] == 1) == (offensive["hate_label"] == -1)).all()
    assert ((hate["hate_label"] == 0) == (hate["abusive_label"] == -1)).all()
    assert (frame[frame["source"] == "davidson2017"][["abusive_label", "hate_label"]] != -1).all().all()


def test_each_source_is_also_scored_in_its_own_labels(project: Path) -> None:
    """Davidson's three classes and the TweetEval binary labels, decoded from the answers by hand."""
    frame = pq.read_table(project / "predictions" / "test.parquet").to_pandas()
    tuned = read_json(project / "metrics" / "validation_per_class.json")["sources"]
    serving = read_json(project / "metrics" / "validation.json")
    headline = read_json(project / "metrics" / "test.json")

    def answers(rows: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
        cut = {q: tuned[source].get(q, {}).get("threshold", serving[f"threshold/{q}"]) for q in QUESTIONS}
        abusive, hate = decided(rows, "abusive", cut["abusive"]), decided(rows, "hate", cut["hate"])
        return abusive | hate, hate  # a yes to hate is a yes to abuse (the map's `implies`)

    rows = frame[frame["source"] == "davidson2017"]
    abusive, hate = answers(rows, "davidson2017")
    predicted = np.where(hate == 1, "hate_speech", np.where(abusive == 1, "offensive_language", "neither"))
    truth = np.where(rows["hate_label"] == 1, "hate_speech",
                     np.where(rows["abusive_label"] == 1, "offensive_language", "neither"))
    names = ["hate_speech", "offensive_language", "neither"]
    assert headline["own_labels_macro_f1/davidson2017"] == pytest.approx(
        f1_score(truth, predicted, average="macro", labels=names, zero_division=0), abs=1e-6)

    rows = frame[frame["source"] == "tweeteval_offensive"]
    abusive, _ = answers(rows, "tweeteval_offensive")
    assert headline["own_labels_macro_f1/tweeteval_offensive"] == pytest.approx(
        f1_score(rows["abusive_label"], abusive, average="macro", labels=[0, 1], zero_division=0), abs=1e-6)

    rows = frame[frame["source"] == "tweeteval_hate"]
    _, hate = answers(rows, "tweeteval_hate")
    assert headline["own_labels_macro_f1/tweeteval_hate"] == pytest.approx(
        f1_score(rows["hate_label"], hate, average="macro", labels=[0, 1], zero_division=0), abs=1e-6)


def test_the_plots_and_the_baseline_cover_every_question(project: Path) -> None:
    frame = pq.read_table(project / "predictions" / "test.parquet").to_pandas()
    reliability = read_json(project / "plots" / "test" / "reliability.json")["reliability"]
    for question in QUESTIONS:
        answered = int((frame[f"{question}_label"] != -1).sum())
        assert sum(point["count"] for point in reliability if point["question"] == question) == answered
    baseline = read_json(project / "metrics" / "baseline" / "test.json")
    assert 0.0 <= baseline["macro_f1"] <= 1.0
    assert run(project, "dvc", "status").strip().endswith("Data and pipelines are up to date.")
