"""How the `train` stage lays its work out: processes per node, the micro-batch of each, accumulation.

`train.global_batch_size` is the recipe: the samples behind every optimizer step, whatever runs them.
`resolve_topology` turns it and `launch.*` into what each process does, on this machine:

    processes per node  launch.nproc_per_node, or for "auto" the hardware's rule (cybulde.hardware)
    world size          launch.nnodes * processes per node
    micro-batch         train.batch_size, or for 0 the global batch / world size (no accumulation)
    accumulation        global batch / (micro-batch * world size)

so the same params give the same global batch, steps and schedule on one process or eight, and the
same params on the same machine always resolve the same way (the launcher and every rank agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cybulde.config.loader import ConfigError
from cybulde.hardware import resolve_workers

if TYPE_CHECKING:
    from cybulde.config.schema import Config


@dataclass(frozen=True)
class Topology:
    nnodes: int
    nproc_per_node: int
    micro_batch_size: int  # samples per process per forward pass
    accumulation: int  # forward passes per optimizer step
    reason: str  # how nproc_per_node was chosen, one line for the logs and the MLflow run

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def resolve_topology(config: Config) -> Topology:
    """The topology of `config` on this machine; a ConfigError naming the key when the batch does not divide."""
    launch, train = config.launch, config.train
    try:
        workers = resolve_workers(str(launch.nproc_per_node), launch.accelerator.value)
    except ValueError as error:
        raise ConfigError(f"invalid parameter 'launch.nproc_per_node': {error}") from None
    world_size = launch.nnodes * workers.nproc_per_node
    per_process, rest = divmod(train.global_batch_size, world_size)
    if rest or per_process == 0:
        raise ConfigError(
            f"invalid parameter 'train.global_batch_size': must be a multiple of the world size "
            f"launch.nnodes * processes per node = {launch.nnodes} * {workers.nproc_per_node} = {world_size} "
            f"({workers.reason}), got {train.global_batch_size}")
    micro = train.batch_size or per_process
    if per_process % micro:
        raise ConfigError(
            f"invalid parameter 'train.batch_size': {micro} does not divide the {per_process} samples each of "
            f"the {world_size} process(es) contributes to a step of train.global_batch_size="
            f"{train.global_batch_size}; use a divisor of {per_process}, or 0 (= {per_process}, no accumulation)")
    return Topology(nnodes=launch.nnodes, nproc_per_node=workers.nproc_per_node, micro_batch_size=micro,
                    accumulation=per_process // micro, reason=workers.reason)
