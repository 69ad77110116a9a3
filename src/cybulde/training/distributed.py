"""What torchrun started us as, and the checks that it agrees with `launch.*` in params.yaml."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from cybulde.errors import CybuldeError
from cybulde.hardware import available_cores

if TYPE_CHECKING:
    from cybulde.config.schema import Config
    from cybulde.config.topology import Topology


log = logging.getLogger("cybulde.training")

LAUNCHER_POLL_S = 1.0
# Set for torchrun's agent by the project's launchers (the `train` stage, infra/multinode/launch-node.sh):
# global rank 0 hosts a new store for the workers of each rendezvous round. The agent's store shared
# across rounds (torchrun's default) has a node that replaces a lost one wait forever for the address
# of a store that the surviving rank-0 agent published only in the first round.
OWN_STORE_PER_ROUND = ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


class LaunchError(CybuldeError, RuntimeError):
    """torchrun's world does not match the topology that `launch.*` resolves to on this machine."""


@dataclass(frozen=True)
class LaunchEnv:
    world_size: int
    rank: int
    local_rank: int
    local_world_size: int
    under_torchrun: bool

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def read_launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """The torchrun variables (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE); one process otherwise."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        value = environ.get(name, "")
        try:
            return int(value) if value != "" else default
        except ValueError as error:
            raise LaunchError(f"environment variable {name}={value!r} is not an integer") from error

    world_size = number("WORLD_SIZE", 1)
    return LaunchEnv(world_size=world_size, rank=number("RANK", 0), local_rank=number("LOCAL_RANK", 0),
                     local_world_size=number("LOCAL_WORLD_SIZE", world_size if "WORLD_SIZE" in environ else 1),
                     under_torchrun="TORCHELASTIC_RUN_ID" in environ or "WORLD_SIZE" in environ)


def check_world_size(topology: Topology, env: LaunchEnv) -> None:
    nnodes, nproc = topology.nnodes, topology.nproc_per_node
    if topology.world_size != env.world_size:
        how = ("torchrun started" if env.under_torchrun else "not started by torchrun, so")
        raise LaunchError(
            f"launch.nnodes * launch.nproc_per_node = {nnodes} * {nproc} = {topology.world_size} processes "
            f"({topology.reason}), but {how} WORLD_SIZE={env.world_size}; run "
            f"`torchrun --nnodes={nnodes} --nproc_per_node={nproc} stages/train.py` or change launch.* to match")
    if env.under_torchrun and env.local_world_size != nproc:
        raise LaunchError(
            f"launch.nproc_per_node resolves to {nproc} ({topology.reason}) but torchrun started "
            f"LOCAL_WORLD_SIZE={env.local_world_size} processes on this node")


def threads_per_rank(config: Config, env: LaunchEnv) -> int:
    """`launch.threads_per_rank`, or this node's cores shared evenly so ranks do not oversubscribe."""
    if config.launch.threads_per_rank > 0:
        return config.launch.threads_per_rank
    return max(1, available_cores() // max(1, env.local_world_size))


def configure_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work has started in this process


def stop_with_launcher(env: LaunchEnv, poll_s: float = LAUNCHER_POLL_S) -> None:
    """Under torchrun, stop this worker as soon as the agent that started it is gone.

    torchrun starts each worker in a session of its own, so nothing else ends a worker whose agent
    was killed (SIGKILL, an OOM killer, a killed `dvc repro`): it would train on as an orphan and
    write outputs after its stage is gone. A daemon thread checks every `poll_s` seconds whether this
    process has been handed to another parent, and then kills it. (A parent-death signal would fire
    when the agent's *thread* that forked exits, not the agent.)
    """
    if not env.under_torchrun:
        return
    agent = os.getppid()

    def watch() -> None:
        while os.getppid() == agent:
            time.sleep(poll_s)
        print(f"rank {env.rank}: the torchrun agent (pid {agent}) is gone; stopping this worker",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="cybulde-agent-watch", daemon=True).start()


def init_distributed(config: Config, env: LaunchEnv, environ: Mapping[str, str] | None = None) -> None:
    """Start torch.distributed for a multi-process world (Lightning's DDP then uses this process group).

    Started before the Trainer so the ranks can agree on a checkpoint to resume from; CPU tensors always
    travel through gloo, CUDA tensors through NCCL. The project's launchers have global rank 0 host a
    new store for every rendezvous round (`OWN_STORE_PER_ROUND`), so no key of an earlier round is
    ever read. Where the agent's store is shared across rounds (torchrun's default), the keys are
    prefixed with torchrun's restart count: that store still holds the previous workers' addresses,
    and a rank that reads one of those before its peer has overwritten it waits forever for a dead
    process. (The count is per node, so a replaced node would not meet the others that way.)
    """
    if env.world_size == 1 or dist.is_initialized():
        return
    environ = os.environ if environ is None else environ
    timeout = timedelta(minutes=30)  # torch's default for gloo
    agent_hosts_store = environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(environ["MASTER_ADDR"], int(environ["MASTER_PORT"]), env.world_size,
                          is_master=not agent_hosts_store and env.rank == 0, timeout=timeout)
    if agent_hosts_store:
        store = dist.PrefixStore(f"cybulde/attempt-{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    backend = "cpu:gloo,cuda:nccl" if config.launch.accelerator.value == "gpu" else "gloo"
    dist.init_process_group(backend=backend, store=store, rank=env.rank, world_size=env.world_size,
                            timeout=timeout)


def barrier(env: LaunchEnv) -> None:
    if env.world_size > 1 and dist.is_initialized():
        dist.barrier()
