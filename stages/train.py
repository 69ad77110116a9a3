"""DVC stage `train`: `python stages/train.py [key=value ...]`.

Run directly, it is the launcher: it checks the data and the tracking server, then runs torchrun's
elastic agent in-process with the `launch.*` params (workers, rendezvous, `--max-restarts`), and
the agent starts this script again on every worker. Started by torchrun (multi-node launches,
infra/multinode/launch-node.sh), it is a worker:

    torchrun --nnodes=N --nproc_per_node=P --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT \
        [--max-restarts=R] stages/train.py [key=value ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage


def launch_or_train(cfg: Config, overrides: Sequence[str]) -> str | None:
    # torch loads only once the params are valid
    from cybulde.training.distributed import read_launch_env

    if not read_launch_env().under_torchrun:
        from cybulde.training.launcher import launch

        launch(cfg, Path(__file__).resolve(), overrides)
        return None  # rank 0 has printed the summary
    from cybulde.training.train import train

    result = train(cfg)
    if result.model_dir is None:
        return None  # ranks other than 0 write nothing
    return f"best val macro_f1 {result.metrics['best_val_macro_f1']:.4f} -> {result.model_dir}"


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    return run_stage("train", lambda cfg: launch_or_train(cfg, overrides), overrides)


if __name__ == "__main__":
    sys.exit(main())
