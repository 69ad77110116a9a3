"""Plot data for `dvc plots` and a confusion-matrix image for MLflow.

Files written into `plots/<split>/` (the plots dvc.yaml declares):
- `confusion.json`: `[{"actual": name, "predicted": name}, ...]`, one row per example, for DVC's
  `confusion` template (x and y: actual and predicted);
- `roc.json`: `{"roc": [{"fpr", "tpr", "threshold"}, ...]}` and `pr.json`:
  `{"pr": [{"precision", "recall", "threshold"}, ...]}` (x: fpr / recall, y: tpr / precision):
  one curve, of the positive (second) label for two labels, micro-averaged for more.

Logged to MLflow only (written to a scratch folder, so the workspace holds no undeclared output):
- `confusion_matrix.png`: counts with label names, rendered with the Agg backend;
- for more than two labels, `roc_per_class.json` / `pr_per_class.json`: one-vs-rest curves of
  every label in one list, each point carrying a `"class"` field.
All numbers are rounded to 6 decimals and the JSON is written with sorted keys, so identical
predictions give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.files import write_json

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

DIGITS = 6
CONFUSION_FILE = "confusion.json"
ROC_FILE = "roc.json"
PR_FILE = "pr.json"
CONFUSION_PNG = "confusion_matrix.png"
ROC_PER_CLASS_FILE = "roc_per_class.json"
PR_PER_CLASS_FILE = "pr_per_class.json"


def confusion_rows(predictions: Any, labels: Any,
                   label_names: Sequence[str]) -> list[dict[str, str]]:
    return [{"actual": label_names[int(actual)], "predicted": label_names[int(predicted)]}
            for actual, predicted in zip(_as_list(labels), _as_list(predictions), strict=True)]


def _as_list(values: Any) -> list[int]:
    import torch

    return torch.as_tensor(values).reshape(-1).tolist()


def _curves(probabilities: Any, labels: Any, label_names: Sequence[str],
            per_class: bool) -> list[tuple[str | None, torch.Tensor, torch.Tensor]]:
    """(class name or None, scores, 0/1 targets) of each curve to draw.

    Two labels: the positive (second) label. More labels: one micro-averaged curve (every
    example-label pair is one binary decision), or with `per_class` one curve per label
    (one-vs-rest), named so that the points can be told apart.
    """
    probs, target = _tensors(probabilities, labels)
    num_labels = len(label_names)
    if num_labels == 2:
        return [(None, probs[:, 1], (target == 1).to(int))]
    if not per_class:
        one_hot = (target.unsqueeze(1) == _arange(num_labels)).to(int)
        return [(None, probs.reshape(-1), one_hot.reshape(-1))]
    return [(label_names[index], probs[:, index], (target == index).to(int))
            for index in range(num_labels)]


def _arange(count: int) -> torch.Tensor:
    import torch

    return torch.arange(count)


def roc_points(probabilities: Any, labels: Any, label_names: Sequence[str],
               per_class: bool = False) -> list[dict[str, Any]]:
    """ROC points ({"fpr", "tpr", "threshold"}, plus "class" per label when `per_class`)."""
    from torchmetrics.functional.classification import binary_roc

    points: list[dict[str, Any]] = []
    for name, scores, is_class in _curves(probabilities, labels, label_names, per_class):
        if not 0 < int(is_class.sum()) < len(is_class):
            continue  # a curve needs both positives and negatives
        fpr, tpr, thresholds = binary_roc(scores, is_class)
        for x, y, t in zip(fpr.tolist(), tpr.tolist(), thresholds.tolist(), strict=True):
            points.append(_named({"fpr": _r(x), "tpr": _r(y), "threshold": _r(min(t, 1.0))}, name))
    return points


def pr_points(probabilities: Any, labels: Any, label_names: Sequence[str],
              per_class: bool = False) -> list[dict[str, Any]]:
    """Precision-recall points ({"precision", "recall", "threshold"}), grouped like `roc_points`."""
    from torchmetrics.functional.classification import binary_precision_recall_curve

    points: list[dict[str, Any]] = []
    for name, scores, is_class in _curves(probabilities, labels, label_names, per_class):
        if int(is_class.sum()) == 0:
            continue  # recall is undefined without positives
        precision, recall, thresholds = binary_precision_recall_curve(scores, is_class)
        # The last point (precision 1, recall 0) has no threshold of its own: it lies above all.
        threshold_list = [*thresholds.tolist(), 1.0]
        for p, r, t in zip(precision.tolist(), recall.tolist(), threshold_list, strict=True):
            points.append(_named({"precision": _r(p), "recall": _r(r), "threshold": _r(t)}, name))
    return points


def _named(point: dict[str, Any], name: str | None) -> dict[str, Any]:
    if name is not None:
        point["class"] = name
    return point


def _tensors(probabilities: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    probs = torch.as_tensor(probabilities).detach().cpu().to(torch.float32)
    target = torch.as_tensor(labels).detach().cpu().to(torch.int64).reshape(-1)
    return probs, target


def _r(value: float) -> float:
    return round(float(value), DIGITS)


def confusion_figure(matrix: Sequence[Sequence[int]], label_names: Sequence[str],
                     title: str) -> Figure:
    """A labelled heat map of counts (rows: actual, columns: predicted)."""
    from matplotlib.figure import Figure

    size = max(4.0, 1.2 * len(label_names) + 2.0)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    counts = [[int(cell) for cell in row] for row in matrix]
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = range(len(label_names))
    axes.set_xticks(ticks, labels=list(label_names), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(label_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(title)
    peak = max((cell for row in counts for cell in row), default=0)
    for row_index, row in enumerate(counts):
        for column_index, count in enumerate(row):
            color = "white" if peak and count > peak / 2 else "black"
            axes.text(column_index, row_index, str(count), ha="center", va="center", color=color)
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """PNG via the Agg canvas (no display needed), without the time-stamped metadata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def write_plots(out_dir: Path, extra_dir: Path, probabilities: Any, predictions: Any, labels: Any,
                label_names: Sequence[str], confusion_matrix: Sequence[Sequence[int]],
                title: str) -> dict[str, Path]:
    """The DVC plot files of one split into `out_dir`, the MLflow-only extras into `extra_dir`.

    `out_dir` receives exactly confusion.json, roc.json and pr.json, the files dvc.yaml declares;
    the confusion-matrix PNG and, for more than two labels, the per-class curves go to `extra_dir`.
    Returns the paths by kind.
    """
    out_dir, extra_dir = Path(out_dir), Path(extra_dir)
    paths = {
        "confusion": write_json(confusion_rows(predictions, labels, label_names),
                                out_dir / CONFUSION_FILE),
        "roc": write_json({"roc": roc_points(probabilities, labels, label_names)},
                          out_dir / ROC_FILE),
        "pr": write_json({"pr": pr_points(probabilities, labels, label_names)},
                         out_dir / PR_FILE),
        "confusion_png": save_figure(confusion_figure(confusion_matrix, label_names, title),
                                     extra_dir / CONFUSION_PNG),
    }
    if len(label_names) > 2:
        paths["roc_per_class"] = write_json(
            {"roc": roc_points(probabilities, labels, label_names, per_class=True)},
            extra_dir / ROC_PER_CLASS_FILE)
        paths["pr_per_class"] = write_json(
            {"pr": pr_points(probabilities, labels, label_names, per_class=True)},
            extra_dir / PR_PER_CLASS_FILE)
    return paths
