"""Plot data for `dvc plots`, and images of the same plots for MLflow.

Files written into `plots/<split>/` (the plots dvc.yaml declares):
- `confusion.json`: `[{"actual": name, "predicted": name}, ...]`, one row per example, for DVC's
  `confusion` template (x and y: actual and predicted);
- `roc.json`: `{"roc": [{"fpr", "tpr", "threshold"}, ...]}` and `pr.json`:
  `{"pr": [{"precision", "recall", "threshold"}, ...]}` (x: fpr / recall, y: tpr / precision):
  one curve, of the positive (second) label for two labels, micro-averaged for more;
- `reliability.json`: `{"reliability": [{"question", "bin", "lower", "upper", "confidence", "observed",
  "count"}, ...]}` (x: confidence, y: observed), the reliability diagram in 15 equal-width bins: for
  two labels of the positive label's probability (`question`: its name), for more of the predicted
  label's probability against how often it is right (`question`: "top label"); a multi-label model
  has one series per question.

Logged to MLflow only (written to a scratch folder, so the workspace holds no undeclared output):
- `confusion_matrix.png`: counts with label names, `roc_curve.png`, `pr_curve.png` and
  `reliability_diagram.png`: the curves of roc.json, pr.json and reliability.json (and, for more than two labels, every label's), rendered with the Agg backend;
- for more than two labels, `roc_per_class.json` / `pr_per_class.json`: one-vs-rest curves of
  every label in one list, each point carrying a `"class"` field.
All numbers are rounded to 6 decimals and the JSON is written with sorted keys, so identical
predictions give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

from cybulde.files import write_json

DIGITS = 6
CONFUSION_FILE = "confusion.json"
ROC_FILE = "roc.json"
PR_FILE = "pr.json"
CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc_curve.png"
PR_PNG = "pr_curve.png"
RELIABILITY_PNG = "reliability_diagram.png"
MICRO_AVERAGE = "micro-average"
AXIS_TITLES = {"fpr": "false positive rate", "tpr": "true positive rate"}
RELIABILITY_FILE = "reliability.json"
RELIABILITY_BINS = 15
TOP_LABEL = "top label"
ROC_PER_CLASS_FILE = "roc_per_class.json"
PR_PER_CLASS_FILE = "pr_per_class.json"


def confusion_rows(predictions: Any, labels: Any,
                   label_names: Sequence[str]) -> list[dict[str, str]]:
    return [{"actual": label_names[int(actual)], "predicted": label_names[int(predicted)]}
            for actual, predicted in zip(_as_list(labels), _as_list(predictions), strict=True)]


def _as_list(values: Any) -> list[int]:
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
    return torch.arange(count)


def roc_points(probabilities: Any, labels: Any, label_names: Sequence[str],
               per_class: bool = False) -> list[dict[str, Any]]:
    """ROC points ({"fpr", "tpr", "threshold"}, plus "class" per label when `per_class`)."""
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
    probs = torch.as_tensor(probabilities).detach().cpu().to(torch.float32)
    target = torch.as_tensor(labels).detach().cpu().to(torch.int64).reshape(-1)
    return probs, target


def _r(value: float) -> float:
    return round(float(value), DIGITS)


def confusion_figure(matrix: Sequence[Sequence[int]], label_names: Sequence[str],
                     title: str) -> Figure:
    """A labelled heat map of counts (rows: actual, columns: predicted)."""
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


def curve_figure(curves: dict[str, list[dict[str, Any]]], x: str, y: str, title: str,
                 diagonal: bool = False) -> Figure:
    """One line per named curve of `{x: ..., y: ...}` points, on the unit square (with the
    chance diagonal if `diagonal`)."""
    figure = Figure(figsize=(5.0, 5.0))
    axes = figure.add_subplot()
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, points in curves.items():
        axes.plot([point[x] for point in points], [point[y] for point in points], label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(AXIS_TITLES.get(x, x))
    axes.set_ylabel(AXIS_TITLES.get(y, y))
    axes.set_title(title)
    axes.legend(loc="lower right" if diagonal else "lower left")
    figure.tight_layout()
    return figure


def _named_curves(overall: list[dict[str, Any]], per_class: list[dict[str, Any]] | None,
                  label_names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The positive label's curve for two labels; the micro-average and each label's for more."""
    if per_class is None:
        return {label_names[-1]: overall}
    curves = {MICRO_AVERAGE: overall}
    for name in label_names:
        curves[name] = [point for point in per_class if point["class"] == name]
    return curves


