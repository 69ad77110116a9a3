"""RNG capture and restore, and the atomic checkpoint IO (cybulde.training.checkpoints)."""

import random

import numpy as np
import torch

from cybulde.training.checkpoints import AtomicCheckpointIO, capture_rng_state, restore_rng_state


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)], random.gauss(0, 1)


def test_restored_rng_states_repeat_the_same_draws(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)
    state = capture_rng_state()
    expected = draws()

    io = AtomicCheckpointIO()
    io.save_checkpoint({"rng": state}, tmp_path / "rng.ckpt")
    loaded = io.load_checkpoint(tmp_path / "rng.ckpt", weights_only=True)["rng"]  # plain tensors only
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(loaded)
    assert draws() == expected


def test_atomic_checkpoint_io_replaces_whole_files(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert int(io.load_checkpoint(path, weights_only=True)["step"]) == 2
    assert [entry.name for entry in path.parent.iterdir()] == ["last.ckpt"]
