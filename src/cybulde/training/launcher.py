"""The `train` stage's launcher: check what can be checked before any worker starts, then run
torchrun's elastic agent in this process.

    python stages/train.py [key=value ...]

is what dvc.yaml runs. `launch.*` is the only source of the torchrun settings: `nnodes`,
`nproc_per_node`, `rdzv_endpoint` (several nodes; one node meets on a free loopback port) and
`max_restarts` (a rank that fails or is killed restarts the node's workers, which resume from the
latest checkpoint). Before the workers start, the fetched
data and the tracking store are checked, so a missing dataset or an unreachable MLflow server is
one line within seconds rather than an error inside a torchrun failure report. Each worker runs
the same script under torchrun (`cybulde.training.train`) and stops when this process is gone.

`torchrun ... stages/train.py` still works (multi-node launches use it, see
infra/multinode/launch-node.sh): the script then runs as a worker directly.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from cybulde.config.paths import fetched_path
from cybulde.config.topology import Topology, resolve_topology
from cybulde.registry.manifest import Manifest
from cybulde.tracking.run import check_tracking
from cybulde.training.distributed import OWN_STORE_PER_ROUND

if TYPE_CHECKING:
    from cybulde.config.schema import Config

log = logging.getLogger("cybulde.training")

MONITOR_INTERVAL_S = 1.0  # how often the agent checks its workers


def preflight(cfg: Config) -> Topology:
    """Fail fast, with one line, on what would otherwise fail inside every worker; the node's topology."""
    topology = resolve_topology(cfg)
    Manifest.load(fetched_path(cfg))
    check_tracking(cfg)
    return topology


def torchrun_argv(cfg: Config, topology: Topology, script: Path, overrides: Sequence[str]) -> list[str]:
    launch = cfg.launch
    # One node rendezvous on a free loopback port (torchrun --standalone): two runs on one machine
    # (two checkouts, experiments side by side) never join each other's rendezvous.
    rendezvous = (["--standalone"] if launch.nnodes == 1
                  else ["--rdzv-backend=c10d", f"--rdzv-endpoint={launch.rdzv_endpoint}"])
    return [f"--nnodes={launch.nnodes}", f"--nproc-per-node={topology.nproc_per_node}", *rendezvous,
            f"--max-restarts={launch.max_restarts}", f"--monitor-interval={MONITOR_INTERVAL_S}", str(script),
            *overrides]


def launch(cfg: Config, script: Path, overrides: Sequence[str]) -> None:
    """Check, then run `script` with `overrides` under torchrun's agent, on as many workers as
    `launch.nproc_per_node` resolves to on this node (`cybulde.config.topology`)."""
    topology = preflight(cfg)
    os.environ.setdefault(*OWN_STORE_PER_ROUND)
    log.info("starting %d worker(s) on this node (%s; micro-batch %d x %d accumulated; up to %d restarts)",
             topology.nproc_per_node, topology.reason, topology.micro_batch_size, topology.accumulation,
             cfg.launch.max_restarts)
    try:
        run(get_args_parser().parse_args(torchrun_argv(cfg, topology, script, overrides)))
    except ChildFailedError as error:
        # the workers' module: Lightning and transformers, which this process never needs otherwise
        from cybulde.training.train import TrainingError

        raise TrainingError(failure_summary(error, cfg.launch.max_restarts)) from None
    except SignalException as error:  # the agent has passed the signal on to the workers and waited
        raise SystemExit(128 + int(error.sigval)) from None


def failure_summary(error: object, max_restarts: int) -> str:
    """One line for torchrun's failure report: which rank failed how, and that restarts ran out."""
    rank, failure = error.get_first_failure()  # type: ignore[attr-defined]
    code = int(failure.exitcode)
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    restarts = f"after {max_restarts} restart(s) " if max_restarts else ""
    return (f"training failed {restarts}(launch.max_restarts={max_restarts}): rank {rank} {how}; "
            "its own error is in the output above")
