"""The `validate` and `test` stages: evaluate the exported model on one split of the fetched data.

Outputs (paths relative to the project root, i.e. the stage's working directory):
- `metrics/<split>.json`: the headline numbers `dvc metrics show` / `dvc exp show` list (loss,
  accuracy, macro_f1, roc_auc, threshold, num_examples); `metrics/<split>_per_class.json`: precision,
  recall, f1 and support per label, a plain output kept out of those tables. Floats are rounded to 6
  decimals and keys sorted, so an unchanged model and data give identical bytes;
- `plots/<split>/`: confusion.json, roc.json, pr.json, reliability.json (DVC plots); their PNGs (confusion matrix,
  ROC and precision-recall curves) and per-class curves for more than two labels go to MLflow only;
- `predictions/<split>.parquet`: id, text, label, predicted, prob_<label name> per example.

A multi-label version (`task: multilabel`, a model with the multilabel head) is evaluated per source
and question instead (`cybulde.evaluation.multilabel`): metrics/<split>.json holds `loss`,
`macro_f1`, `roc_auc`, `ece/<question>`, `threshold/<question>` and `num_examples`;
metrics/<split>_per_class.json the detail (`sources`, `questions`, `cross_source`); plots/<split>/
the same four files (one series per question, each point with its `question`; the confusion matrix
holds each question's 2x2 block); predictions/<split>.parquet `id`, `source` and per question
`<q>_label`, `<q>_probability`, `<q>_prediction`. `validate` tunes the thresholds (per source and
question, and one serving threshold per question); `test` applies the ones it recorded.

A binary sigmoid head decides by threshold: `validate` tunes it (or takes the fixed
`evaluation.threshold`) and records it in metrics/validation.json; `test` applies that recorded
value unchanged. Both stages log the evaluation into the MLflow run that trained the model, inside
the stage the stage script opens (`stages/validate.py`, `stages/test.py`; what else `test` does is
there too). The model runs at the precision its training's `train.precision`
resolves to on this machine (`cybulde.models.export.inference_precision`), the rule `predict` and
the served model follow too.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cybulde.config.paths import MODEL_DIR, fetched_path
from cybulde.errors import CybuldeError
from cybulde.evaluation import multilabel
from cybulde.evaluation.inference import collect_outputs
from cybulde.evaluation.metrics import compute_metrics, flatten_for_logging, round_floats
from cybulde.evaluation.plots import curve_figure, reliability_points, save_figure, write_plots
from cybulde.evaluation.thresholds import parse_threshold, tune_threshold
from cybulde.files import write_json
from cybulde.loading.datamodule import TextDataModule
from cybulde.models.export import inference_precision, load_model
from cybulde.registry.manifest import Manifest
from cybulde.registry.splits import read_split_columns
from cybulde.serving.columns import probability_column
from cybulde.serving.scorer import accelerator_of, is_multilabel_config, pick_device

if TYPE_CHECKING:
    from cybulde.config.schema import Config
    from cybulde.models.export import LoadedModel
    from cybulde.models.heads import Head
    from cybulde.tracking.run import PipelineRun

log = logging.getLogger("cybulde.evaluation")

SPLITS = ("validation", "test")
METRICS_DIR = "metrics"
PLOTS_DIR = "plots"
PREDICTIONS_DIR = "predictions"
PER_CLASS_SUFFIX = "_per_class"
DIGITS = 6


class EvaluationError(CybuldeError, RuntimeError):
    """Evaluation cannot run: a missing model, split or recorded threshold, or mismatched data."""


@dataclass
class SplitEvaluation:
    split: str
    metrics: dict[str, Any]  # what metrics/<split>.json holds
    metrics_path: Path
    plot_paths: dict[str, Path]
    predictions_path: Path
    per_class: dict[str, Any] = field(default_factory=dict)  # what metrics/<split>_per_class.json holds
    per_class_path: Path | None = None
    multilabel: bool = False  # per-class detail nested by source and question


def metrics_file(split: str) -> str:
    """`metrics/<split>.json`, relative to the project root."""
    return f"{METRICS_DIR}/{split}.json"


def per_class_file(split: str) -> str:
    return f"{METRICS_DIR}/{split}{PER_CLASS_SUFFIX}.json"


def with_per_class(headline: dict[str, Any], per_class: dict[str, Any] | None) -> dict[str, Any]:
    """The headline metrics and the per-class detail in one object (how results/ records hold a split)."""
    return {**headline, "per_class": per_class or {}}


def exported_model_dir(root: Path) -> Path:
    """`model/` under the project folder `root`, which the `train` stage must have exported."""
    model_dir = root / MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise EvaluationError(f"no exported model in {model_dir}: run the `train` stage first")
    return model_dir


def evaluate_split(cfg: Config, split: str, *, run: PipelineRun, root: str | Path | None = None) -> dict[str, Any]:
    """Evaluate `model/` on `split` of `cfg.data.fetched_dir`, write the outputs, log them into `run`.

    `root` is the project folder the relative paths start from (default: the working directory);
    the caller opens the stage in `run`. Returns the content of metrics/<split>.json.
    """
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    root = Path(root) if root is not None else Path.cwd()
    exported_model_dir(root)  # no evaluation without a model
    with tempfile.TemporaryDirectory(prefix="cybulde-eval-") as scratch:
        result = evaluate_to_files(cfg, split, root, Path(scratch))
        log_evaluation(run, result)
    return result.metrics


def evaluate_to_files(cfg: Config, split: str, root: Path, scratch: Path) -> SplitEvaluation:
    """Everything of `evaluate_split` but the MLflow logging; MLflow-only files go to `scratch`."""
    loaded = load_model(root / MODEL_DIR)
    model = loaded.model
    label_names = [str(name) for name in model.label_names]
    data_dir = fetched_path(cfg, root)
    manifest = Manifest.load(data_dir)
    if manifest.is_multilabel or is_multilabel_config(loaded.config):
        return evaluate_multilabel(cfg, split, root, scratch, loaded, manifest, data_dir)
    rows = read_split_columns(data_dir, split)
    outputs = _run_model(cfg, model, data_dir, split, len(rows["id"]), label_names, loaded.config)
    if outputs.labels.tolist() != rows["label"]:
        raise EvaluationError(
            f"the data loader's labels for {split} differ from {data_dir}/{split}.parquet")

    probabilities = model.head.probabilities(outputs.logits)
    threshold = decide_threshold(cfg, split, root, model.head, probabilities, outputs.labels)
    predictions = model.head.predict(probabilities, threshold)
    metrics = compute_metrics(probabilities, predictions, outputs.labels, outputs.loss, label_names)

    report = round_floats({
        "loss": metrics["loss"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "roc_auc": metrics["roc_auc"],
        "threshold": threshold,
        "num_examples": len(rows["id"]),
    }, DIGITS)
    per_class = round_floats(metrics["per_class"], DIGITS)
    metrics_path = write_json(report, root / metrics_file(split))
    per_class_path = write_json(per_class, root / per_class_file(split))
    plot_paths = write_plots(root / PLOTS_DIR / split, scratch / PLOTS_DIR / split, probabilities,
                             predictions, outputs.labels, label_names, metrics["confusion_matrix"], split)
    predictions_path = write_predictions(root / PREDICTIONS_DIR / f"{split}.parquet", rows,
                                         probabilities, predictions, label_names)
    return SplitEvaluation(split, report, metrics_path, plot_paths, predictions_path, per_class, per_class_path)


def _run_model(cfg: Config, model: Any, data_dir: Path, split: str, num_rows: int,
               label_names: list[str], model_config: dict[str, Any]) -> Any:
    datamodule = _eval_datamodule(cfg, data_dir)
    _check_data_fits_model(datamodule, label_names, model_config, data_dir)
    return _collect_split(cfg, model, model_config, datamodule, split, num_rows)


def _eval_datamodule(cfg: Config, data_dir: Path) -> TextDataModule:
    return TextDataModule(data_dir, batch_size=cfg.evaluation.batch_size, seed=cfg.train.seed,
                          group_by_length=False)


def _collect_split(cfg: Config, model: Any, model_config: dict[str, Any], datamodule: TextDataModule,
                   split: str, num_rows: int) -> Any:
    """The model's outputs over every row of `split`, in the precision its config resolves to here."""
    device = pick_device(prefer_gpu=getattr(cfg.launch.accelerator, "value", "") == "gpu")
    precision = inference_precision(model_config, accelerator_of(device))
    log.info("%s: inference in %s (%s)", split, precision.precision, precision.reason)
    return collect_outputs(model, datamodule.eval_dataloader(split, cfg.evaluation.batch_size), num_rows, device,
                           precision=precision.precision)


