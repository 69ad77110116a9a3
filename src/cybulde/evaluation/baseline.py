"""The simple baseline every detector is compared with: TF-IDF n-grams + logistic regression.

Features: word 1-3 grams and character 2-5 grams (within word boundaries), sublinear tf, each
vocabulary limited to n-grams seen in at least `MIN_DF` training texts. The classifier is a
logistic regression (liblinear; one-vs-rest for more than two labels) whose inverse
regularisation strength C is picked from `C_GRID` by validation macro-F1 only; the test split is
scored once, with that C.

Texts are the `text` column of a fetched dataset version, cleaned with the same `clean_text` the
tokenizer input gets, and the metrics come from the project's `compute_metrics`, so the numbers
are directly comparable with `metrics/validation.json` and `metrics/test.json`.

Outputs: `metrics/baseline/validation.json` and `metrics/baseline/test.json` hold the same headline
keys as the model's metrics files (so `dvc metrics show` lines them up in the same columns);
`metrics/baseline/details.json` holds the rest: dataset, the chosen C and its sweep, class weights,
feature count and the per-class numbers of both splits. `plots/baseline/<split>/roc.json` and `pr.json`
hold its curves in the model's format, which `dvc plots show` draws beside the model's.

A multi-label version (`task: multilabel`: each row has a `source` and one answer per question, 1, 0
or -1 = missing) gets the same features, fitted on all train texts, and one binary logistic regression
per question, fitted only on the train rows that answer it (a missing cell trains nothing). C is
picked by the validation headline of `cybulde.evaluation.multilabel` (the mean over sources of each
source's mean binary macro-F1 over its questions, at thresholds tuned on validation per source and
question exactly as `validate` tunes a model's); the test split is scored once, at those validation
thresholds. Both splits are scored by the functions that score the model (`multilabel.split_report`),
so metrics/baseline/<split>.json has the keys of the model's metrics/<split>.json, and details.json
holds each split's detail (`per_class`: sources, questions, cross_source, as in the model's
metrics/<split>_per_class.json) and the train rows of each question's regression (`train_rows`); the
curves have one series per question, each point naming its `question`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion

from cybulde.errors import CybuldeError
from cybulde.evaluation import multilabel
from cybulde.evaluation.metrics import compute_metrics, round_floats
from cybulde.evaluation.plots import PR_FILE, ROC_FILE, pr_points, roc_points
from cybulde.files import write_json
from cybulde.models.heads import MISSING
from cybulde.registry.errors import DataError
from cybulde.registry.manifest import Manifest
from cybulde.registry.splits import read_split_columns
from cybulde.text.cleaning import clean_texts

if TYPE_CHECKING:
    from scipy.sparse import spmatrix

C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MIN_DF = 2
WORD_NGRAMS = (1, 3)
CHAR_NGRAMS = (2, 5)
CLASS_WEIGHT: str | None = "balanced"
RANDOM_STATE = 1234
MAX_ITER = 2000
DIGITS = 6
METRICS_DIR = Path("metrics") / "baseline"
PLOTS_DIR = Path("plots") / "baseline"
DETAILS_FILE = "details.json"
SPLITS = ("validation", "test")


class BaselineError(CybuldeError, RuntimeError):
    """The baseline cannot run: missing or unusable data."""


@dataclass
class LabeledTexts:
    texts: list[str]
    labels: np.ndarray


@dataclass
class BaselineData:
    dataset: str
    version: str
    label_names: list[str]
    splits: dict[str, LabeledTexts]


def load_manifest(data_dir: str | Path) -> Manifest:
    try:
        return Manifest.load(data_dir)
    except DataError as error:
        raise BaselineError(f"{error} (run the `fetch` stage first)") from error


def load_baseline_data(data_dir: str | Path) -> BaselineData:
    """Label names and the cleaned texts and labels of every split of a fetched dataset version."""
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    return BaselineData(dataset=manifest.dataset, version=manifest.version,
                        label_names=[str(name) for name in manifest.label_names],
                        splits={split: read_split(data_dir, split) for split in ("train", "validation", "test")})


def read_split(data_dir: Path, split: str) -> LabeledTexts:
    rows = read_split_columns(data_dir, split, columns=("text", "label"))
    return LabeledTexts(texts=clean_texts(rows["text"]), labels=np.asarray(rows["label"], dtype=np.int64))


def make_vectorizer(min_df: int = MIN_DF) -> Any:
    """Word 1-3 grams and char 2-5 grams side by side, each TF-IDF weighted with sublinear tf."""
    common = {"sublinear_tf": True, "min_df": min_df, "lowercase": True, "dtype": np.float64}
    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS,
                                 token_pattern=r"(?u)\b\w+\b", **common)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **common)),
    ])


def fit_classifier(features: spmatrix, labels: np.ndarray, c: float,
                   class_weight: str | None) -> Any:
    classifier = LogisticRegression(C=c, class_weight=class_weight, max_iter=MAX_ITER,
                                    solver="liblinear", random_state=RANDOM_STATE)
    if len(set(labels.tolist())) > 2:
        # liblinear fits one binary problem per class; far faster than a multinomial lbfgs
        # fit on a few hundred thousand sparse features.
        classifier = OneVsRestClassifier(classifier)
    return classifier.fit(features, labels)


def full_probabilities(classifier: Any, features: spmatrix,
                       num_labels: int) -> np.ndarray:
    """`[N, K]` probabilities with one column per label, also for labels unseen in training."""
    known = classifier.predict_proba(features)
    probabilities = np.zeros((features.shape[0], num_labels), dtype=np.float64)
    probabilities[:, classifier.classes_] = known
    return probabilities


def split_metrics(probabilities: np.ndarray, labels: np.ndarray,
                  label_names: Sequence[str]) -> dict[str, Any]:
    """The keys of metrics/<split>.json; `loss` is the mean negative log-likelihood."""
    predictions = probabilities.argmax(axis=1)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    metrics = compute_metrics(probabilities, predictions, labels, float(-np.log(picked).mean()),
                              label_names)
    return {
        "loss": metrics["loss"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "roc_auc": metrics["roc_auc"],
        "threshold": None,
        "per_class": metrics["per_class"],
        "num_examples": len(labels),
    }


def best_of_grid(grid: Sequence[float], fit_and_score: Callable[[float], tuple[Any, float]],
                 ) -> tuple[float, Any, dict[float, float]]:
    """The C whose fit scores best on validation (the smaller C on a tie), that fit, and every C's score."""
    best: tuple[float, float, Any] | None = None
    scores: dict[float, float] = {}
    for c in sorted(grid):
        fitted, score = fit_and_score(c)
        scores[c] = score
        if best is None or score > best[1]:
            best = (c, score, fitted)
    if best is None:
        raise BaselineError("the C grid is empty: give at least one value")
    return best[0], best[2], scores


