"""DVC stage `baseline`: TF-IDF + logistic regression on the fetched data -> metrics/baseline/.

Usage: python stages/baseline.py [key=value ...]   (overrides, e.g. data.fetched_dir=/tmp/data)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage


def baseline(cfg: Config) -> str:
    # the evaluation code loads only once the params are valid: an argument error stays fast
    from cybulde.evaluation.baseline import write_baseline

    report, path = write_baseline(Path(cfg.data.fetched_dir).expanduser())
    return (f"C={report['C']} validation macro_f1={report['validation']['macro_f1']} "
            f"test macro_f1={report['test']['macro_f1']} -> {path}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("baseline", baseline, argv)


if __name__ == "__main__":
    sys.exit(main())
