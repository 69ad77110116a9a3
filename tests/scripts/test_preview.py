"""scripts/preview.py (make preview) on a copy of the project: it names the changed params and the
stages an experiment would run, and leaves the workspace exactly as it was; and the Makefile's short
commands for the common views."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cybulde.reproducibility.check import copy_project, set_params
from tests.e2e.test_pipeline import readme_views

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (ignored ones too: .dvc/tmp, .run files) but .git, by content."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and ".git" not in path.relative_to(root).parts}


def preview(project: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "scripts/preview.py", *overrides], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(REPO_ROOT, tmp_path_factory.mktemp("preview") / "project")


def test_preview_lists_the_stages_and_changes_nothing(project: Path) -> None:
    before = snapshot(project)
    result = preview(project, "model.head=sigmoid")
    assert result.returncode == 0, result.stderr
    assert "model.head" in result.stdout and "softmax" in result.stdout and "sigmoid" in result.stdout
    for stage in ("train", "validate", "test"):  # the head changes the model and so everything after it
        assert f"would run {stage}: python stages/{stage}.py" in result.stdout, result.stdout
    assert snapshot(project) == before
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=project, check=True,
                            capture_output=True, text=True).stdout
    assert status == ""


def test_preview_refuses_what_a_stage_would_refuse(project: Path) -> None:
    result = preview(project, "model.hed=sigmoid")
    assert result.returncode == 2 and "model.hed" in result.stderr
    assert preview(project).returncode == 2  # no override: the usage


def test_make_experiments_runs_the_readme_view() -> None:
    dry = subprocess.run(["make", "-n", "experiments"], cwd=REPO_ROOT, check=True, capture_output=True,
                         text=True).stdout.replace("\\\n", " ")
    command = next(line for line in dry.splitlines() if line.startswith("dvc exp show"))
    assert " ".join(command.split()) in [" ".join(view.split()) for view in readme_views()]


def make(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make` in `project` with this interpreter's environment as the venv (never reinstalled)."""
    venv = sys.prefix
    return subprocess.run(["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", *args],
                          cwd=project, capture_output=True, text=True, timeout=120)


def test_make_params_diff_says_no_change_where_dvc_prints_nothing(tmp_path: Path) -> None:
    project = copy_project(REPO_ROOT, tmp_path / "project")
    clean = make(project, "params-diff")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip() == "params.yaml: no change against HEAD"
    set_params(project / "params.yaml", ["model.head=sigmoid"])
    changed = make(project, "params-diff")
    assert changed.returncode == 0, changed.stderr
    rows = [line.split() for line in changed.stdout.splitlines()]
    assert ["params.yaml", "model.head", "softmax", "sigmoid"] in rows, changed.stdout
    assert "no change" not in changed.stdout