def choose_c(train_features: spmatrix, train_labels: np.ndarray, validation_features: spmatrix,
             validation: LabeledTexts, label_names: Sequence[str], grid: Sequence[float],
             class_weight: str | None) -> tuple[float, Any, dict[float, float]]:
    """The C with the best validation macro-F1 (the smaller C on a tie) and its classifier."""

    def fit_and_score(c: float) -> tuple[Any, float]:
        classifier = fit_classifier(train_features, train_labels, c, class_weight)
        probabilities = full_probabilities(classifier, validation_features, len(label_names))
        return classifier, split_metrics(probabilities, validation.labels, label_names)["macro_f1"]

    return best_of_grid(grid, fit_and_score)


def run_baseline(data_dir: str | Path, grid: Sequence[float] = C_GRID,
                 class_weight: str | None = CLASS_WEIGHT, min_df: int = MIN_DF,
                 plots_dir: Path | None = None) -> dict[str, Any]:
    """Fit on train, choose C on validation, score validation and test; the metrics report.
    With `plots_dir`, also the ROC and PR curves of each split into `<plots_dir>/<split>/`.
    A multi-label version: `fit_multilabel_baseline` and `multilabel_baseline_report`."""
    if load_manifest(data_dir).is_multilabel:
        return multilabel_baseline_report(fit_multilabel_baseline(data_dir, grid, class_weight, min_df), plots_dir)
    data = load_baseline_data(data_dir)
    vectorizer = make_vectorizer(min_df)
    train = data.splits["train"]
    train_features = vectorizer.fit_transform(train.texts)
    validation = data.splits["validation"]
    validation_features = vectorizer.transform(validation.texts)
    c, classifier, scores = choose_c(train_features, train.labels, validation_features, validation,
                                     data.label_names, grid, class_weight)
    report: dict[str, Any] = {
        "dataset": data.dataset,
        "version": data.version,
        "C": float(c),
        "class_weight": class_weight,
        "validation_macro_f1_by_C": {str(float(key)): value for key, value in scores.items()},
        "num_features": int(train_features.shape[1]),
    }
    for split, features in (("validation", validation_features),
                            ("test", vectorizer.transform(data.splits["test"].texts))):
        probabilities = full_probabilities(classifier, features, len(data.label_names))
        report[split] = split_metrics(probabilities, data.splits[split].labels, data.label_names)
        if plots_dir is not None:
            write_curves(plots_dir / split, probabilities, data.splits[split].labels, data.label_names)
    return round_floats(report, DIGITS)


