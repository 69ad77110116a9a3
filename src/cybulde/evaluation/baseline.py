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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion

from cybulde.errors import CybuldeError
from cybulde.evaluation.metrics import compute_metrics, round_floats
from cybulde.evaluation.plots import PR_FILE, ROC_FILE, pr_points, roc_points
from cybulde.files import write_json
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


def load_baseline_data(data_dir: str | Path) -> BaselineData:
    """Label names and the cleaned texts and labels of every split of a fetched dataset version."""
    data_dir = Path(data_dir)
    try:
        manifest = Manifest.load(data_dir)
    except DataError as error:
        raise BaselineError(f"{error} (run the `fetch` stage first)") from error
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


def choose_c(train_features: spmatrix, train_labels: np.ndarray, validation_features: spmatrix,
             validation: LabeledTexts, label_names: Sequence[str], grid: Sequence[float],
             class_weight: str | None) -> tuple[float, Any, dict[float, float]]:
    """The C with the best validation macro-F1 (the smaller C on a tie) and its classifier."""
    best: tuple[float, float, Any] | None = None
    scores: dict[float, float] = {}
    for c in sorted(grid):
        classifier = fit_classifier(train_features, train_labels, c, class_weight)
        probabilities = full_probabilities(classifier, validation_features, len(label_names))
        score = split_metrics(probabilities, validation.labels, label_names)["macro_f1"]
        scores[c] = score
        if best is None or score > best[1]:
            best = (c, score, classifier)
    if best is None:
        raise BaselineError("the C grid is empty: give at least one value")
    return best[0], best[2], scores


def run_baseline(data_dir: str | Path, grid: Sequence[float] = C_GRID,
                 class_weight: str | None = CLASS_WEIGHT, min_df: int = MIN_DF,
                 plots_dir: Path | None = None) -> dict[str, Any]:
    """Fit on train, choose C on validation, score validation and test; the metrics report.
    With `plots_dir`, also the ROC and PR curves of each split into `<plots_dir>/<split>/`."""
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
