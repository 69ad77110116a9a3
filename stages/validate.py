"""DVC stage `validate`: evaluate `model/` on the validation split (and choose the sigmoid threshold).

Usage: python stages/validate.py [key=value ...]   (overrides, e.g. evaluation.batch_size=128)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from cybulde.evaluation.cli import run_evaluation_stage

    return run_evaluation_stage("validation", list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
