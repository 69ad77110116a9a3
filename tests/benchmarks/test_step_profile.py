"""benchmarks/step_profile.py: a short real run on the tiny published data."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.script_module import REPO


@pytest.mark.parametrize(("updates", "masks", "states"), [("dense", "torch", "float32"), ("lazy", "packed", "bf16")])
def test_every_phase_of_the_step_is_timed_and_the_shares_add_up(published, updates, masks, states):
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/step_profile.py"), "--data-dir", str(published), "--steps", "2",
         "--warmup-steps", "1", "--profile-steps", "1", "--batch-size", "8", "--embedding-updates", updates,
         "--dropout-masks", masks, "--hidden-states", states, "--by-shape", "5"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    shares = dict(re.findall(r"^\s+(\w+)\s+[\d.]+ ms/step\s+([\d.]+)%$", completed.stdout, flags=re.M))
    assert set(shares) == {"forward", "backward", "clip", "optimizer", "zero_grad"}
    assert sum(map(float, shares.values())) == pytest.approx(100.0, abs=0.5)
    assert f"embedding_updates={updates} dropout_masks={masks} hidden_states={states}" in completed.stdout
    assert "Self CPU" in completed.stdout  # the profiler's operator table
    assert "Input Shapes" in completed.stdout  # and the same split by input shape