# -- multi-label versions -------------------------------------------------------------------------------
@dataclass
class MultiLabelTexts:
    """One split of a multi-label version: the cleaned texts, each row's id and source, and its answers."""

    ids: list[str]
    texts: list[str]
    sources: list[str]
    labels: np.ndarray  # [N, Q] int: 1, 0 or MISSING


@dataclass
class MultiLabelBaseline:
    """The multi-label baseline at its chosen C, and its answers to the validation and test rows."""

    dataset: str
    version: str
    source_names: list[str]
    c: float
    class_weight: str | None
    validation_macro_f1_by_c: dict[float, float]
    num_features: int
    train_rows: dict[str, int]  # question -> the train rows that answer it (its regression's rows)
    splits: dict[str, multilabel.MultiLabelSplit]  # validation and test, with each question's yes probability
    label_map: dict[str, Any] | None = None  # the manifest's: scores each source in its own labels too


def read_multilabel_split(data_dir: Path, split: str, num_questions: int) -> MultiLabelTexts:
    rows = read_split_columns(data_dir, split, columns=("id", "text", "source", "labels"))
    labels = np.asarray(rows["labels"], dtype=np.int64).reshape(len(rows["id"]), num_questions)
    return MultiLabelTexts(ids=[str(value) for value in rows["id"]], texts=clean_texts(rows["text"]),
                           sources=[str(value) for value in rows["source"]], labels=labels)


def fit_question_regression(features: spmatrix, answers: np.ndarray, question: str, c: float,
                            class_weight: str | None) -> Any:
    """A binary logistic regression of one question on the rows that answer it (MISSING rows left out)."""
    present = np.flatnonzero(answers != MISSING)
    if np.unique(answers[present]).size < 2:
        raise BaselineError(f"question {question!r}: the {present.size} train rows that answer it do not hold "
                            f"both answers, so no regression can be fitted for it")
    return fit_classifier(features[present], answers[present], c, class_weight)


def fit_question_regressions(features: spmatrix, labels: np.ndarray, questions: Sequence[str], c: float,
                             class_weight: str | None) -> list[Any]:
    return [fit_question_regression(features, labels[:, index], question, c, class_weight)
            for index, question in enumerate(questions)]


def yes_probabilities(regressions: Sequence[Any], features: spmatrix) -> np.ndarray:
    """`[N, Q]`: each question's probability of yes, from its own regression."""
    return np.stack([full_probabilities(regression, features, 2)[:, 1] for regression in regressions], axis=1)


def masked_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the present cells' answers (0 with none present)."""
    present = labels != MISSING
    if not present.any():
        return 0.0
    picked = np.where(labels == 1, probabilities, 1.0 - probabilities)[present]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def answered_split(rows: MultiLabelTexts, questions: Sequence[str],
                   probabilities: np.ndarray) -> multilabel.MultiLabelSplit:
    """The rows and the baseline's answers, in the form the model's evaluation scores."""
    return multilabel.MultiLabelSplit(ids=rows.ids, sources=rows.sources, questions=list(questions),
                                      labels=rows.labels, probabilities=probabilities,
                                      loss=masked_log_loss(probabilities, rows.labels))


def validation_headline(validation: multilabel.MultiLabelSplit, source_names: Sequence[str]) -> float:
    """The validation macro-F1 headline at thresholds tuned on validation, as `validate` reports a model's."""
    serving, by_source = multilabel.tune_thresholds(validation, source_names)
    score = multilabel.mean_over_sources(
        multilabel.per_source_metrics(validation, source_names, by_source, serving), "macro_f1")
    if score is None:
        raise BaselineError("no validation row answers any question: there is nothing to choose C by")
    return score


