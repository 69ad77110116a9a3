"""DVC stage `test`: evaluate `model/` on the test split with the threshold `validate` recorded.

Usage: python stages/test.py [key=value ...]   (overrides, e.g. evaluation.batch_size=128)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from cybulde.evaluation.cli import run_evaluation_stage

    return run_evaluation_stage("test", list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
