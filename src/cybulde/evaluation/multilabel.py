"""Evaluation of a multi-label (multi-source) model: one yes/no question per label name, answered by
some sources and missing (-1) for the others.

Every number is computed on the *present* cells of a question only (the rows whose source answers it).
A source answers a question when its rows hold both yes and no answers to it: OLID's rows never say
yes to `hate` and HatEval's never no to `abusive`, so those cells take no part in the per-source
numbers (a macro-F1 without one of its two classes is capped at 0.5, whatever the model does).
- per source x question: `macro_f1` (binary, the mean of the yes and no classes' F1) and `f1_yes` at
  that source's threshold, `roc_auc` (None with only one class present), `threshold`, `yes`, `no`;
  the threshold of a source is tuned on its own validation rows (`cybulde.evaluation.thresholds`);
- per question: the *serving* threshold, tuned on every validation row that answers it (what
  `predict` and the served model apply, and what the predictions parquet decides by), and the
  question's metrics over all sources' present cells at it, with its expected calibration error;
- a cross-source matrix per question: `cross_source[question][A][B]` is the macro-F1 on source B's
  rows of the split at the threshold tuned on source A's validation rows.

In each source's own labels: the answers read back in the labels the source was published with
(`cybulde.evaluation.own_labels`; Davidson's three classes, OLID's offensive/not) and scored with
their macro-F1, the number comparable with a model trained on that source alone.

Headline (`metrics/<split>.json`): `macro_f1` and `roc_auc` are the mean over sources of each
source's mean over the questions it answers; `own_labels_macro_f1/<source>` the macro-F1 in each
source's own labels; `ece/<question>` the expected calibration error (15
equal-width bins over [0, 1], torchmetrics' `binary_calibration_error`); `threshold/<question>` the
serving thresholds; `loss` (masked binary cross-entropy) and `num_examples`.

Metric values come from torchmetrics; this module only selects the cells and averages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_calibration_error,
    binary_f1_score,
    multiclass_f1_score,
)

from cybulde.evaluation.own_labels import own_labels
from cybulde.evaluation.plots import (
    CONFUSION_FILE,
    PR_FILE,
    RELIABILITY_BINS,
    RELIABILITY_FILE,
    ROC_FILE,
    pr_points,
    reliability_points,
    roc_points,
)
from cybulde.evaluation.thresholds import tune_threshold
from cybulde.files import write_json
from cybulde.models.heads import MISSING
from cybulde.serving.columns import (
    question_prediction_column,
    question_probability_column,
    question_threshold_key,
)

ECE_BINS = RELIABILITY_BINS
DIGITS = 6
LABEL_SUFFIX = "_label"
RELIABILITY_KEY = "reliability"
OWN_LABELS_KEY = "own_labels_macro_f1"


@dataclass
class MultiLabelSplit:
    """A multi-label split's rows and the model's answers, in row order."""
    ids: list[str]
    sources: list[str]  # each row's source name
    questions: list[str]
    labels: np.ndarray  # [N, Q] int: 1, 0 or MISSING
    probabilities: np.ndarray  # [N, Q] float64, one sigmoid per question
    loss: float = 0.0

    def cells(self, question: str, source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, 0/1 labels) of the present cells of `question` (of `source`'s rows only, if given)."""
        column = self.questions.index(question)
        present = self.labels[:, column] != MISSING
        if source is not None:
            present &= np.asarray(self.sources) == source
        return self.probabilities[present, column], self.labels[present, column].astype(np.int64)

    def answered(self, source: str) -> list[str]:
        """The questions `source` answers in this split, in question order: those its rows answer both
        yes and no. A question a source only ever answers one way (OLID's hate: never yes) has no F1 of
        the other answer, so it would cap the source's macro-F1 at 0.5 whatever the model does."""
        answered = []
        for question in self.questions:
            _, labels = self.cells(question, source)
            if 0 < int(labels.sum()) < labels.size:
                answered.append(question)
        return answered


