import random

import numpy as np
import pytest
import torch

from cybulde.training.determinism import seed_everything


@pytest.fixture
def restore_torch_flags():
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seeding_twice_repeats_every_generator(restore_torch_flags):
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


def test_deterministic_kernels_without_filling_new_memory(restore_torch_flags):
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    # the NaN fill of every new tensor is a debugging aid that slowed CPU training by 3-20%
    assert torch.utils.deterministic.fill_uninitialized_memory is False
