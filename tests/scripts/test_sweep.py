"""scripts/sweep.sh: every queued arm names valid params (checked by the real config loader), with a
fake `dvc` that records what the script asks of it."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from cybulde.config.loader import load_config
from tests.helpers.script_module import REPO

FAKE_DVC = """#!/bin/sh
echo "$@" >> "$DVC_CALLS"
"""


def queued_arms(tmp_path, sweep: str) -> dict[str, list[str]]:
    """{experiment name: its -S overrides} for `scripts/sweep.sh sweep`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    calls = tmp_path / f"{sweep}.calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_CALLS": str(calls)}
    subprocess.run([str(REPO / "scripts/sweep.sh"), sweep], env=env, check=True, capture_output=True)
    lines = [shlex.split(line) for line in calls.read_text().splitlines()]
    assert lines[-1] == ["exp", "run", "--run-all", "--jobs", "1"]  # queued first, then run one at a time
    arms = {}
    for words in lines:
        if words[:3] == ["exp", "run", "--queue"]:
            name = words[words.index("--name") + 1]
            assert name not in arms, name
            arms[name] = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    return arms


# The training options of the runs behind results/sweep, results/seeds and results/behaviour.
MEASURED_OPTIONS = {"train.dropout_masks": "torch", "train.embedding_updates": "dense",
                    "train.hidden_states": "float32"}


@pytest.mark.parametrize("sweep", ["offensive", "seeds", "davidson", "hate", "seeds-all"])
def test_every_arm_is_a_valid_configuration(tmp_path, sweep):
    arms = queued_arms(tmp_path, sweep)
    assert arms
    for overrides in arms.values():
        load_config(REPO / "params.yaml", overrides)  # raises ConfigError on a misspelt key or a bad value


@pytest.mark.parametrize("sweep", ["offensive", "seeds", "davidson", "hate", "seeds-all"])
def test_every_arm_keeps_the_training_options_the_results_were_measured_with(tmp_path, sweep):
    for name, overrides in queued_arms(tmp_path, sweep).items():
        settings = dict(override.split("=", 1) for override in overrides)
        assert settings.items() >= MEASURED_OPTIONS.items(), name


def test_the_offensive_arms_vary_each_factor_of_the_recipe_around_the_default(tmp_path):
    """Each arm changes the default recipe (params.yaml) in the factors its name says, and together they
    cover the factors the recipe was chosen over."""
    defaults = load_config(REPO / "params.yaml")
    settings = {name: {key: value for key, value in (override.split("=", 1) for override in overrides)
                       if key not in MEASURED_OPTIONS}
                for name, overrides in queued_arms(tmp_path, "offensive").items()}
    assert (defaults.train.epochs, defaults.train.lr, defaults.model.pooling.value,
            defaults.train.freeze_embeddings) == (2, 1e-4, "pooler", False)
    assert {values.get("model.pooling") for values in settings.values()} == {None, "mean", "cls"}
    assert {values.get("train.epochs") for values in settings.values()} == {None, "1", "3"}
    assert {values.get("train.lr") for values in settings.values()} == {None, "5e-5"}
    assert {values.get("train.warmup_ratio") for values in settings.values()} == {None, "0.0"}
    assert any(float(values.get("train.ema_decay", 0)) > 0 for values in settings.values())
    assert any(values.get("train.select_on") == "loss" for values in settings.values())
    assert settings["off-previous-default"] == {"train.epochs": "1", "train.freeze_embeddings": "true",
                                                "model.pooling": "mean"}
    davidson = {name: " ".join(overrides) for name, overrides in queued_arms(tmp_path, "davidson").items()}
    assert all("data.dataset=davidson2017" in arm for arm in davidson.values())
    assert any("train.class_weights=true" in arm for arm in davidson.values())
    assert any("train.loss=focal" in arm for arm in davidson.values())
