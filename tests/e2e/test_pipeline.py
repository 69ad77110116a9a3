"""The real pipeline (`dvc repro`, torchrun with 2 DDP ranks) on a tiny config, end to end."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from cybulde.config.access import RECORD_ENV
from cybulde.reproducibility.check import tool_env
from cybulde.reproducibility.dependencies import check_dependencies
from cybulde.tracking.client import (
    DVC_EXPERIMENT_TAG,
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    MODEL_TRAINING_KIND,
    SOURCE_NAME_TAG,
)
from tests.helpers.tiny_project import REPO_ROOT, git, make_tiny_project, run

pytestmark = pytest.mark.slow


def _runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cybulde")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("e2e")
    tracking_uri = f"sqlite:///{base / 'mlflow.db'}"
    project = make_tiny_project(base, tracking_uri)
    # Each stage records the params it reads (base/param-reads) for the dependency check.
    run(project, "dvc", "repro", env={**tool_env(), RECORD_ENV: str(base / "param-reads")})
    return project, tracking_uri


def test_every_stage_writes_its_outputs(pipeline: tuple[Path, str]) -> None:
    project, _ = pipeline
    for name in ("model/model.safetensors", "model/config.json", "metrics/train.json",
                 "predictions/validation.parquet", "predictions/test.parquet",
                 "plots/validation/confusion.json", "plots/test/roc.json", "metrics/baseline/details.json"):
        assert (project / name).is_file(), name
    for split in ("validation", "test"):
        metrics = json.loads((project / f"metrics/{split}.json").read_text())
        assert set(metrics) == {"loss", "accuracy", "macro_f1", "roc_auc", "threshold", "num_examples"}
        per_class = json.loads((project / f"metrics/{split}_per_class.json").read_text())
        assert set(per_class) == {"not_offensive", "offensive"}
        # The generated classes are separable by their words: a trained model must find that.
        assert metrics["macro_f1"] > 0.8, metrics
        baseline = json.loads((project / f"metrics/baseline/{split}.json").read_text())
        assert set(baseline) == set(metrics)  # the same columns in `dvc metrics show`


def test_every_stage_declares_the_modules_it_imports_and_the_params_it_read(pipeline: tuple[Path, str]) -> None:
    project, _ = pipeline
    report = check_dependencies(project, project.parent / "param-reads")
    assert report.problems == [] and report.params_unchecked == []


def test_one_finished_run_carries_the_locked_data_hash(pipeline: tuple[Path, str]) -> None:
    project, tracking_uri = pipeline
    runs = _runs(tracking_uri)
    assert len(runs) == 1
    run_ = runs[0]
    assert run_.info.status == "FINISHED"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    data_md5 = lock["stages"]["fetch"]["outs"][0]["md5"]
    assert run_.data.tags["data.dvc_md5"] == data_md5
    assert [d.dataset.digest for d in run_.inputs.dataset_inputs] == [data_md5]
    assert run_.data.params["model.head"] == "softmax"
    commit = run_.data.tags["mlflow.source.git.commit"]
    # Not a DVC experiment: named from what it is, by a name no seed fixes.
    assert re.fullmatch(rf"tiny-v1-softmax-{commit[:7]}-\d{{1,3}}", run_.info.run_name), run_.info.run_name
    assert run_.data.tags[SOURCE_NAME_TAG] == "stages/train.py" and DVC_EXPERIMENT_TAG not in run_.data.tags
    experiment = MlflowClient(tracking_uri).get_experiment(run_.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI opens on the runs
    assert run_.data.tags["world_size"] == "2"  # both DDP ranks, logged once by rank 0
    metric_keys = set(run_.data.metrics)
    assert {"validation/macro_f1", "test/macro_f1", "test/roc_auc"} <= metric_keys
    assert any(key.startswith("train/loss") for key in metric_keys)
    # In-training values are marked as such, apart from the validate stage's `validation/...`.
    assert {"train/val_macro_f1", "train/val_loss", "train/epoch"} <= metric_keys
    assert not any(key.startswith("val/") for key in metric_keys)
    epochs = MlflowClient(tracking_uri).get_metric_history(run_.info.run_id, "train/epoch")
    assert max(point.value for point in epochs) == 6  # 1-based: train.epochs=6
    artifacts = {a.path for a in MlflowClient(tracking_uri).list_artifacts(run_.info.run_id)}
    assert {"metrics", "plots", "predictions"} <= artifacts
    plots = {a.path for a in MlflowClient(tracking_uri).list_artifacts(run_.info.run_id, "plots/test")}
    assert {f"plots/test/{name}" for name in ("roc.json", "roc_curve.png", "pr.json", "pr_curve.png",
                                              "reliability.json", "reliability_diagram.png",
                                              "confusion_matrix.png")} <= plots


def test_a_run_stages_nothing_and_metrics_diff_compares_it_with_the_commit(pipeline: tuple[Path, str]) -> None:
    """The quick start's word on a run that differs from the committed one (here: the tiny pipeline's
    against the default's): git lists the outputs as modified, DVC staged none of them
    (core.autostage is off), and `dvc metrics diff` shows the differences metric by metric."""
    project, _ = pipeline
    assert git(project, "diff", "--cached", "--name-only") == ""
    modified = {line[3:] for line in git(project, "status", "--porcelain").splitlines()}
    assert {"dvc.lock", "metrics/validation.json", "metrics/test.json"} <= modified, modified
    diff = run(project, "dvc", "metrics", "diff")
    header = diff.splitlines()[0].split()
    assert header == ["Path", "Metric", "HEAD", "workspace", "Change"], diff
    assert "metrics/test.json" in diff and " macro_f1 " in diff, diff


def test_logged_model_scores_raw_text(pipeline: tuple[Path, str]) -> None:
    import mlflow
    import pandas as pd

    _, tracking_uri = pipeline
    mlflow.set_tracking_uri(tracking_uri)
    run_id = _runs(tracking_uri)[0].info.run_id
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    scored = model.predict(pd.DataFrame({"text": ["you idiot loser", "thanks lovely friend"]}))
    assert list(scored["label"]) == ["offensive", "not_offensive"]


def test_unchanged_rerun_creates_no_run(pipeline: tuple[Path, str]) -> None:
    project, tracking_uri = pipeline
    output = run(project, "dvc", "repro")
    assert "Running stage" not in output
    assert len(_runs(tracking_uri)) == 1


def test_experiment_with_sigmoid_head_is_a_new_run(pipeline: tuple[Path, str]) -> None:
    project, tracking_uri = pipeline
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline run", "--allow-empty")
    run(project, "dvc", "exp", "run", "-S", "model.head=sigmoid")
    runs = _runs(tracking_uri)
    assert len(runs) == 2
    first, newest = sorted(runs, key=lambda r: r.info.start_time)
    assert newest.data.params["model.head"] == "sigmoid"
    # The run carries the experiment's name, which `dvc exp show` lists too.
    assert newest.info.run_name == newest.data.tags[DVC_EXPERIMENT_TAG] != first.info.run_name
    assert newest.info.status == "FINISHED"
    metrics = json.loads((project / "metrics/validation.json").read_text())
    assert metrics["threshold"] is not None
    shown = json.loads(run(project, "dvc", "exp", "show", "--json"))
    assert "sigmoid" in json.dumps(shown)
    assert newest.info.run_name in _experiment_names(shown)


def _experiment_names(shown: list) -> set[str]:
    """The names of the experiments in `dvc exp show --json`."""
    return {exp.get("name") for baseline in shown for experiment in baseline.get("experiments") or []
            for exp in experiment.get("revs") or [] if exp.get("name")}


def test_queued_grid_runs_land_in_the_workspace_store(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued experiments run in temporary copies; the default store must still be the workspace's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = make_tiny_project(tmp_path, tracking_uri=None, extra_overrides=["train.epochs=1"])
    git(project, "commit", "-qam", "default store", "--allow-empty")
    run(project, "dvc", "exp", "run", "--queue", "-S", "model.head=softmax,sigmoid")
    run(project, "dvc", "exp", "run", "--run-all")
    store = f"sqlite:///{project / 'mlflow.db'}"
    heads = sorted(r.data.params["model.head"] for r in _runs(store))
    assert heads == ["sigmoid", "softmax"]
    assert all(r.info.status == "FINISHED" for r in _runs(store))
    # Two experiments, two run names: DVC's names for them.
    names = [r.info.run_name for r in _runs(store)]
    assert len(set(names)) == 2 and names == [r.data.tags[DVC_EXPERIMENT_TAG] for r in _runs(store)]
    assert set(names) <= _experiment_names(json.loads(run(project, "dvc", "exp", "show", "--json")))
    shown = run(project, "dvc", "exp", "show", "--no-pager", "--csv")
    assert shown.count("model.head") >= 1 and "sigmoid" in shown and "softmax" in shown


def readme_views(section: str = "## Experiments") -> list[str]:
    """The `dvc metrics show` / `dvc exp show` commands the README gives for a clean view."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(section, 1)[1].split("\n## ", 1)[0].replace("\\\n", " ")  # join continued lines
    return [line.strip() for line in body.splitlines() if re.match(r"\s*dvc (metrics|exp) show\b", line)]


def test_the_readme_views_fit_120_columns(pipeline: tuple[Path, str]) -> None:
    """After the experiments above: each README view prints whole columns (no "…") within 120 columns."""
    project, _ = pipeline
    views = readme_views()
    assert len(views) >= 2, views
    env = {**tool_env(), "COLUMNS": "120", "LINES": "50"}
    for view in views:
        output = run(project, *shlex.split(view, comments=True), env=env)
        lines = [line for line in output.splitlines() if line.strip()]
        assert "macro_f1" in output and len(lines) >= 2, (view, output)
        assert max(map(len, lines)) <= 120 and "…" not in output, (view, output)


def test_a_failing_stage_leaves_its_run_failed_with_the_reason(pipeline: tuple[Path, str]) -> None:
    """Last, as it fails the run of the workspace's model."""
    project, tracking_uri = pipeline
    stage = subprocess.run([sys.executable, "stages/validate.py", "data.fetched_dir=no/such/data"], cwd=project,
                           env=tool_env(), capture_output=True, text=True)
    assert stage.returncode != 0
    failed = max(_runs(tracking_uri), key=lambda r: r.info.start_time)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[FAILURE_TAG].startswith("stage 'validate' failed: "), failed.data.tags[FAILURE_TAG]
