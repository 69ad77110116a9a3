"""DVC stage `test`, the pipeline's last: evaluate `model/` on the test split (with the threshold chosen
on validation), publish it as the served model (logged into the run, registered as the candidate),
and run the behavioural suite on it. The MLflow run is FINISHED after it.

Usage: python stages/test.py [key=value ...]   (overrides, e.g. evaluation.batch_size=128)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage

STAGE = "test"
SPLIT = "test"


def evaluate_publish_and_probe(cfg: Config) -> str:
    # the evaluation code (torch, Lightning) and MLflow load only once the params are valid
    from cybulde.evaluation.behaviour import log_behaviour
    from cybulde.evaluation.evaluate import evaluate_split, exported_model_dir, summary_line
    from cybulde.publishing import publish_served_model
    from cybulde.serving.columns import question_thresholds
    from cybulde.tracking.run import PipelineRun

    model_dir = exported_model_dir(Path.cwd())
    run = PipelineRun.for_model(cfg, model_dir)
    with run.stage(STAGE, final=True):
        metrics = evaluate_split(cfg, SPLIT, run=run)
        publish_served_model(cfg, run, model_dir, metrics, batch_size=cfg.evaluation.batch_size)
        per_question = question_thresholds(metrics)  # a multi-label model's; none for a single-label one
        if per_question:
            log_behaviour(run, model_dir, threshold=None, thresholds=per_question)
        else:
            log_behaviour(run, model_dir, threshold=metrics["threshold"])
    return summary_line(metrics, SPLIT)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(STAGE, evaluate_publish_and_probe, argv)


if __name__ == "__main__":
    sys.exit(main())
