"""DVC stage `test`: evaluate `model/` on the test split (with the threshold chosen on validation).

Usage: python stages/test.py [key=value ...]   (overrides, e.g. evaluation.batch_size=128)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage


def evaluate(cfg: Config) -> str:
    from cybulde.evaluation.evaluate import evaluate_split, summary_line

    return summary_line(evaluate_split(cfg, "test"), "test")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("test", evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