def _check_data_fits_model(datamodule: Any, label_names: list[str], model_config: dict[str, Any],
                           data_dir: Path) -> None:
    data_labels = [str(name) for name in datamodule.label_names]
    if data_labels != label_names:
        raise EvaluationError(f"the model predicts labels {label_names} but the data in {data_dir} "
                              f"has labels {data_labels}: evaluate a model trained on this dataset")
    trained_with = (model_config.get("metadata") or {}).get("tokenizer_sha256")
    tokenized_with = getattr(getattr(datamodule.manifest, "tokenizer", None), "sha256", None)
    if trained_with and tokenized_with and trained_with != tokenized_with:
        raise EvaluationError(
            f"the data in {data_dir} was tokenized with tokenizer sha256 {tokenized_with[:12]}... "
            f"but the model was trained with {trained_with[:12]}...: evaluate a model trained on "
            f"this dataset version")


def decide_threshold(cfg: Config, split: str, root: Path, head: Head, probabilities: torch.Tensor,
                     labels: torch.Tensor) -> float | None:
    """None (argmax) unless the head decides by a threshold; then tuned, fixed or recorded."""
    if not head.decides_by_threshold:
        return None
    if split == "validation":
        fixed = parse_threshold(cfg.evaluation.threshold)
        if fixed is not None:
            return fixed
        return tune_threshold(probabilities[:, 1].numpy(), labels.numpy())
    return recorded_threshold(root / METRICS_DIR / "validation.json")


