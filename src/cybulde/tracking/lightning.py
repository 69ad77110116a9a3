"""A Lightning logger that writes into the pipeline's MLflow run through a `MetricBuffer`.

Lightning's MLFlowLogger sends every `log_metrics` call synchronously (a tracking-server outage
then blocks rank 0 in HTTP retries and finally kills `fit`) and marks its run FINISHED when
training ends. This logger only queues metrics in the run's buffer, which a background thread
sends, and leaves the run's status to `PipelineRun.stage`. Params are logged by `PipelineRun`.
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
        self.buffer.log_metrics({_NOT_IN_METRIC_NAMES.sub("", key): float(value) for key, value in metrics.items()},
                                step=step or 0)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: `PipelineRun` logs the pipeline's params."""

    def finalize(self, status: str) -> None:
        """Nothing: the train stage drains the buffer, and `PipelineRun.stage` owns the run's status."""
