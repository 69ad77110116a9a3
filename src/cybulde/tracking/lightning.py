"""Lightning's MLFlowLogger, bound to the pipeline's run and leaving the run's status alone.

Lightning's logger marks its run FINISHED when training ends; the pipeline's run must stay RUNNING
until the `test` stage, so `finalize` only flushes.
"""

from __future__ import annotations

from lightning.pytorch.loggers import MLFlowLogger


class RunBoundMLFlowLogger(MLFlowLogger):
    def __init__(self, run_id: str, tracking_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri, run_id=run_id, log_model=False)

    def finalize(self, status: str = "success") -> None:
        """Keep the run open: `PipelineRun.stage` owns its status."""
