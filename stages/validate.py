"""DVC stage `validate`: evaluate `model/` on the validation split (and choose the sigmoid threshold).

Usage: python stages/validate.py [key=value ...]   (overrides, e.g. evaluation.batch_size=128)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage

STAGE = "validate"
SPLIT = "validation"


def evaluate(cfg: Config) -> str:
    # the evaluation code (torch, Lightning) and MLflow load only once the params are valid
    from cybulde.evaluation.evaluate import evaluate_split, exported_model_dir, summary_line
    from cybulde.tracking.run import PipelineRun

    run = PipelineRun.for_model(cfg, exported_model_dir(Path.cwd()))
    with run.stage(STAGE):
        metrics = evaluate_split(cfg, SPLIT, run=run)
    return summary_line(metrics, SPLIT)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(STAGE, evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
