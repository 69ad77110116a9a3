"""The train stage's topology: processes from the hardware, the micro-batch from the global batch."""

from pathlib import Path

import pytest

import cybulde.hardware
from cybulde.config.loader import ConfigError, load_config
from cybulde.config.topology import resolve_topology

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Fake the node: its cores and visible GPUs (resolving must not depend on anything else)."""

    def fake(cores: int = 2, gpus: int = 0) -> None:
        monkeypatch.setattr(cybulde.hardware, "available_cores", lambda: cores)
        monkeypatch.setattr(cybulde.hardware, "gpu_count", lambda: gpus)

    return fake


def topology(*overrides: str):
    return resolve_topology(load_config(REPO_PARAMS, list(overrides)))


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_auto_on_a_cpu_node_is_one_process_with_the_whole_global_batch(machine, cores):
    machine(cores=cores)
    resolved = topology("launch.nproc_per_node=auto", "train.global_batch_size=32", "train.batch_size=0")
    assert (resolved.nproc_per_node, resolved.world_size, resolved.micro_batch_size, resolved.accumulation) == \
        (1, 1, 32, 1)
    assert resolved.reason.startswith("auto:") and f"{cores} core(s)" in resolved.reason


def test_auto_on_a_gpu_node_is_one_process_per_gpu(machine):
    machine(cores=16, gpus=4)
    resolved = topology("launch.accelerator=gpu", "launch.nproc_per_node=auto", "train.global_batch_size=32",
                        "train.batch_size=0")
    assert (resolved.nproc_per_node, resolved.micro_batch_size, resolved.accumulation) == (4, 8, 1)
    assert "4 GPU(s)" in resolved.reason


def test_auto_on_a_gpu_node_without_a_gpu_names_the_key(machine):
    machine(gpus=0)
    with pytest.raises(ConfigError, match="'launch.nproc_per_node'.*no CUDA GPU"):
        topology("launch.accelerator=gpu", "launch.nproc_per_node=auto")


def test_the_same_params_on_the_same_machine_resolve_the_same_way(machine):
    machine(cores=2)
    assert topology() == topology() == topology("launch.nproc_per_node=auto")


# (nnodes, nproc_per_node, batch_size, global) -> (micro-batch, accumulation), worked out by hand.
@pytest.mark.parametrize(("launch", "expected"), [
    ((1, "1", 0, 32), (32, 1)),
    ((1, "2", 0, 32), (16, 1)),
    ((1, "2", 8, 32), (8, 2)),
    ((2, "2", 0, 32), (8, 1)),
    ((2, "1", 4, 32), (4, 4)),
    ((1, "1", 8, 32), (8, 4)),
])
def test_the_global_batch_is_the_recipe_whatever_the_topology(machine, launch, expected):
    machine(cores=2)
    nnodes, nproc, batch, global_batch = launch
    resolved = topology(f"launch.nnodes={nnodes}", f"launch.nproc_per_node={nproc}", f"train.batch_size={batch}",
                        f"train.global_batch_size={global_batch}")
    assert (resolved.micro_batch_size, resolved.accumulation) == expected
    assert resolved.micro_batch_size * resolved.accumulation * resolved.world_size == global_batch


def test_a_global_batch_the_processes_cannot_share_names_the_key(machine):
    machine(cores=2)
    with pytest.raises(ConfigError, match="'train.global_batch_size'.*multiple of the world size.*= 4.*got 34"):
        topology("launch.nnodes=2", "launch.nproc_per_node=2", "train.global_batch_size=34")


def test_a_micro_batch_that_does_not_divide_names_the_key(machine):
    machine(cores=2)
    with pytest.raises(ConfigError, match="'train.batch_size': 5 does not divide the 16 samples"):
        topology("launch.nproc_per_node=2", "train.global_batch_size=32", "train.batch_size=5")
