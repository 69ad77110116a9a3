"""Evaluation of a multi-label version: calibration against a hand computation, and the validate/test
outputs of a tiny multi-label model checked against sklearn on the predictions parquet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cybulde.config.schema import Config, Head
from cybulde.evaluation.evaluate import EvaluationError, evaluate_split
from cybulde.evaluation.multilabel import expected_calibration_error
from cybulde.evaluation.plots import reliability_points
from tests.evaluation.test_evaluate import FakeRun
from tests.helpers.tiny_data import QUESTIONS, SOURCE_ANSWERS, make_multilabel_data_dir
from tests.helpers.tiny_model import make_data_dir, make_model_dir

SOURCES = list(SOURCE_ANSWERS)

# Seven cells in 15 equal-width bins (width 1/15): [0.10, 0.12] in bin 1, [0.50, 0.52] in bin 7,
# [0.90] in bin 13, [0.95, 0.97] in bin 14.
HAND_PROBABILITIES = np.array([0.10, 0.12, 0.50, 0.52, 0.90, 0.95, 0.97])
HAND_LABELS = np.array([0, 1, 1, 1, 1, 0, 1])
# Per bin |fraction of yes - mean probability| x cells / 7:
#   bin 1: |0.5 - 0.11| x 2, bin 7: |1 - 0.51| x 2, bin 13: |1 - 0.90| x 1, bin 14: |0.5 - 0.96| x 2
HAND_ECE = (0.39 * 2 + 0.49 * 2 + 0.10 * 1 + 0.46 * 2) / 7


def test_expected_calibration_error_matches_a_hand_computation():
    assert expected_calibration_error(HAND_PROBABILITIES, HAND_LABELS) == pytest.approx(HAND_ECE, abs=1e-9)
    assert expected_calibration_error(np.array([]), np.array([], dtype=int)) is None


def test_reliability_points_are_the_hand_bins():
    points = reliability_points(HAND_PROBABILITIES, HAND_LABELS)
    assert [(p["bin"], p["count"]) for p in points] == [(1, 2), (7, 2), (13, 1), (14, 2)]
    assert [p["confidence"] for p in points] == pytest.approx([0.11, 0.51, 0.90, 0.96])
    assert [p["observed"] for p in points] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert points[0]["lower"] == pytest.approx(1 / 15, abs=1e-6) and points[-1]["upper"] == 1.0
    # The diagram's points give back the ECE: the weighted gap between its axes.
    gap = sum(p["count"] * abs(p["observed"] - p["confidence"]) for p in points) / len(HAND_LABELS)
    assert gap == pytest.approx(HAND_ECE, abs=1e-6)


@pytest.fixture(scope="module")
def multilabel_inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multilabel_inputs")
    data_dir = make_multilabel_data_dir(base / "data")
    return data_dir, make_model_dir(base / "model", data_dir, head="multilabel")


@pytest.fixture
def project(tmp_path, multilabel_inputs):
    data_dir, model_dir = multilabel_inputs
    shutil.copytree(data_dir, tmp_path / "data" / "fetched")
    shutil.copytree(model_dir, tmp_path / "model")
    cfg = Config()
    cfg.model.head = Head("multilabel")
    cfg.evaluation.batch_size = 5
    return tmp_path, cfg


def read_json(path):
    return json.loads(Path(path).read_text())


def sklearn_cell_metrics(frame, source, question, threshold):
    cells = frame[(frame["source"] == source) & (frame[f"{question}_label"] != -1)]
    truth = cells[f"{question}_label"].to_numpy()
    scores = cells[f"{question}_probability"].to_numpy()
    decided = (scores >= threshold).astype(int)
    both = len(set(truth)) == 2
    return {"macro_f1": f1_score(truth, decided, average="macro", labels=[0, 1], zero_division=0),
            "f1_yes": f1_score(truth, decided, pos_label=1, zero_division=0),
            "roc_auc": roc_auc_score(truth, scores) if both else None,
            "yes": int(truth.sum()), "no": int((truth == 0).sum())}


def numpy_ece(scores, truth, bins=15):
    """Expected calibration error by its definition, written out in plain numpy."""
    which = np.minimum((scores * bins).astype(int), bins - 1)
    return sum(abs(truth[which == b].mean() - scores[which == b].mean()) * (which == b).sum()
               for b in range(bins) if (which == b).any()) / len(scores)


def test_validate_and_test_of_a_multilabel_model_agree_with_sklearn_on_its_predictions(project):
    root, cfg = project
    run = FakeRun()
    results = {split: evaluate_split(cfg, split, root=root, run=run) for split in ("validation", "test")}
    validation_detail = read_json(root / "metrics" / "validation_per_class.json")

    for split, headline in results.items():
        assert read_json(root / "metrics" / f"{split}.json") == headline
        assert set(headline) == {"loss", "macro_f1", "roc_auc", "num_examples", "ece/abusive", "ece/hate",
                                 "threshold/abusive", "threshold/hate"}
        detail = read_json(root / "metrics" / f"{split}_per_class.json")
        frame = pq.read_table(root / "predictions" / f"{split}.parquet").to_pandas()
        assert list(frame.columns) == ["id", "source", "abusive_label", "abusive_probability", "abusive_prediction",
                                       "hate_label", "hate_probability", "hate_prediction"]
        stored = pq.read_table(root / "data" / "fetched" / f"{split}.parquet").to_pandas()
        assert frame["id"].tolist() == stored["id"].tolist()
        assert frame["source"].tolist() == stored["source"].tolist()
        assert [[a, h] for a, h in zip(frame["abusive_label"], frame["hate_label"], strict=True)] == [
            list(labels) for labels in stored["labels"]]

        # Each source is scored on the questions it answers, at the threshold of its own validation rows.
        assert {source: sorted(answers) for source, answers in detail["sources"].items()} == {
            source: sorted(SOURCE_ANSWERS[source]) for source in SOURCES}
        source_means = []
        for source in SOURCES:
            for question, values in detail["sources"][source].items():
                threshold = validation_detail["sources"][source][question]["threshold"]
                assert values["threshold"] == threshold
                expected = sklearn_cell_metrics(frame, source, question, threshold)
                for key, value in expected.items():
                    assert values[key] == pytest.approx(value, abs=1e-6), (split, source, question, key)
            source_means.append(np.mean([values["macro_f1"] for values in detail["sources"][source].values()]))
        assert headline["macro_f1"] == pytest.approx(np.mean(source_means), abs=1e-5)

        for question in QUESTIONS:
            # Every row is decided by the question's serving threshold, the one validation recorded.
            serving = results["validation"][f"threshold/{question}"]
            assert headline[f"threshold/{question}"] == serving
            np.testing.assert_array_equal(frame[f"{question}_prediction"],
                                          (frame[f"{question}_probability"] >= serving).astype(int))
            present = frame[frame[f"{question}_label"] != -1]
            assert headline[f"ece/{question}"] == pytest.approx(
                numpy_ece(present[f"{question}_probability"].to_numpy(), present[f"{question}_label"].to_numpy()),
                abs=1e-5)
            # The cross-source matrix: A's validation threshold applied to B's rows.
            for source_a, row in detail["cross_source"][question].items():
                for source_b, value in row.items():
                    threshold = validation_detail["sources"][source_a][question]["threshold"]
                    assert value == pytest.approx(
                        sklearn_cell_metrics(frame, source_b, question, threshold)["macro_f1"], abs=1e-6)
            answering = sorted(source for source in SOURCES if question in SOURCE_ANSWERS[source])
            assert sorted(detail["cross_source"][question]) == answering

        reliability = read_json(root / "plots" / split / "reliability.json")["reliability"]
        confusion = read_json(root / "plots" / split / "confusion.json")
        for question in QUESTIONS:
            answered = frame[frame[f"{question}_label"] != -1]
            assert sum(point["count"] for point in reliability if point["question"] == question) == len(answered)
            # Its 2x2 block of the confusion plot: one row per answered cell, at the serving threshold.
            block = [row for row in confusion if row["actual"].startswith(f"{question}: ")]
            assert sum(row["actual"] == f"{question}: yes" and row["predicted"] == f"{question}: yes"
                       for row in block) == int(((answered[f"{question}_label"] == 1)
                                                 & (answered[f"{question}_prediction"] == 1)).sum())
            assert len(block) == len(answered)
        assert sorted(path.name for path in (root / "plots" / split).iterdir()) == [
            "confusion.json", "pr.json", "reliability.json", "roc.json"]
        assert {point["question"] for point in read_json(root / "plots" / split / "roc.json")["roc"]} <= set(QUESTIONS)

    # On validation, a source's own column of the matrix is its tuned macro-F1.
    for question, row in validation_detail["cross_source"].items():
        for source in row:
            assert row[source][source] == validation_detail["sources"][source][question]["macro_f1"]
    assert run.metrics["test/per_class/sources/alpha/hate/macro_f1"] == read_json(
        root / "metrics" / "test_per_class.json")["sources"]["alpha"]["hate"]["macro_f1"]
    assert run.metrics["validation/ece/abusive"] == results["validation"]["ece/abusive"]


def test_test_needs_the_thresholds_validate_records(project):
    root, cfg = project
    with pytest.raises(EvaluationError, match="run it before `test`"):
        evaluate_split(cfg, "test", root=root, run=FakeRun())


def test_a_fixed_threshold_is_used_for_every_source_and_question(project):
    root, cfg = project
    cfg.evaluation.threshold = "0.5"
    validation = evaluate_split(cfg, "validation", root=root, run=FakeRun())
    detail = read_json(root / "metrics" / "validation_per_class.json")
    assert validation["threshold/abusive"] == validation["threshold/hate"] == 0.5
    assert {values["threshold"] for answers in detail["sources"].values() for values in answers.values()} == {0.5}


def test_a_single_label_model_on_a_multilabel_version_is_refused(tmp_path, multilabel_inputs):
    data_dir, _ = multilabel_inputs
    shutil.copytree(data_dir, tmp_path / "data" / "fetched")
    single_data = make_data_dir(tmp_path / "single")
    make_model_dir(tmp_path / "model", single_data, head="softmax")
    with pytest.raises(EvaluationError, match="single-label model cannot be evaluated on a multi-label version"):
        evaluate_split(Config(), "validation", root=tmp_path, run=FakeRun())


def test_the_stages_hand_validations_thresholds_to_the_served_model_and_the_behaviour_suite(project, monkeypatch):
    import importlib

    from cybulde.serving.columns import question_thresholds

    root, cfg = project
    run, published, probed = FakeRun(), [], []
    monkeypatch.chdir(root)
    monkeypatch.setattr("cybulde.tracking.run.PipelineRun.for_model", lambda cfg, model_dir: run)
    monkeypatch.setattr("cybulde.publishing.publish_served_model",
                        lambda cfg, run, model_dir, metrics, **kw: published.append(question_thresholds(metrics)))
    monkeypatch.setattr("cybulde.evaluation.behaviour.log_behaviour",
                        lambda run, model_dir, threshold, thresholds=None: probed.append((threshold, thresholds)))

    assert importlib.import_module("stages.validate").evaluate(cfg).endswith("-> metrics/validation.json")
    assert importlib.import_module("stages.test").evaluate_publish_and_probe(cfg).endswith("-> metrics/test.json")
    recorded = question_thresholds(read_json(root / "metrics" / "validation.json"))
    assert sorted(recorded) == QUESTIONS
    assert published == [recorded] and probed == [(None, recorded)]
    assert run.status == "FINISHED"
