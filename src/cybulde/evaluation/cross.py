"""Cross-dataset evaluation: score a trained model on a split of another dataset version.

The target dataset's labels are mapped onto the model's label names by an explicit mapping
(`--map hate_speech=offensive`, see `cybulde.preparation.labels`).

The target version may have been tokenized with another tokenizer, so its stored `input_ids` are
ignored: the raw `text` goes through the model's own text path (`cybulde.serving.scorer`: the
cleaning and tokenizer the model was trained with), as in `predict`. The data is either a
fetched/published version folder or a registry version `<registry>/<dataset>/<version>`,
downloaded into a temporary folder and verified.

Metrics are the project's `compute_metrics` over the model's labels, plus `source_confusion`:
how the rows of each original target label were predicted (e.g. how much of Davidson's
`hate_speech` an offensive-language model flags).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cybulde.errors import CybuldeError
from cybulde.evaluation.metrics import compute_metrics, round_floats
from cybulde.evaluation.output import emit
from cybulde.hardware import PRECISIONS
from cybulde.preparation.labels import parse_label_map, resolve_label_map
from cybulde.registry.manifest import SPLITS, Manifest
from cybulde.registry.store import Registry
from cybulde.serving.scorer import TextScorer

DIGITS = 6
OUTPUT_FORMATS = ("text", "json")


class CrossEvaluationError(CybuldeError, ValueError):
    """Cross-dataset evaluation cannot run as asked: bad mapping, data or split."""


@contextmanager
def opened_data_dir(location: str | Path) -> Iterator[Path]:
    """A local version folder as is, or `<registry>/<dataset>/<version>` downloaded and verified."""
    path = Path(str(location)).expanduser()
    if (path / "manifest.json").is_file():
        yield path
        return
    registry, dataset, version = split_registry_location(str(location))

    with tempfile.TemporaryDirectory(prefix="cybulde-cross-") as scratch:
        destination = Path(scratch) / "data"
        destination.mkdir()
        Registry(registry).download(dataset, version, destination)
        yield destination


def split_registry_location(location: str) -> tuple[str, str, str]:
    parts = location.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or not all(parts):
        raise CrossEvaluationError(
            f"{location!r} is neither a dataset version folder (with manifest.json) nor "
            f"<registry>/<dataset>/<version>")
    return parts[0], parts[1], parts[2]


def read_texts_and_labels(data_dir: Path, split: str) -> tuple[list[str], list[int]]:
    # `cybulde --help` imports this module: torch and pyarrow only when a model is evaluated
    from cybulde.registry.splits import read_split_columns

    rows = read_split_columns(data_dir, split, columns=("text", "label"))
    return rows["text"], [int(value) for value in rows["label"]]


def negative_log_likelihood(probabilities: Any, labels: Any) -> float:
    import torch

    picked = probabilities.double()[torch.arange(len(labels)), labels]
    return float(-picked.clamp_min(1e-12).log().mean())


def source_confusion(source_labels: Sequence[int], predicted: Sequence[int], data_labels: Sequence[str],
                     model_labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """{data label: {model label: rows of that data label predicted as it}}."""
    counts = {name: dict.fromkeys(model_labels, 0) for name in data_labels}
    for source, prediction in zip(source_labels, predicted, strict=True):
        counts[data_labels[source]][model_labels[prediction]] += 1
    return counts


def evaluate_cross(model_dir: str | Path, data_dir: str | Path, label_map: Mapping[str, str],
                   split: str = "test", threshold: float | None = None,
                   batch_size: int = 64, precision: str | None = None) -> dict[str, Any]:
    """Metrics of the model in `model_dir` on `split` of another dataset version.

    `label_map` maps the data's label names onto the model's (see module docstring); `threshold`
    is the decision threshold of a binary sigmoid head (None: argmax); `precision` as for `predict`.
    """
    import torch

    with opened_data_dir(data_dir) as local_dir:
        manifest = Manifest.load(local_dir)
        texts, source_labels = read_texts_and_labels(local_dir, split)
    scorer = TextScorer.from_dir(model_dir, threshold=threshold, batch_size=batch_size, precision=precision)
    model_labels = scorer.label_names
    data_labels = [str(name) for name in manifest.label_names]
    mapping = resolve_label_map(data_labels, model_labels, label_map)
    labels = torch.tensor([model_labels.index(mapping[data_labels[i]]) for i in source_labels])
    probabilities = scorer.probabilities(texts)
    predicted = scorer.model.head.predict(probabilities, threshold)
    metrics = compute_metrics(probabilities, predicted, labels,
                              negative_log_likelihood(probabilities, labels), model_labels)
    model_metadata = scorer.config.get("metadata") or {}
    return round_floats({
        "model": {"dir": str(model_dir), "dataset": model_metadata.get("dataset"),
                  "version": model_metadata.get("version")},
        "data": {"location": str(data_dir), "dataset": manifest.dataset, "version": manifest.version,
                 "manifest_sha256": manifest.sha256},
        "split": split,
        "label_map": mapping,
        "threshold": threshold,
        "num_examples": len(texts),
        **metrics,
        "source_confusion": source_confusion(source_labels, predicted.tolist(), data_labels,
                                             model_labels),
    }, DIGITS)


def add_cross_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="exported model folder (config.json, weights, tokenizer/)")
    parser.add_argument("--data", required=True,
                        help="dataset version folder, or <registry>/<dataset>/<version> to download")
    parser.add_argument("--map", dest="label_map", action="append", default=[], metavar="DATA=MODEL",
                        help="map a data label onto a model label (repeatable); labels with the "
                             "same name map to themselves")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold of a binary sigmoid head (default: argmax)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="default: the model's own train.precision, resolved on this machine (as predict)")
    parser.add_argument("--output", default="text", choices=OUTPUT_FORMATS,
                        help="print a summary (text) or the full result (json)")
    parser.add_argument("--save", default=None, metavar="PATH",
                        help="also write the full result as JSON to PATH (e.g. results/cross/x.json)")
    return parser


def run_cross(args: argparse.Namespace) -> int:
    """The `cybulde evaluate-cross` command (errors are reported by `cybulde.cli`)."""
    result = evaluate_cross(args.model, args.data, parse_label_map(args.label_map), args.split,
                            threshold=args.threshold, batch_size=args.batch_size, precision=args.precision)
    emit(result, args.output, args.save, summary_line)
    return 0


def summary_line(result: Mapping[str, Any]) -> str:
    data = result["data"]
    model = result["model"]
    return (f"{model['dataset']}/{model['version']} model on {data['dataset']}/{data['version']} "
            f"{result['split']} ({result['num_examples']} examples): macro_f1={result['macro_f1']} "
            f"accuracy={result['accuracy']} roc_auc={result['roc_auc']}")
