"""benchmarks/time_to_quality.py: its pieces (data cap, HF budget callback, summary) and a tiny real run."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers.script_module import REPO, load_script


@pytest.fixture(scope="module")
def ttq():
    return load_script("benchmarks/time_to_quality.py")


def test_capped_copy_keeps_a_sample_and_a_manifest_that_matches_it(ttq, published, tmp_path):
    from cybulde.registry.manifest import Manifest, verify_files
    from cybulde.registry.splits import read_split_columns

    capped = ttq.capped_copy(published, 25, tmp_path / "capped")
    manifest = Manifest.load(capped)
    verify_files(capped)  # every file's sha256 as the manifest says
    for split, original_rows in {"train": 80, "validation": 30, "test": 30}.items():
        table = pq.read_table(capped / f"{split}.parquet").to_pydict()
        source = read_split_columns(published, split, columns=("id",))
        assert len(table["id"]) == 25 == manifest.splits[split].rows < original_rows
        assert set(table["id"]) <= set(source["id"])
        assert [source["id"].index(row) for row in table["id"]] == sorted(source["id"].index(row) for row in table["id"])
        assert manifest.splits[split].label_counts == {"not-offensive": table["label"].count(0),
                                                       "offensive": table["label"].count(1)}


def test_summary_is_the_mean_and_sample_std_per_system(ttq):
    runs = [{"system": "ours", "train_s": 10.0, "samples_per_s": 30.0, "val_macro_f1": 0.7, "test_macro_f1": 0.80,
             "stopped_early": False},
            {"system": "ours", "train_s": 14.0, "samples_per_s": 34.0, "val_macro_f1": 0.8, "test_macro_f1": 0.84,
             "stopped_early": True},
            {"system": "hf", "train_s": 20.0, "samples_per_s": 20.0, "val_macro_f1": 0.6, "test_macro_f1": 0.7,
             "stopped_early": False}]
    ours, hf = ttq.summarize(runs, ["ours", "hf"])
    # By hand: means 12, 32, 0.75, 0.82; sample std of (10, 14) = sqrt(8) = 2.828, of (0.80, 0.84) = 0.02828.
    assert ours["train_s"] == pytest.approx(12.0) and ours["samples_per_s"] == pytest.approx(32.0)
    assert ours["test_macro_f1"] == pytest.approx(0.82) and ours["test_macro_f1_std"] == pytest.approx(0.028284, abs=1e-6)
    assert ours["train_s_std"] == pytest.approx(2.828427, abs=1e-6) and ours["stopped_early"] == 1
    assert hf["runs"] == 1 and hf["test_macro_f1_std"] == 0.0


def test_the_hf_callback_stops_at_the_budget_and_keeps_the_best_weights(ttq):
    import torch

    scores = iter([0.5, 0.7, 0.6])
    model = torch.nn.Linear(2, 1)
    callback = ttq.budget_and_selection(budget_s=0.0, train_rows=40, validation_macro_f1=lambda _: next(scores))
    state, control = SimpleNamespace(global_step=1, max_steps=4, epoch=0.5), SimpleNamespace(should_training_stop=False)
    callback.on_train_begin(None, state, control)
    callback.on_step_begin(None, state, control)
    callback.on_step_end(None, state, control)
    assert control.should_training_stop and callback.stopped_early  # 1 of 4 steps when the budget ran out
    kept = []
    for epoch in (0.5, 1.0, 1.5):
        state.epoch = epoch
        with torch.no_grad():
            model.weight.add_(1.0)
        kept.append(model.weight.detach().clone())
        callback.on_epoch_end(None, state, control, model=model)
    best_f1, evaluation, weights = callback.best
    assert (best_f1, evaluation) == (0.7, 2) and torch.equal(weights["weight"], kept[1])
    assert callback.samples == 1.5 * 40 and callback.train_s >= 0


def test_ours_takes_the_overrides_then_the_benchmark_settings(ttq, published, tmp_path):
    args = ttq.parse_args(["--budget-s", "42", "-S", "train.epochs=2", "-S", "train.seed=99"])
    cfg = ttq.ours_config(args, published, 3, tmp_path)
    assert cfg.train.epochs == 2 and cfg.train.seed == 3 and cfg.train.max_time_s == 42.0
    assert cfg.data.fetched_dir == str(published) and cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.slow
def test_a_tiny_run_reports_both_systems_within_the_budget(published, tmp_path):
    out = tmp_path / "result.json"
    command = [sys.executable, str(REPO / "benchmarks/time_to_quality.py"), "--data-dir", str(published),
               "--budget-s", "20", "--seeds", "1", "--max-rows", "40", "--json", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=540)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    result = json.loads(out.read_text())
    runs = {run["system"]: run for run in result["runs"]}
    assert set(runs) == {"ours", "hf"} and {run["seed"] for run in result["runs"]} == {0}
    # Rows trained: ours params.yaml's epochs of 40, hf 2 epochs of 40, unless the budget cut them short.
    ours_epochs = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["train"]["epochs"]
    for system, rows_planned in (("ours", 40 * ours_epochs), ("hf", 80)):
        run = runs[system]
        assert 0 < run["train_s"] <= 20 + 10  # the budget, plus at most the step that crossed it
        assert 0 <= run["val_macro_f1"] <= 1 and 0 <= run["test_macro_f1"] <= 1
        trained = run["samples_per_s"] * run["train_s"]
        assert trained < rows_planned if run["stopped_early"] else trained == pytest.approx(rows_planned)
    for row in result["summary"]:  # one seed: the mean is that seed's figure
        assert row["test_macro_f1"] == pytest.approx(runs[row["system"]]["test_macro_f1"])
    machine = result["machine"]
    assert machine["train_rows"] == 40 and machine["batch_size"] == 32 and isinstance(machine["native_bf16"], bool)
    for text in ("native bf16:", "ours        0", "hf          0", "ours     mean", "test F1"):
        assert text in completed.stdout
