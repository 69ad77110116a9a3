"""scripts/sweep.sh: every queued arm names valid params (checked by the real config loader), with a
fake `dvc` that records what the script asks of it."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from cybulde.config.loader import load_config
from tests.script_module import REPO

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


@pytest.mark.parametrize("sweep", ["recipe", "seeds", "datasets", "offensive", "davidson", "hate"])
def test_every_arm_is_a_valid_configuration(tmp_path, sweep):
    arms = queued_arms(tmp_path, sweep)
    assert arms
    for overrides in arms.values():
        load_config(REPO / "params.yaml", overrides)  # raises ConfigError on a misspelt key or a bad value


def test_the_time_to_quality_arms_cover_the_factors_of_issue_14(tmp_path):
    offensive = queued_arms(tmp_path, "offensive")
    settings = {name: dict(override.split("=", 1) for override in overrides) for name, overrides in offensive.items()}
    assert all(values["train.precision"] == "auto" for values in settings.values())
    assert {values.get("train.epochs") for values in settings.values()} == {"1", "2", "3"}
    assert {values.get("model.pooling", "mean") for values in settings.values()} == {"mean", "cls", "pooler"}
    assert {values.get("train.lr", "1e-4") for values in settings.values()} == {"1e-4", "5e-5"}
    assert any(values.get("train.freeze_embeddings") == "false" for values in settings.values())
    assert any(float(values.get("train.ema_decay", 0)) > 0 for values in settings.values())
    assert any(values.get("train.warmup_ratio") == "0.0" for values in settings.values())
    davidson = {name: " ".join(overrides) for name, overrides in queued_arms(tmp_path, "davidson").items()}
    assert any("train.class_weights=true" in arm for arm in davidson.values())
    assert any("train.loss=focal" in arm for arm in davidson.values())
    hate = " ".join(" ".join(overrides) for overrides in queued_arms(tmp_path, "hate").values())
    assert "data.dataset=tweeteval_hate_plus_offensive" in hate