def recorded_threshold(validation_metrics: Path) -> float:
    """The threshold `validate` chose; the test split must use exactly that value."""
    if not validation_metrics.is_file():
        raise EvaluationError(
            f"{validation_metrics} not found: the sigmoid head's decision threshold is chosen by "
            f"the `validate` stage, run it before `test`")
    try:
        value = json.loads(validation_metrics.read_text(encoding="utf-8")).get("threshold")
    except (ValueError, AttributeError) as error:
        raise EvaluationError(f"{validation_metrics} is not a metrics JSON object: {error}") from error
    if value is None:
        raise EvaluationError(
            f"{validation_metrics} records no threshold (threshold: null), but the model has a "
            f"binary sigmoid head: rerun the `validate` stage with this model")
    return float(value)


def write_predictions(path: Path, rows: dict[str, list[Any]], probabilities: torch.Tensor,
                      predictions: torch.Tensor, label_names: list[str]) -> Path:
    columns: dict[str, Any] = {
        "id": pa.array([str(value) for value in rows["id"]], pa.string()),
        "text": pa.array(rows["text"], pa.string()),
        "label": pa.array([label_names[int(i)] for i in rows["label"]], pa.string()),
        "predicted": pa.array([label_names[int(i)] for i in predictions.tolist()], pa.string()),
    }
    rounded = probabilities.double().numpy().round(DIGITS)
    for index, name in enumerate(label_names):
        columns[probability_column(name)] = pa.array(rounded[:, index], pa.float64())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def log_evaluation(run: PipelineRun, result: SplitEvaluation) -> None:
    """Metrics (`<split>/...`), the plots folder, predictions and the metrics JSON into the run."""
    run.log_metrics(flatten_for_logging(with_per_class(result.metrics, result.per_class), result.split))
    for path in sorted(result.plot_paths.values()):
        run.log_artifact(path, f"{PLOTS_DIR}/{result.split}")
    run.log_artifact(result.predictions_path, PREDICTIONS_DIR)
    run.log_artifact(result.metrics_path, METRICS_DIR)
    if result.per_class_path is not None:
        run.log_artifact(result.per_class_path, METRICS_DIR)


def summary_line(metrics: dict[str, Any], split: str) -> str:
    """One line for the stage's log: the headline metrics and where they were written."""
    if "accuracy" not in metrics:  # a multi-label model's
        thresholds = " ".join(f"{key}={value}" for key, value in sorted(metrics.items())
                              if key.startswith(("threshold/", "ece/")))
        return (f"macro_f1={metrics['macro_f1']} roc_auc={metrics['roc_auc']} {thresholds} "
                f"({metrics['num_examples']} examples) -> metrics/{split}.json")
    return (f"accuracy={metrics['accuracy']} macro_f1={metrics['macro_f1']} roc_auc={metrics['roc_auc']} "
            f"threshold={metrics['threshold']} ({metrics['num_examples']} examples) -> metrics/{split}.json")


