"""Shared entry of the `validate` and `test` stage scripts (stages/validate.py, stages/test.py)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

STAGE_NAMES = {"validation": "validate", "test": "test"}


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors with a message that says what to fix; anything else keeps its traceback."""
    from cybulde.config.loader import ConfigError
    from cybulde.data.errors import DataError
    from cybulde.evaluation.evaluate import EvaluationError
    from cybulde.evaluation.metrics import MetricsInputError
    from cybulde.evaluation.thresholds import ThresholdError
    from cybulde.models.checkpoint import ModelFormatError

    errors: list[type[BaseException]] = [ConfigError, DataError, EvaluationError, MetricsInputError,
                                         ThresholdError, ModelFormatError]
    try:
        from cybulde.tracking.run import TrackingError

        errors.append(TrackingError)
    except ImportError:  # tracking is optional for the error list only
        pass
    return tuple(errors)


def run_evaluation_stage(split: str, overrides: Sequence[str]) -> int:
    """Load params.yaml (+ overrides), evaluate `split`; a known error becomes one line on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from cybulde.config.loader import load_config
    from cybulde.evaluation.evaluate import evaluate_split

    stage = STAGE_NAMES[split]
    try:
        cfg = load_config(overrides=list(overrides))
        metrics = evaluate_split(cfg, split)
    except known_errors() as error:
        print(f"{stage}: error: {error}", file=sys.stderr)
        return 1
    print(f"{stage}: {split} accuracy={metrics['accuracy']} macro_f1={metrics['macro_f1']} "
          f"roc_auc={metrics['roc_auc']} threshold={metrics['threshold']} "
          f"({metrics['num_examples']} examples) -> metrics/{split}.json")
    return 0
