"""The names a model's scores go under: the columns `predict`, the served model and the stored
predictions write, and the metric keys of a multi-label model's decision thresholds.

Kept apart from the scorer so that code which only names these columns (the baseline, the
evaluation of a multi-label version) does not import the model and its libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROBABILITY_PREFIX = "prob_"
LABEL_COLUMN = "label"
QUESTION_PROBABILITY_SUFFIX = "_probability"
QUESTION_PREDICTION_SUFFIX = "_prediction"
THRESHOLD_KEY = "threshold"  # metrics/<split>.json: `threshold` (binary sigmoid), `threshold/<question>`


def probability_column(label_name: str) -> str:
    return f"{PROBABILITY_PREFIX}{label_name}"


def question_probability_column(question: str) -> str:
    return f"{question}{QUESTION_PROBABILITY_SUFFIX}"


def question_prediction_column(question: str) -> str:
    return f"{question}{QUESTION_PREDICTION_SUFFIX}"


def question_threshold_key(question: str) -> str:
    """The key of a question's decision threshold in metrics/<split>.json."""
    return f"{THRESHOLD_KEY}/{question}"


def question_thresholds(metrics: Mapping[str, Any]) -> dict[str, float]:
    """{question: threshold} of the `threshold/<question>` keys of a multi-label model's metrics
    (empty for a single-label model's)."""
    prefix = f"{THRESHOLD_KEY}/"
    return {key[len(prefix):]: float(value) for key, value in metrics.items()
            if key.startswith(prefix) and value is not None}