# -- multi-label versions -----------------------------------------------------------------------------
def evaluate_multilabel(cfg: Config, split: str, root: Path, scratch: Path, loaded: LoadedModel,
                        manifest: Manifest, data_dir: Path) -> SplitEvaluation:
    """`evaluate_to_files` of a multi-label version (see the module docstring)."""

    questions = [str(name) for name in loaded.model.label_names]
    _check_multilabel_fit(loaded, manifest, questions, data_dir)
    outputs = _run_multilabel_model(cfg, loaded, data_dir, split, questions)
    sources = list(manifest.source_names or [])
    if split == "validation":
        serving, by_source = multilabel.tune_thresholds(outputs, sources, parse_threshold(cfg.evaluation.threshold))
    else:
        serving, by_source = _recorded_multilabel_thresholds(root, questions)
    scores, detail = multilabel.split_report(outputs, sources, serving, by_source, manifest.label_map)
    report, detail = round_floats(scores, DIGITS), round_floats(detail, DIGITS)
    metrics_path = write_json(report, root / metrics_file(split))
    per_class_path = write_json(detail, root / per_class_file(split))
    plot_paths = _write_multilabel_plots(root / PLOTS_DIR / split, scratch / PLOTS_DIR / split, outputs, serving, split)
    predictions_path = multilabel.write_predictions(root / PREDICTIONS_DIR / f"{split}.parquet", outputs, serving)
    return SplitEvaluation(split, report, metrics_path, plot_paths, predictions_path, detail, per_class_path,
                           multilabel=True)


def _check_multilabel_fit(loaded: LoadedModel, manifest: Manifest, questions: list[str], data_dir: Path) -> None:
    if not (manifest.is_multilabel and is_multilabel_config(loaded.config)):
        model_kind = "a multi-label model" if is_multilabel_config(loaded.config) else "a single-label model"
        data_kind = "a multi-label version" if manifest.is_multilabel else "a single-label version"
        raise EvaluationError(f"{model_kind} cannot be evaluated on {data_kind} ({data_dir}): evaluate a "
                              f"model trained on this dataset")
    if [str(name) for name in manifest.label_names] != questions:
        raise EvaluationError(f"the model answers the questions {questions} but the data in {data_dir} asks "
                              f"{list(manifest.label_names)}: evaluate a model trained on this dataset")
    trained_with = (loaded.config.get("metadata") or {}).get("tokenizer_sha256")
    tokenized_with = getattr(manifest.tokenizer, "sha256", None)
    if trained_with and tokenized_with and trained_with != tokenized_with:
        raise EvaluationError(f"the data in {data_dir} was tokenized with tokenizer sha256 {tokenized_with[:12]}... "
                              f"but the model was trained with {trained_with[:12]}...: evaluate a model trained "
                              f"on this dataset version")


def _run_multilabel_model(cfg: Config, loaded: LoadedModel, data_dir: Path, split: str,
                          questions: list[str]) -> Any:
    """The model's probabilities over every row of `split` (the stored token ids, batched and put
    back in row order as for a single-label model), with the rows' ids, sources and answers."""

    rows = read_split_columns(data_dir, split, columns=("id", "source"))
    outputs = _collect_split(cfg, loaded.model, loaded.config, _eval_datamodule(cfg, data_dir), split,
                             len(rows["id"]))
    return multilabel.MultiLabelSplit(
        ids=[str(value) for value in rows["id"]], sources=[str(value) for value in rows["source"]],
        questions=questions, labels=outputs.labels.numpy(),
        probabilities=loaded.model.head.probabilities(outputs.logits).double().numpy().astype(np.float64),
        loss=outputs.loss)


def _recorded_multilabel_thresholds(root: Path, questions: list[str]) -> tuple[dict[str, float],
                                                                             dict[str, dict[str, float]]]:
    """The serving and per-source thresholds `validate` recorded (metrics/validation.json and
    metrics/validation_per_class.json)."""

    paths = [root / metrics_file("validation"), root / per_class_file("validation")]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise EvaluationError(f"{' and '.join(missing)} not found: a multi-label model's thresholds are chosen "
                              f"by the `validate` stage, run it before `test`")
    try:
        recorded = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
        return multilabel.recorded_thresholds(recorded[0], recorded[1], questions)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EvaluationError(f"{paths[0]} and {paths[1]} do not record a multi-label model's thresholds "
                              f"(missing {error}): rerun the `validate` stage with this model") from error


def _write_multilabel_plots(out_dir: Path, extra_dir: Path, outputs: Any, serving: Mapping[str, float],
                            split: str) -> dict[str, Path]:
    """The files dvc.yaml declares for every model (confusion.json, roc.json and pr.json with one curve
    per question's answered cells, each point naming its `question`, reliability.json) into `out_dir`;
    a reliability PNG per question into `extra_dir`."""

    paths = {**multilabel.write_curve_plots(out_dir, outputs),
             "reliability": multilabel.write_reliability_plot(out_dir, outputs),
             "confusion": multilabel.write_confusion_plot(out_dir, outputs, serving)}
    for question in outputs.questions:
        figure = curve_figure({question: reliability_points(*outputs.cells(question))}, "confidence", "observed",
                              f"{split} reliability: {question}", diagonal=True)
        paths[f"reliability_{question}_png"] = save_figure(figure, extra_dir / f"reliability_{question}.png")
    return paths
