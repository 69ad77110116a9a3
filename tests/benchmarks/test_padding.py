"""benchmarks/padding.py: its counts on the tiny published data, against the token ids by hand."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers.script_module import REPO


def test_real_tokens_are_the_stored_ids_and_shortest_first_pads_least(published):
    from cybulde.registry.splits import read_split_columns

    completed = subprocess.run([sys.executable, str(REPO / "benchmarks/padding.py"), "--data-dir", str(published),
                                "--batch-size", "8", "--eval-batch-size", "4", "--epochs", "2"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    counts = {name: (int(padded.replace(",", "")), int(real.replace(",", ""))) for name, padded, real in
              re.findall(r"^(.+?)\s+padded\s+([\d,]+)\s+real\s+([\d,]+)", completed.stdout, flags=re.M)}
    stored = {split: sum(map(len, read_split_columns(published, split, ("input_ids",))["input_ids"]))
              for split in ("train", "validation", "test")}
    assert counts["train, grouped by length"][1] == counts["train, not grouped by length"][1] == 2 * stored["train"]
    assert counts["train, grouped by length"][0] <= counts["train, not grouped by length"][0]
    for split in ("validation", "test"):
        file_order, shortest_first = counts[f"{split}, file order"], counts[f"{split}, shortest first"]
        assert file_order[1] == shortest_first[1] == stored[split]
        assert stored[split] <= shortest_first[0] <= file_order[0]