def save_figure(figure: Figure, path: Path) -> Path:
    """PNG via the Agg canvas (no display needed), without the time-stamped metadata."""
    FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def write_plots(out_dir: Path, extra_dir: Path, probabilities: Any, predictions: Any, labels: Any,
                label_names: Sequence[str], confusion_matrix: Sequence[Sequence[int]],
                split: str) -> dict[str, Path]:
    """The DVC plot files of one split into `out_dir`, the MLflow-only extras into `extra_dir`.

    `out_dir` receives exactly confusion.json, roc.json, pr.json and reliability.json, the files
    dvc.yaml declares;
    the PNGs and, for more than two labels, the per-class curves go to `extra_dir`.
    Returns the paths by kind.
    """
    out_dir, extra_dir = Path(out_dir), Path(extra_dir)
    roc = roc_points(probabilities, labels, label_names)
    pr = pr_points(probabilities, labels, label_names)
    reliability = single_label_reliability(probabilities, labels, label_names)
    paths = {
        "confusion": write_json(confusion_rows(predictions, labels, label_names),
                                out_dir / CONFUSION_FILE),
        "roc": write_json({"roc": roc}, out_dir / ROC_FILE),
        "pr": write_json({"pr": pr}, out_dir / PR_FILE),
        "reliability": write_json({"reliability": reliability}, out_dir / RELIABILITY_FILE),
        "confusion_png": save_figure(confusion_figure(confusion_matrix, label_names, f"{split} confusion matrix"),
                                     extra_dir / CONFUSION_PNG),
    }
    roc_per_class = pr_per_class = None
    if len(label_names) > 2:
        roc_per_class = roc_points(probabilities, labels, label_names, per_class=True)
        pr_per_class = pr_points(probabilities, labels, label_names, per_class=True)
        paths["roc_per_class"] = write_json({"roc": roc_per_class}, extra_dir / ROC_PER_CLASS_FILE)
        paths["pr_per_class"] = write_json({"pr": pr_per_class}, extra_dir / PR_PER_CLASS_FILE)
    paths["roc_png"] = save_figure(curve_figure(_named_curves(roc, roc_per_class, label_names), "fpr", "tpr",
                                                f"{split} ROC curve", diagonal=True), extra_dir / ROC_PNG)
    paths["pr_png"] = save_figure(curve_figure(_named_curves(pr, pr_per_class, label_names), "recall",
                                               "precision", f"{split} precision-recall curve"), extra_dir / PR_PNG)
    paths["reliability_png"] = save_figure(curve_figure({reliability[0]["question"]: reliability} if reliability else {},
                                                        "confidence", "observed", f"{split} reliability diagram",
                                                        diagonal=True), extra_dir / RELIABILITY_PNG)
    return paths


def reliability_points(probabilities: Any, outcomes: Any, bins: int = RELIABILITY_BINS) -> list[dict[str, Any]]:
    """One point per non-empty equal-width bin: its range, mean probability (`confidence`), fraction
    of outcomes that happened (`observed`) and count. Bin i holds [i/bins, (i+1)/bins); 1.0 the last."""
    import numpy as np

    probabilities, outcomes = np.asarray(probabilities, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, probabilities, side="right") - 1, 0, bins - 1)
    points = []
    for number in range(bins):
        inside = index == number
        if not inside.any():
            continue
        points.append({"bin": number, "lower": round(float(edges[number]), DIGITS),
                       "upper": round(float(edges[number + 1]), DIGITS),
                       "confidence": round(float(probabilities[inside].mean()), DIGITS),
                       "observed": round(float(outcomes[inside].mean()), DIGITS), "count": int(inside.sum())})
    return points


def single_label_reliability(probabilities: Any, labels: Any, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """The reliability points of a one-label-per-row model (see the module docstring), tagged by `question`."""
    probabilities, labels = torch.as_tensor(probabilities).float(), torch.as_tensor(labels)
    if len(label_names) == 2:
        question, confidence, outcome = label_names[1], probabilities[:, 1], labels == 1
    else:
        confidence, predicted = probabilities.max(dim=-1)
        question, outcome = TOP_LABEL, predicted == labels
    return [{**point, "question": question}
            for point in reliability_points(confidence.numpy(), outcome.numpy())]
