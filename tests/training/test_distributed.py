import os

import pytest

from cybulde.config.schema import Config
from cybulde.config.topology import Topology
from cybulde.training.distributed import (
    OWN_STORE_PER_ROUND,
    LaunchError,
    check_world_size,
    read_launch_env,
    threads_per_rank,
)
from tests.helpers.ports import free_port


def torchrun_env(world_size, rank=0, local_world_size=None):
    return {"WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(local_world_size or world_size), "TORCHELASTIC_RUN_ID": "test"}


def config(nnodes=1, nproc_per_node=2, threads_per_rank=0):
    cfg = Config()
    cfg.launch.nnodes, cfg.launch.nproc_per_node = nnodes, str(nproc_per_node)
    cfg.launch.threads_per_rank = threads_per_rank
    return cfg


def topology(nnodes, nproc_per_node):
    return Topology(nnodes=nnodes, nproc_per_node=nproc_per_node, micro_batch_size=8, accumulation=1,
                    reason="as configured")


def test_reads_torchrun_variables():
    env = read_launch_env(torchrun_env(4, rank=3, local_world_size=2))
    assert (env.world_size, env.rank, env.local_world_size, env.under_torchrun) == (4, 3, 2, True)
    assert not env.is_rank_zero


def test_plain_process_is_a_world_of_one():
    env = read_launch_env({})
    assert (env.world_size, env.rank, env.local_rank, env.local_world_size, env.under_torchrun) == (1, 0, 0, 1, False)


def test_world_size_mismatch_names_both_sides():
    with pytest.raises(LaunchError, match=r"1 \* 2 = 2 processes \(as configured\), but torchrun started WORLD_SIZE=3"):
        check_world_size(topology(1, 2), read_launch_env(torchrun_env(3)))
    with pytest.raises(LaunchError, match="not started by torchrun, so WORLD_SIZE=1"):
        check_world_size(topology(1, 2), read_launch_env({}))


def test_processes_per_node_must_match_local_world_size():
    with pytest.raises(LaunchError, match="LOCAL_WORLD_SIZE=1"):
        check_world_size(topology(1, 2), read_launch_env(torchrun_env(2, local_world_size=1)))


def test_matching_worlds_pass():
    check_world_size(topology(2, 1), read_launch_env(torchrun_env(2, local_world_size=1)))
    check_world_size(topology(1, 1), read_launch_env({}))


def test_threads_share_the_cores_between_local_ranks(monkeypatch):
    monkeypatch.setattr("cybulde.training.distributed.available_cores", lambda: 8)
    assert threads_per_rank(config(), read_launch_env(torchrun_env(2))) == 4
    assert threads_per_rank(config(), read_launch_env(torchrun_env(16))) == 1
    assert threads_per_rank(config(threads_per_rank=3), read_launch_env(torchrun_env(2))) == 3


RESTARTED_WORKER = """
import os, signal, sys, time
import torch, torch.distributed as dist
from cybulde.config.schema import Config
from cybulde.config.topology import Topology
from cybulde.training.distributed import init_distributed, read_launch_env

env, attempt = read_launch_env(), os.environ["TORCHELASTIC_RESTART_COUNT"]
if attempt == "1" and env.rank == 1:
    time.sleep(5)  # after the restart, rank 1 is slow to start (imports on a busy machine)
init_distributed(Config(), env)
total = torch.ones(1)
dist.all_reduce(total)
print(f"attempt {attempt} rank {env.rank} sum {int(total)}", flush=True)
if attempt == "0" and env.rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
dist.barrier()
"""


@pytest.mark.slow
@pytest.mark.parametrize("store_env", [{}, dict([OWN_STORE_PER_ROUND])], ids=["agent-store", "own-store-per-round"])
def test_restarted_workers_meet_again_when_one_starts_late(tmp_path, store_env):
    """After a restart the early rank must not read the dead rank's address, whoever hosts the store."""
    import re
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(RESTARTED_WORKER)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--max-restarts=1",
                             "--monitor-interval=0.5", str(script)], capture_output=True, text=True, timeout=240,
                            env={**{k: v for k, v in os.environ.items() if k != OWN_STORE_PER_ROUND[0]}, **store_env})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(re.findall(r"attempt \d rank \d sum \d", result.stdout))  # the ranks share stdout
    assert lines == ["attempt 0 rank 0 sum 2", "attempt 0 rank 1 sum 2", "attempt 1 rank 0 sum 2",
                     "attempt 1 rank 1 sum 2"]
