import json

import pytest
from sklearn.metrics import roc_curve

from cybulde.evaluation.plots import (
    confusion_rows,
    pr_points,
    roc_points,
    write_plots,
)

BINARY_NAMES = ["not_offensive", "offensive"]
POSITIVE = [0.1, 0.4, 0.35, 0.8]
BINARY_PROBS = [[1 - p, p] for p in POSITIVE]
BINARY_LABELS = [0, 0, 1, 1]


def test_confusion_rows_use_label_names():
    rows = confusion_rows([0, 1, 1], [0, 0, 1], BINARY_NAMES)
    assert rows == [
        {"actual": "not_offensive", "predicted": "not_offensive"},
        {"actual": "not_offensive", "predicted": "offensive"},
        {"actual": "offensive", "predicted": "offensive"},
    ]


def test_binary_roc_matches_sklearn_and_has_no_class_field():
    points = roc_points(BINARY_PROBS, BINARY_LABELS, BINARY_NAMES)
    fpr, tpr, _ = roc_curve(BINARY_LABELS, POSITIVE)
    assert [p["fpr"] for p in points] == pytest.approx(list(fpr))
    assert [p["tpr"] for p in points] == pytest.approx(list(tpr))
    assert all(set(p) == {"fpr", "tpr", "threshold"} for p in points)
    assert all(0.0 <= p["threshold"] <= 1.0 for p in points)


def test_binary_pr_curve_ends_at_full_precision_zero_recall():
    points = pr_points(BINARY_PROBS, BINARY_LABELS, BINARY_NAMES)
    assert points[0]["recall"] == 1.0 and points[0]["precision"] == 0.5
    assert points[-1] == {"precision": 1.0, "recall": 0.0, "threshold": 1.0}


MULTI_NAMES = ["a", "b", "c"]
MULTI_PROBS = [[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2]]
MULTI_LABELS = [0, 1, 2, 1]


def test_multiclass_per_class_curves_are_one_vs_rest():
    roc = roc_points(MULTI_PROBS, MULTI_LABELS, MULTI_NAMES, per_class=True)
    assert {p["class"] for p in roc} == {"a", "b", "c"}
    b_points = [p for p in roc if p["class"] == "b"]
    fpr, tpr, _ = roc_curve([0, 1, 0, 1], [0.2, 0.6, 0.2, 0.4])
    assert [p["fpr"] for p in b_points] == pytest.approx(list(fpr))
    assert [p["tpr"] for p in b_points] == pytest.approx(list(tpr))
    pr = pr_points(MULTI_PROBS, MULTI_LABELS, MULTI_NAMES, per_class=True)
    assert {p["class"] for p in pr} == {"a", "b", "c"}


def test_multiclass_default_curve_is_micro_averaged():
    roc = roc_points(MULTI_PROBS, MULTI_LABELS, MULTI_NAMES)
    assert all("class" not in p for p in roc)
    flat_targets = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0]
    flat_scores = [v for row in MULTI_PROBS for v in row]
    fpr, tpr, _ = roc_curve(flat_targets, flat_scores)
    assert [p["fpr"] for p in roc] == pytest.approx(list(fpr))
    assert [p["tpr"] for p in roc] == pytest.approx(list(tpr))


def test_multiclass_write_plots_adds_per_class_files(tmp_path):
    paths = write_plots(tmp_path / "plots", tmp_path / "extra", MULTI_PROBS, [0, 1, 2, 0],
                        MULTI_LABELS, MULTI_NAMES, [[1, 0, 0], [1, 1, 0], [0, 0, 1]], "test")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.json", "pr.json",
                                                                      "reliability.json", "roc.json"]
    assert {path.name for path in paths.values()} == {
        "confusion.json", "roc.json", "pr.json", "reliability.json", "confusion_matrix.png", "roc_per_class.json",
        "pr_per_class.json", "roc_curve.png", "pr_curve.png", "reliability_diagram.png"}
    per_class = json.loads(paths["roc_per_class"].read_text())["roc"]
    assert {p["class"] for p in per_class} == set(MULTI_NAMES)


def test_write_plots_is_deterministic(tmp_path):
    matrix = [[1, 1], [1, 1]]
    first = write_plots(tmp_path / "one", tmp_path / "x1", BINARY_PROBS, [0, 1, 0, 1],
                        BINARY_LABELS, BINARY_NAMES, matrix, "validation")
    second = write_plots(tmp_path / "two", tmp_path / "x2", BINARY_PROBS, [0, 1, 0, 1],
                         BINARY_LABELS, BINARY_NAMES, matrix, "validation")
    # Only the files dvc.yaml declares land in the plots folder; the PNGs are for MLflow.
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["confusion.json", "pr.json",
                                                                    "reliability.json", "roc.json"]
    for kind, path in first.items():
        assert path.read_bytes() == second[kind].read_bytes(), kind
    for image in ("confusion_png", "roc_png", "pr_png"):
        assert first[image].parent == tmp_path / "x1"
        assert first[image].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roc = json.loads(first["roc"].read_text())
    assert set(roc) == {"roc"}
    assert set(json.loads(first["pr"].read_text())) == {"pr"}
    assert len(json.loads(first["confusion"].read_text())) == 4


def test_multiclass_reliability_is_the_predicted_label_confidence_against_being_right(tmp_path):
    paths = write_plots(tmp_path / "plots", tmp_path / "extra", MULTI_PROBS, [0, 1, 2, 0],
                        MULTI_LABELS, MULTI_NAMES, [[1, 0, 0], [1, 1, 0], [0, 0, 1]], "test")
    points = json.loads(paths["reliability"].read_text())["reliability"]
    # By hand: each row's largest probability, its 15-bin index, and whether its argmax is the label.
    rows = [(max(row), row.index(max(row)) == label) for row, label in zip(MULTI_PROBS, MULTI_LABELS, strict=True)]
    expected = {}
    for confidence, right in rows:
        expected.setdefault(min(int(confidence * 15), 14), []).append((confidence, right))
    assert [point["bin"] for point in points] == sorted(expected)
    for point in points:
        members = expected[point["bin"]]
        assert point["question"] == "top label" and point["count"] == len(members)
        assert point["confidence"] == pytest.approx(sum(c for c, _ in members) / len(members), abs=1e-6)
        assert point["observed"] == pytest.approx(sum(r for _, r in members) / len(members), abs=1e-6)
