"""Classification metrics of one split, computed with torchmetrics from the model's outputs.

Inputs are the per-example probabilities `[N, K]` (one column per label, also for a binary sigmoid
head), the predicted and the true label indices `[N]`, and the mean loss. Everything returned is a
plain Python value, so it can go straight into JSON or MLflow.

Evaluation runs in one process over the whole split, so no cross-rank synchronisation is needed;
the functional torchmetrics API is used on the complete tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cybulde.errors import CybuldeError

if TYPE_CHECKING:
    import torch


class MetricsInputError(CybuldeError, ValueError):
    """The arrays given to the metric functions do not fit together."""


def as_tensors(probabilities: Any, predictions: Any, labels: Any,
               num_labels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 probabilities `[N, K]` and int64 predictions / labels `[N]`, checked for shape."""
    # `cybulde --help` imports this module (for `round_floats`): torch and torchmetrics only when computing
    import torch

    probs = torch.as_tensor(probabilities).detach().cpu().to(torch.float64)
    preds = torch.as_tensor(predictions).detach().cpu().to(torch.int64).reshape(-1)
    target = torch.as_tensor(labels).detach().cpu().to(torch.int64).reshape(-1)
    if probs.ndim != 2 or probs.shape[1] != num_labels:
        raise MetricsInputError(
            f"probabilities must have shape [N, {num_labels}] (one column per label), "
            f"got {list(probs.shape)}")
    if not (len(probs) == len(preds) == len(target)):
        raise MetricsInputError(
            f"probabilities, predictions and labels must have the same length, got "
            f"{len(probs)}, {len(preds)} and {len(target)}")
    if len(target) == 0:
        raise MetricsInputError("cannot compute metrics of an empty split")
    for name, values in (("labels", target), ("predictions", preds)):
        if values.min() < 0 or values.max() >= num_labels:
            raise MetricsInputError(f"{name} must be label indices in [0, {num_labels - 1}], "
                                    f"got values in [{int(values.min())}, {int(values.max())}]")
    return probs, preds, target


def compute_metrics(probabilities: Any, predictions: Any, labels: Any, loss: float,
                    label_names: Sequence[str]) -> dict[str, Any]:
    """loss, accuracy, macro_f1, roc_auc (macro, one-vs-rest), per_class and confusion_matrix.

    `roc_auc` is None when it is undefined (no class has both positive and negative examples);
    classes missing from `labels` are left out of the macro average of the AUROC.
    `confusion_matrix[i][j]` counts examples of true label i predicted as j.
    """
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
    )

    num_labels = len(label_names)
    probs, preds, target = as_tensors(probabilities, predictions, labels, num_labels)
    accuracy = multiclass_accuracy(preds, target, num_classes=num_labels, average="micro")
    macro_f1 = _macro_f1(preds, target, num_labels)
    confusion = multiclass_confusion_matrix(preds, target, num_classes=num_labels)
    return {
        "loss": float(loss),
        "accuracy": float(accuracy),
        "macro_f1": macro_f1,
        "roc_auc": roc_auc(probs, target),
        "per_class": per_class_metrics(preds, target, label_names),
        "confusion_matrix": confusion.tolist(),
    }


def _macro_f1(preds: torch.Tensor, target: torch.Tensor, num_labels: int) -> float:
    """Unweighted mean of the per-class F1 over all K classes (an empty class counts as 0)."""
    from torchmetrics.functional.classification import multiclass_f1_score

    per_class = multiclass_f1_score(preds, target, num_classes=num_labels, average="none",
                                    zero_division=0)
    return float(per_class.to(float).mean())


def per_class_metrics(preds: torch.Tensor, target: torch.Tensor,
                      label_names: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """{label_name: {precision, recall, f1, support}}; an undefined ratio (0 / 0) is 0."""
    import torch
    from torchmetrics.functional.classification import (
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    num_labels = len(label_names)
    common = {"num_classes": num_labels, "average": "none", "zero_division": 0}
    precision = multiclass_precision(preds, target, **common)
    recall = multiclass_recall(preds, target, **common)
    f1 = multiclass_f1_score(preds, target, **common)
    support = torch.bincount(target, minlength=num_labels)
    return {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(label_names)
    }


def roc_auc(probabilities: torch.Tensor, target: torch.Tensor) -> float | None:
    """Macro one-vs-rest AUROC; for two labels, the AUROC of the positive (second) column.

    torchmetrics' multiclass AUROC counts a class without positives as 0 (with a warning); here
    such classes are left out of the average instead, matching what the metric can measure.
    """
    from torchmetrics.functional.classification import binary_auroc

    num_labels = probabilities.shape[1]
    classes = [1] if num_labels == 2 else range(num_labels)
    scores = []
    for index in classes:
        is_class = (target == index).to(int)
        positives = int(is_class.sum())
        if 0 < positives < len(target):
            scores.append(float(binary_auroc(probabilities[:, index], is_class)))
    if not scores:
        return None
    return sum(scores) / len(scores)


def flatten_for_logging(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """`{"validation/accuracy": ..., "validation/offensive/f1": ...}`: every number of a nested mapping
    under its path of keys (made safe for MLflow); None, strings and the confusion matrix are dropped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{_metric_safe(key)}"
        if key == "confusion_matrix" or value is None or isinstance(value, str):
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_for_logging(value, name))
        else:
            flat[name] = float(value)
    return flat


def _metric_safe(name: str) -> str:
    """A label name in the characters MLflow allows in metric keys."""
    return re.sub(r"[^\w\-. /]", "_", str(name))


def round_floats(value: Any, digits: int = 6) -> Any:
    """`value` with every float rounded (recursively through dicts and lists)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: round_floats(inner, digits) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(inner, digits) for inner in value]
    return value