def label_column(question: str) -> str:
    return f"{question}{LABEL_SUFFIX}"


# -- metric values (torchmetrics) -------------------------------------------------------------------------
def binary_macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean of the F1 of "no" and of "yes" (a class that is neither present nor predicted counts 0)."""
    per_class = multiclass_f1_score(torch.as_tensor(predictions), torch.as_tensor(labels), num_classes=2,
                                    average="none", zero_division=0)
    return float(per_class.double().mean())


def f1_of_yes(predictions: np.ndarray, labels: np.ndarray) -> float:

    return float(binary_f1_score(torch.as_tensor(predictions), torch.as_tensor(labels), zero_division=0))


def roc_auc_of(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC-AUC of the yes probability; None unless both answers are present."""
    if not 0 < int(labels.sum()) < labels.size:
        return None
    return float(binary_auroc(torch.as_tensor(probabilities), torch.as_tensor(labels)))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """sum over equal-width bins of |fraction of yes - mean probability| x the bin's share of cells."""
    if labels.size == 0:
        return None
    return float(binary_calibration_error(torch.as_tensor(probabilities, dtype=torch.float64),
                                          torch.as_tensor(labels), n_bins=bins, norm="l1"))


def cell_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """macro_f1, f1_yes, roc_auc, threshold, yes and no counts of one set of present cells."""
    predictions = (probabilities >= threshold).astype(np.int64)
    return {"macro_f1": binary_macro_f1(predictions, labels), "f1_yes": f1_of_yes(predictions, labels),
            "roc_auc": roc_auc_of(probabilities, labels), "threshold": float(threshold),
            "yes": int(labels.sum()), "no": int(labels.size - labels.sum())}


# -- thresholds ---------------------------------------------------------------------------------------
def source_thresholds(validation: MultiLabelSplit, source_names: Sequence[str],
                      fixed: float | None = None) -> dict[str, dict[str, float]]:
    """{source: {question: threshold}} tuned on each source's validation cells (or `fixed` for all)."""
    return {source: {question: fixed if fixed is not None else tune_threshold(*validation.cells(question, source))
                     for question in validation.answered(source)}
            for source in source_names}


def serving_thresholds(validation: MultiLabelSplit, fixed: float | None = None) -> dict[str, float]:
    """{question: threshold} tuned on all validation cells that answer it (0.5 for a question none answers)."""
    thresholds = {}
    for question in validation.questions:
        probabilities, labels = validation.cells(question)
        thresholds[question] = fixed if fixed is not None else (
            tune_threshold(probabilities, labels) if labels.size else 0.5)
    return thresholds


