import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cybulde.config.loader import load_config, to_flat_dict
from cybulde.config.presets import SCRATCH, TINY, as_overrides, override_value
from cybulde.config.topology import resolve_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_PARAMS = REPO_ROOT / "params.yaml"


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


def test_the_readme_applies_each_preset_with_its_exact_overrides() -> None:
    """The README's `dvc exp run` lines for the presets, run by bash with `dvc` standing in as an echo,
    pass exactly the preset's `-S` overrides."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration and presets", 1)[1].split("\n## ", 1)[0]
    block = next(code for code in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL) if "dvc exp run" in code)
    assert re.findall(r"# (SCRATCH|TINY)\b", block) == ["SCRATCH", "TINY"], block
    src = str(REPO_ROOT / "src")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    shell = subprocess.run(["bash", "-c", 'dvc() { printf "%s\\n" "$@" ---; }\n' + block], env=env, check=True,
                           capture_output=True, text=True, timeout=60).stdout
    passed = [command.split() for command in shell.split("---") if command.strip()]
    for preset, arguments in zip((SCRATCH, TINY), passed, strict=True):
        assert arguments == ["exp", "run", *(word for override in as_overrides(preset) for word in ("-S", override))]
