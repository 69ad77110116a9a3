import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from cybulde.evaluation.metrics import (
    MetricsInputError,
    compute_metrics,
    flatten_for_logging,
    round_floats,
)

NAMES3 = ["neither", "hate", "offensive"]
LABELS3 = [0, 0, 1, 1, 2, 2]
PREDS3 = [0, 1, 1, 1, 2, 0]
PROBS3 = [
    [0.7, 0.2, 0.1],
    [0.3, 0.6, 0.1],
    [0.2, 0.5, 0.3],
    [0.1, 0.8, 0.1],
    [0.2, 0.2, 0.6],
    [0.5, 0.1, 0.4],
]


def test_three_class_metrics_match_hand_computed_values():
    metrics = compute_metrics(PROBS3, PREDS3, LABELS3, loss=0.25, label_names=NAMES3)

    # confusion (rows actual): [[1,1,0],[0,2,0],[1,0,1]]
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics["loss"] == 0.25
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    per_class = metrics["per_class"]
    assert per_class["neither"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per_class["hate"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert per_class["offensive"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
                                                    "support": 2})
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert isinstance(per_class["hate"]["support"], int)


def test_three_class_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=200)
    preds = probs.argmax(axis=1)

    metrics = compute_metrics(probs, preds, labels, loss=1.0, label_names=NAMES3)

    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-6)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds)
    for index, name in enumerate(NAMES3):
        assert metrics["per_class"][name] == pytest.approx(
            {"precision": precision[index], "recall": recall[index], "f1": f1[index],
             "support": support[index]})
    assert metrics["confusion_matrix"] == confusion_matrix(labels, preds).tolist()


def test_binary_roc_auc_is_the_auroc_of_the_positive_column():
    positive = [0.1, 0.4, 0.35, 0.8]
    probs = [[1 - p, p] for p in positive]
    labels = [0, 0, 1, 1]
    preds = [0, 0, 0, 1]

    metrics = compute_metrics(probs, preds, labels, loss=0.5, label_names=["no", "yes"])

    # pairs (pos, neg): (0.35,0.1) ok, (0.35,0.4) wrong, (0.8,*) ok -> 3/4
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, positive))
    # class no: tp=2 fp=1 fn=0 -> f1 0.8; class yes: tp=1 fp=0 fn=1 -> f1 2/3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["accuracy"] == pytest.approx(0.75)


def test_roc_auc_skips_a_class_without_examples_and_is_none_when_undefined():
    probs = [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.8, 0.1, 0.1]]
    labels = [0, 1, 1, 0]
    metrics = compute_metrics(probs, [0, 1, 1, 0], labels, loss=0.1, label_names=NAMES3)
    expected = (roc_auc_score([1, 0, 0, 1], [0.6, 0.2, 0.4, 0.8])
                + roc_auc_score([0, 1, 1, 0], [0.3, 0.7, 0.5, 0.1])) / 2
    assert metrics["roc_auc"] == pytest.approx(expected)
    assert metrics["per_class"]["offensive"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                 "support": 0}

    single = compute_metrics([[0.9, 0.1], [0.8, 0.2]], [0, 0], [0, 0], loss=0.0,
                             label_names=["no", "yes"])
    assert single["roc_auc"] is None


def test_accepts_torch_tensors():
    metrics = compute_metrics(torch.tensor(PROBS3), torch.tensor(PREDS3), torch.tensor(LABELS3),
                              loss=torch.tensor(0.5).item(), label_names=NAMES3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    ("probs", "preds", "labels", "message"),
    [
        ([[0.5, 0.5]], [0], [0], "shape"),
        ([[0.2, 0.3, 0.5]], [0, 1], [0], "same length"),
        ([[0.2, 0.3, 0.5]], [3], [0], "predictions must be label indices"),
        (np.zeros((0, 3)), [], [], "empty"),
    ],
)
def test_rejects_inconsistent_inputs(probs, preds, labels, message):
    with pytest.raises(MetricsInputError, match=message):
        compute_metrics(probs, preds, labels, loss=0.0, label_names=NAMES3)


def test_flatten_and_round():
    metrics = compute_metrics(PROBS3, PREDS3, LABELS3, loss=1 / 3, label_names=NAMES3)
    flat = flatten_for_logging(metrics, "validation")
    assert flat["validation/accuracy"] == pytest.approx(4 / 6)
    assert flat["validation/per_class/hate/f1"] == pytest.approx(0.8)
    assert flat["validation/per_class/neither/support"] == 2.0
    assert not any("confusion" in key for key in flat)
    assert "validation/roc_auc" in flat

    rounded = round_floats({"a": 1 / 3, "b": [2 / 3, 1], "c": {"d": math.pi}, "e": None})
    assert rounded == {"a": 0.333333, "b": [0.666667, 1], "c": {"d": 3.141593}, "e": None}


def test_flatten_drops_none_and_sanitises_label_names():
    flat = flatten_for_logging(
        {"roc_auc": None, "threshold": None, "per_class": {"not hate?": {"f1": 0.5}}}, "test")
    assert flat == {"test/per_class/not hate_/f1": 0.5}
