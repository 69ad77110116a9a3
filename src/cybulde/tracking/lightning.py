"""A Lightning logger that writes into the pipeline's MLflow run through a `MetricBuffer`.

Lightning's MLFlowLogger sends every `log_metrics` call synchronously (a tracking-server outage
then blocks rank 0 in HTTP retries and finally kills `fit`) and marks its run FINISHED when
training ends. This logger only queues metrics in the run's buffer, which a background thread
sends, and leaves the run's status to `PipelineRun.stage`. Params are logged by `PipelineRun`.

In MLflow every in-training value is under `train/`: Lightning's `val/macro_f1` and `val/loss` (the
validation split scored at each epoch's end) become `train/val_macro_f1` and `train/val_loss`, apart
from `validation/...` and `test/...`, the exported model's scores the evaluation stages log.
Lightning's 0-based `epoch` becomes `train/epoch`, 1-based like `metrics/train.json`'s `best_epoch`
and the training log. The step of every in-training metric is the optimizer step.
"""

from __future__ import annotations

import re
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cybulde.tracking.buffer import MetricBuffer

_NOT_IN_METRIC_NAMES = re.compile(r"[^a-zA-Z0-9_/. -]+")
IN_TRAINING_PREFIX = "train/"
LIGHTNING_VALIDATION_PREFIX = "val/"
LIGHTNING_EPOCH = "epoch"


def in_training_metric(key: str, value: float) -> tuple[str, float]:
    """The MLflow name and value of a metric Lightning logs during training (see the module's docstring)."""
    if key == LIGHTNING_EPOCH:
        return f"{IN_TRAINING_PREFIX}{LIGHTNING_EPOCH}", value + 1
    if key.startswith(LIGHTNING_VALIDATION_PREFIX):
        return f"{IN_TRAINING_PREFIX}val_{key.removeprefix(LIGHTNING_VALIDATION_PREFIX)}", value
    return key, value


class RunLogger(Logger):
    def __init__(self, buffer: MetricBuffer) -> None:
        super().__init__()
        self.buffer = buffer

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.buffer.run_id

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        renamed = dict(in_training_metric(_NOT_IN_METRIC_NAMES.sub("", key), float(value))
                       for key, value in metrics.items())
        self.buffer.log_metrics(renamed, step=step or 0)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: `PipelineRun` logs the pipeline's params."""

    def finalize(self, status: str) -> None:
        """Nothing: the train stage drains the buffer, and `PipelineRun.stage` owns the run's status."""
