"""The TF-IDF + logistic regression baseline on a tiny multi-label, multi-source version, checked
against plain sklearn on the baseline's own probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.sparse import csr_matrix
from sklearn.metrics import f1_score, roc_auc_score

from cybulde.evaluation import baseline
from cybulde.evaluation.baseline import (
    BaselineError,
    fit_multilabel_baseline,
    fit_question_regression,
    join_report,
    masked_log_loss,
    multilabel_baseline_report,
    write_baseline,
)
from tests.helpers.tiny_data import QUESTIONS, SOURCE_ANSWERS, make_multilabel_data_dir

GRID = (0.25, 4.0)
SPLITS = ("validation", "test")
# The keys of a multi-label model's metrics/<split>.json.
HEADLINE_KEYS = {"loss", "macro_f1", "roc_auc", "num_examples", "ece/abusive", "ece/hate",
                 "threshold/abusive", "threshold/hate"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_multilabel_data_dir(tmp_path_factory.mktemp("multilabel") / "data")


@pytest.fixture(scope="module")
def fitted(data_dir: Path) -> baseline.MultiLabelBaseline:
    return fit_multilabel_baseline(data_dir, grid=GRID)


@pytest.fixture(scope="module")
def report(fitted: baseline.MultiLabelBaseline) -> dict:
    return multilabel_baseline_report(fitted)


def present_cells(split, source: str, question: str) -> tuple[np.ndarray, np.ndarray]:
    """(yes probabilities, 0/1 answers) of `source`'s rows that answer `question`, selected here by hand."""
    column = QUESTIONS.index(question)
    rows = [index for index, (row_source, answer) in enumerate(zip(split.sources, split.labels[:, column], strict=True))
            if row_source == source and answer != -1]
    return split.probabilities[rows, column], split.labels[rows, column]


def sklearn_cell(probabilities: np.ndarray, answers: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (probabilities >= threshold).astype(int)
    return {"macro_f1": f1_score(answers, predicted, average="macro", labels=[0, 1], zero_division=0),
            "f1_yes": f1_score(answers, predicted, pos_label=1, zero_division=0),
            "roc_auc": roc_auc_score(answers, probabilities)}


def test_per_source_metrics_agree_with_sklearn_on_the_baselines_probabilities(fitted, report) -> None:
    validation_thresholds = {source: {question: cell["threshold"] for question, cell in answers.items()}
                             for source, answers in report["validation"]["per_class"]["sources"].items()}
    for split in SPLITS:
        detail = report[split]["per_class"]["sources"]
        assert {source: sorted(answers) for source, answers in detail.items()} == {
            source: sorted(questions) for source, questions in SOURCE_ANSWERS.items()}
        source_means = {"macro_f1": [], "roc_auc": []}
        for source, questions in SOURCE_ANSWERS.items():
            expected_cells = {}
            for question in questions:
                probabilities, answers = present_cells(fitted.splits[split], source, question)
                threshold = validation_thresholds[source][question]  # test applies validation's thresholds
                cell = detail[source][question]
                assert cell["threshold"] == threshold
                assert (cell["yes"], cell["no"]) == (int(answers.sum()), int((answers == 0).sum()))
                expected_cells[question] = sklearn_cell(probabilities, answers, threshold)
                for key, value in expected_cells[question].items():
                    assert cell[key] == pytest.approx(value, abs=1e-6), (split, source, question, key)
            for key in source_means:
                source_means[key].append(np.mean([cell[key] for cell in expected_cells.values()]))
        for key, means in source_means.items():
            assert report[split][key] == pytest.approx(np.mean(means), abs=1e-6)


def test_the_thresholds_are_the_best_cut_of_each_sources_validation_cells(fitted, report) -> None:
    for source, questions in SOURCE_ANSWERS.items():
        for question in questions:
            probabilities, answers = present_cells(fitted.splits["validation"], source, question)
            best = max(f1_score(answers, (probabilities >= cut).astype(int), average="macro", labels=[0, 1],
                                zero_division=0) for cut in [*np.unique(probabilities), 1.1])
            chosen = report["validation"]["per_class"]["sources"][source][question]
            assert chosen["macro_f1"] == pytest.approx(best, abs=1e-6)


def test_the_headline_has_the_models_keys_and_c_is_the_best_validation_headline(report) -> None:
    for split in SPLITS:
        assert set(report[split]) - {"per_class"} == HEADLINE_KEYS
        assert report[split]["num_examples"] == 36
        assert set(report[split]["per_class"]) == {"sources", "questions", "own_labels", "cross_source"}
    sweep = report["validation_macro_f1_by_C"]
    assert set(sweep) == {str(c) for c in GRID}
    assert sweep[str(report["C"])] == report["validation"]["macro_f1"]
    assert report["C"] == min(c for c in GRID if sweep[str(c)] == max(sweep.values()))
    assert report["test"]["threshold/hate"] == report["validation"]["threshold/hate"]


def test_a_missing_cell_never_trains_a_regression(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, list[int]]] = []
    fit = baseline.fit_classifier

    def spy(features, labels, c, class_weight):
        seen.append((features.shape[0], labels.tolist()))
        return fit(features, labels, c, class_weight)

    monkeypatch.setattr(baseline, "fit_classifier", spy)
    fitted = fit_multilabel_baseline(data_dir, grid=(1.0,))
    train = pq.read_table(data_dir / "train.parquet").to_pylist()
    assert len(train) == 72 and len(seen) == len(QUESTIONS)  # one regression per question
    for question, (rows, labels) in zip(QUESTIONS, seen, strict=True):
        answering = [source for source, questions in SOURCE_ANSWERS.items() if question in questions]
        expected = [row["labels"][QUESTIONS.index(question)] for row in train if row["source"] in answering]
        assert rows == len(expected) == 48  # the source that does not answer it adds no row
        assert labels == expected and -1 not in labels
        assert fitted.train_rows[question] == rows


def test_a_question_whose_train_rows_hold_one_answer_is_refused() -> None:
    features = csr_matrix(np.eye(3))
    with pytest.raises(BaselineError, match="'hate'.*2 train rows"):
        fit_question_regression(features, np.array([1, -1, 1]), "hate", 1.0, None)


def test_the_loss_is_the_mean_log_loss_of_the_present_cells() -> None:
    probabilities = np.array([[0.8, 0.3], [0.4, 0.9]])
    labels = np.array([[1, -1], [0, 1]])
    assert masked_log_loss(probabilities, labels) == pytest.approx(
        -(math.log(0.8) + math.log(0.6) + math.log(0.9)) / 3)
    assert masked_log_loss(probabilities, np.full((2, 2), -1)) == 0.0


def test_writes_the_files_dvc_declares(data_dir: Path, tmp_path: Path) -> None:
    report, folder = write_baseline(data_dir, root=tmp_path, grid=GRID)
    names = ["details.json", "test.json", "validation.json"]
    assert sorted(path.name for path in folder.iterdir()) == names
    files = {name: json.loads((folder / name).read_text()) for name in names}
    for split in SPLITS:
        assert set(files[f"{split}.json"]) == HEADLINE_KEYS
    details = files["details.json"]
    assert details["train_rows"] == {"abusive": 48, "hate": 48}
    assert set(details["per_class"]) == set(SPLITS)
    assert {"C", "validation_macro_f1_by_C", "num_features", "dataset", "version"} <= set(details)
    assert join_report(files) == report
    for split in SPLITS:
        for curve in ("roc", "pr"):
            points = json.loads((tmp_path / "plots" / "baseline" / split / f"{curve}.json").read_text())[curve]
            assert {point["question"] for point in points} == set(QUESTIONS)