def fit_multilabel_baseline(data_dir: str | Path, grid: Sequence[float] = C_GRID,
                            class_weight: str | None = CLASS_WEIGHT, min_df: int = MIN_DF) -> MultiLabelBaseline:
    """One feature union fitted on the train texts, one regression per question for each C of `grid`; the C
    with the best validation headline (the smaller C on a tie) answers the validation and test rows."""
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    questions = [str(name) for name in manifest.label_names]
    sources = list(manifest.source_names or [])
    rows = {split: read_multilabel_split(data_dir, split, len(questions)) for split in ("train", *SPLITS)}
    vectorizer = make_vectorizer(min_df)
    train_features = vectorizer.fit_transform(rows["train"].texts)
    features = {split: vectorizer.transform(rows[split].texts) for split in SPLITS}

    def fit_and_score(c: float) -> tuple[Any, float]:
        regressions = fit_question_regressions(train_features, rows["train"].labels, questions, c, class_weight)
        validation = answered_split(rows["validation"], questions, yes_probabilities(regressions, features["validation"]))
        return regressions, validation_headline(validation, sources)

    c, regressions, scores = best_of_grid(grid, fit_and_score)
    return MultiLabelBaseline(
        dataset=manifest.dataset, version=manifest.version, source_names=sources, c=c, class_weight=class_weight,
        validation_macro_f1_by_c=scores, num_features=int(train_features.shape[1]),
        train_rows={question: int((rows["train"].labels[:, index] != MISSING).sum())
                    for index, question in enumerate(questions)},
        splits={split: answered_split(rows[split], questions, yes_probabilities(regressions, features[split]))
                for split in SPLITS},
        label_map=manifest.label_map)


def multilabel_baseline_report(fitted: MultiLabelBaseline, plots_dir: Path | None = None) -> dict[str, Any]:
    """`run_baseline`'s report of a multi-label version: thresholds tuned on validation (per source and question,
    and one serving threshold per question), applied to both splits and scored as `evaluate_multilabel` scores
    a model; each split's detail under `per_class`. With `plots_dir`, each split's roc.json and pr.json."""
    serving, by_source = multilabel.tune_thresholds(fitted.splits["validation"], fitted.source_names)
    report: dict[str, Any] = {
        "dataset": fitted.dataset,
        "version": fitted.version,
        "C": float(fitted.c),
        "class_weight": fitted.class_weight,
        "validation_macro_f1_by_C": {str(float(key)): value for key, value in fitted.validation_macro_f1_by_c.items()},
        "num_features": fitted.num_features,
        "train_rows": fitted.train_rows,
    }
    for split in SPLITS:
        scores, detail = multilabel.split_report(fitted.splits[split], fitted.source_names, serving, by_source,
                                                 fitted.label_map)
        report[split] = {**scores, "per_class": detail}
        if plots_dir is not None:
            multilabel.write_curve_plots(plots_dir / split, fitted.splits[split])
    return round_floats(report, DIGITS)


# -- files ----------------------------------------------------------------------------------------------
def write_curves(folder: Path, probabilities: np.ndarray, labels: np.ndarray,
                 label_names: Sequence[str]) -> None:
    """roc.json and pr.json of one split, written like the model's (plots/<split>/)."""
    write_json({"roc": roc_points(probabilities, labels, label_names)}, folder / ROC_FILE)
    write_json({"pr": pr_points(probabilities, labels, label_names)}, folder / PR_FILE)


def split_report(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`run_baseline`'s report as the files it is written to: `{"validation.json": ..., "details.json": ...}`."""
    details = {key: value for key, value in report.items() if key not in SPLITS}
    details["per_class"] = {split: report[split]["per_class"] for split in SPLITS}
    files = {f"{split}.json": {key: value for key, value in report[split].items() if key != "per_class"}
             for split in SPLITS}
    return {**files, DETAILS_FILE: details}


def join_report(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The inverse of `split_report`: one object as `run_baseline` returns it (and results/ records hold it)."""
    details = dict(files[DETAILS_FILE])
    per_class = details.pop("per_class", {})
    return {**details, **{split: {**files[f"{split}.json"], "per_class": per_class.get(split, {})}
                          for split in SPLITS}}


def write_baseline(data_dir: str | Path, root: str | Path | None = None,
                   **options: Any) -> tuple[dict[str, Any], Path]:
    """`run_baseline` and write its report to `<root>/metrics/baseline/` (keys sorted) and its curves to
    `<root>/plots/baseline/`; returns the report and the metrics folder."""
    root = Path(root) if root is not None else Path.cwd()
    report = run_baseline(data_dir, plots_dir=root / PLOTS_DIR, **options)
    folder = root / METRICS_DIR
    for name, content in split_report(report).items():
        write_json(content, folder / name)
    return report, folder