def tune_thresholds(validation: MultiLabelSplit, source_names: Sequence[str],
                    fixed: float | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(serving thresholds, per-source thresholds) tuned on `validation` (or `fixed` for all): the pair
    `recorded_thresholds` reads back for the test split."""
    return serving_thresholds(validation, fixed), source_thresholds(validation, source_names, fixed)


def recorded_thresholds(validation_metrics: Mapping[str, Any], validation_detail: Mapping[str, Any],
                        questions: Sequence[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(serving thresholds, per-source thresholds) that `validate` recorded, for the test split.

    Raises KeyError naming what is missing."""
    serving = {question: float(validation_metrics[question_threshold_key(question)]) for question in questions}
    by_source = {source: {question: float(values["threshold"]) for question, values in answers.items()}
                 for source, answers in validation_detail["sources"].items()}
    return serving, by_source


# -- the report ---------------------------------------------------------------------------------------------
def per_source_metrics(split: MultiLabelSplit, source_names: Sequence[str],
                       thresholds: Mapping[str, Mapping[str, float]],
                       fallback: Mapping[str, float]) -> dict[str, dict[str, dict[str, Any]]]:
    """{source: {question: cell_metrics}} over the questions each source answers in `split`; a question a
    source has no validation threshold for uses the question's serving threshold (`fallback`)."""
    return {source: {question: cell_metrics(*split.cells(question, source),
                                            thresholds.get(source, {}).get(question, fallback[question]))
                     for question in split.answered(source)}
            for source in source_names}


def per_question_metrics(split: MultiLabelSplit, serving: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """{question: cell_metrics over every source's present cells at the serving threshold, plus ece}."""
    report = {}
    for question in split.questions:
        probabilities, labels = split.cells(question)
        if not labels.size:
            continue
        report[question] = {**cell_metrics(probabilities, labels, serving[question]),
                            "ece": expected_calibration_error(probabilities, labels)}
    return report


def cross_source_matrix(split: MultiLabelSplit, source_names: Sequence[str],
                        thresholds: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """{question: {A: {B: macro-F1 on B's cells at A's validation threshold}}} over the sources answering it."""
    matrix: dict[str, dict[str, dict[str, float]]] = {}
    for question in split.questions:
        tuned_on = [source for source in source_names if question in thresholds.get(source, {})]
        applied_to = [source for source in source_names if question in split.answered(source)]
        if not tuned_on or not applied_to:
            continue
        matrix[question] = {}
        for source_a in tuned_on:
            cut = thresholds[source_a][question]
            matrix[question][source_a] = {}
            for source_b in applied_to:
                probabilities, labels = split.cells(question, source_b)
                matrix[question][source_a][source_b] = binary_macro_f1((probabilities >= cut).astype(np.int64), labels)
    return matrix


def own_label_metrics(split: MultiLabelSplit, thresholds: Mapping[str, Mapping[str, float]],
                      fallback: Mapping[str, float], label_map: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{source: {"macro_f1", "f1": {label: F1}}}: the answers read back in each source's own labels
    (`cybulde.evaluation.own_labels`), the number to set beside a model trained on that source alone.
    A row's answers are decided at its source's thresholds (the serving one where it has none)."""
    report = {}
    implies = label_map.get("implies") or {}
    for source, entry in label_map["sources"].items():
        rows = np.asarray(split.sources) == source
        names = list(entry.get("labels") or {})
        if not rows.any() or not names:
            continue
        cuts = np.array([thresholds.get(source, {}).get(q, fallback[q]) for q in split.questions])
        decided = (split.probabilities[rows] >= cuts[None, :]).astype(np.int64)
        predicted = own_labels(decided, split.questions, entry["labels"], implies)
        truth = own_labels(split.labels[rows], split.questions, entry["labels"], implies)
        per_label = multiclass_f1_score(torch.as_tensor(predicted), torch.as_tensor(truth), num_classes=len(names),
                                        average="none", zero_division=0).double()
        report[source] = {"macro_f1": float(per_label.mean()),
                          "f1": {name: float(value) for name, value in zip(names, per_label.tolist(), strict=True)}}
    return report


def mean_over_sources(per_source: Mapping[str, Mapping[str, Mapping[str, Any]]], key: str) -> float | None:
    """Mean over sources of each source's mean of `key` over its questions (None values left out)."""
    source_means = []
    for answers in per_source.values():
        values = [float(metrics[key]) for metrics in answers.values() if metrics.get(key) is not None]
        if values:
            source_means.append(sum(values) / len(values))
    return sum(source_means) / len(source_means) if source_means else None


def headline(split: MultiLabelSplit, per_source: Mapping[str, Any], per_question: Mapping[str, Any],
             serving: Mapping[str, float], own: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """What metrics/<split>.json holds for a multi-label model (see the module docstring)."""
    report: dict[str, Any] = {"loss": split.loss, "macro_f1": mean_over_sources(per_source, "macro_f1"),
                              "roc_auc": mean_over_sources(per_source, "roc_auc"), "num_examples": len(split.ids)}
    for source, metrics in (own or {}).items():
        report[f"{OWN_LABELS_KEY}/{source}"] = metrics["macro_f1"]
    for question in split.questions:
        report[f"ece/{question}"] = (per_question.get(question) or {}).get("ece")
        report[question_threshold_key(question)] = float(serving[question])
    return report


def split_report(split: MultiLabelSplit, source_names: Sequence[str], serving: Mapping[str, float],
                 by_source: Mapping[str, Mapping[str, float]],
                 label_map: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline, detail) of `split` at the given thresholds: what metrics/<split>.json holds, and the detail
    beside it (`sources`: per source x question, `questions`: per question, `own_labels`: each source in
    its own labels where `label_map` (the manifest's) is given, `cross_source`); not rounded."""
    per_source = per_source_metrics(split, source_names, by_source, serving)
    per_question = per_question_metrics(split, serving)
    own = own_label_metrics(split, by_source, serving, label_map) if label_map else {}
    detail = {"sources": per_source, "questions": per_question, "own_labels": own,
              "cross_source": cross_source_matrix(split, source_names, by_source)}
    return headline(split, per_source, per_question, serving, own), detail


# -- files ----------------------------------------------------------------------------------------------------
def write_curve_plots(out_dir: Path, split: MultiLabelSplit) -> dict[str, Path]:
    """roc.json and pr.json: one curve per question over its answered cells, each point naming its `question`."""
    roc, pr = [], []
    for question in split.questions:
        probabilities, labels = split.cells(question)
        two_columns = np.stack([1.0 - probabilities, probabilities], axis=1)
        roc += [{**point, "question": question} for point in roc_points(two_columns, labels, ["no", "yes"])]
        pr += [{**point, "question": question} for point in pr_points(two_columns, labels, ["no", "yes"])]
    return {"roc": write_json({"roc": roc}, Path(out_dir) / ROC_FILE),
            "pr": write_json({"pr": pr}, Path(out_dir) / PR_FILE)}


def write_reliability_plot(out_dir: Path, split: MultiLabelSplit) -> Path:
    """reliability.json: every question's points, each tagged with its `question` (x: confidence, y: observed)."""
    points = [{**point, "question": question} for question in split.questions
              for point in reliability_points(*split.cells(question))]
    return write_json({RELIABILITY_KEY: points}, Path(out_dir) / RELIABILITY_FILE)


def write_confusion_plot(out_dir: Path, split: MultiLabelSplit, serving: Mapping[str, float]) -> Path:
    """confusion.json: one row per answered cell, `actual` and `predicted` as "<question>: yes|no"
    (at the question's serving threshold), so each question is a 2x2 block of DVC's confusion plot."""
    rows = []
    for question in split.questions:
        probabilities, labels = split.cells(question)
        for truth, decided in zip(labels.tolist(), (probabilities >= serving[question]).tolist(), strict=True):
            rows.append({"actual": f"{question}: {'yes' if truth else 'no'}",
                         "predicted": f"{question}: {'yes' if decided else 'no'}"})
    return write_json(rows, Path(out_dir) / CONFUSION_FILE)


def write_predictions(path: Path, split: MultiLabelSplit, serving: Mapping[str, float]) -> Path:
    """`id`, `source`, then per question `<q>_label` (-1 missing), `<q>_probability`, `<q>_prediction`
    (at the question's serving threshold)."""
    columns: dict[str, Any] = {"id": pa.array(split.ids, pa.string()), "source": pa.array(split.sources, pa.string())}
    rounded = split.probabilities.round(DIGITS)
    for index, question in enumerate(split.questions):
        columns[label_column(question)] = pa.array(split.labels[:, index].astype(np.int8), pa.int8())
        columns[question_probability_column(question)] = pa.array(rounded[:, index], pa.float64())
        decided = (split.probabilities[:, index] >= serving[question]).astype(np.int8)
        columns[question_prediction_column(question)] = pa.array(decided, pa.int8())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path
