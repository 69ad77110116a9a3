"""DVC stage `train`, started by dvc.yaml under torchrun:

    torchrun --nnodes=N --nproc_per_node=P --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT \
        stages/train.py [key=value ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage


def train(cfg: Config) -> str | None:
    from cybulde.training.train import train

    result = train(cfg)
    if result.model_dir is None:
        return None  # ranks other than 0 write nothing
    return f"best val macro_f1 {result.metrics['best_val_macro_f1']:.4f} -> {result.model_dir}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("train", train, argv)


if __name__ == "__main__":
    sys.exit(main())
