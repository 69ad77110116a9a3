"""DVC stage `validate`: evaluate `model/` on the validation split (and choose the sigmoid threshold).

Usage: python stages/validate.py [key=value ...]   (overrides, e.g. evaluation.batch_size=128)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage


def evaluate(cfg: Config) -> str:
    from cybulde.evaluation.evaluate import evaluate_split, summary_line

    return summary_line(evaluate_split(cfg, "validation"), "validation")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("validate", evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
