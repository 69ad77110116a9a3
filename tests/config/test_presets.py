from pathlib import Path

import pytest
import yaml

from cybulde.config.loader import load_config, to_flat_dict
from cybulde.config.presets import SCRATCH, TINY, as_overrides, override_value
from cybulde.config.topology import resolve_topology

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.mark.parametrize("preset", [SCRATCH, TINY], ids=["scratch", "tiny"])
def test_a_preset_loads_onto_the_repo_params_with_exactly_its_values(preset) -> None:
    flat = to_flat_dict(load_config(REPO_PARAMS, as_overrides(preset)))
    assert {key: flat[key] for key in preset} == preset


def test_tiny_is_a_scratch_model_that_learns_its_embeddings() -> None:
    assert SCRATCH.items() <= TINY.items()
    topology = resolve_topology(load_config(REPO_PARAMS, as_overrides(TINY)))
    assert (topology.world_size, topology.micro_batch_size, topology.accumulation) == (2, 8, 1)


@pytest.mark.parametrize(("value", "text"), [(False, "false"), (True, "true"), (1e-3, "0.001"),
                                             (1e-05, "1.0e-05"), (2.5e10, "25000000000.0"), (8, "8"),
                                             ("scratch", "scratch")])
def test_override_values_read_back_as_the_same_yaml_value(value, text) -> None:
    assert override_value(value) == text
    assert yaml.safe_load(text) == value  # what `dvc exp run -S` and repro_check.set_params do
