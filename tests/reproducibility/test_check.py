"""The reproducibility check must pass on the committed state and fail when that state is stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cybulde.reproducibility.check import ReproError, check_lock, check_metrics, copy_project, set_params
from tests.helpers.tiny_project import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(REPO_ROOT, tmp_path / "project")


def test_committed_state_passes(project: Path) -> None:
    check_lock(project)
    check_metrics(project)


def test_editing_stage_code_without_rerunning_fails(project: Path) -> None:
    script = project / "stages/validate.py"
    script.write_text(script.read_text() + "\n# an edit the lock does not know about\n")
    with pytest.raises(ReproError, match="validate"):
        check_lock(project)


def test_changing_a_param_without_rerunning_fails(project: Path) -> None:
    set_params(project / "params.yaml", ["train.lr=0.001"])
    with pytest.raises(ReproError, match="train"):
        check_lock(project)


def test_metrics_that_do_not_match_the_lock_fail(project: Path) -> None:
    path = project / "metrics/test.json"
    metrics = json.loads(path.read_text())
    metrics["macro_f1"] = 0.99
    path.write_text(json.dumps(metrics))
    with pytest.raises(ReproError, match="metrics/test.json"):
        check_metrics(project)


def test_the_dependency_step_names_an_undeclared_module(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cybulde.reproducibility.check import main

    assert main(["deps", "--root", str(project)]) == 0
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("      - src/cybulde/text/cleaning.py\n", "", 1))
    assert main(["deps", "--root", str(project)]) == 1
    error = capsys.readouterr().err
    assert "stage 'baseline' imports cybulde.text.cleaning" in error
    assert "add `- src/cybulde/text/cleaning.py`" in error and "stages.baseline.deps" in error
