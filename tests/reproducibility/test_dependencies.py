"""The dependency check on small synthetic DVC projects, and on this repository's dvc.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cybulde.config.access import RECORD_ENV
from cybulde.reproducibility.dependencies import (
    HARMLESS_MODULES,
    check_dependencies,
    entry_scripts,
    read_stages,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def dvc_project(root: Path, stages: dict, params: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".dvc").is_dir():
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params or {"paths": {"data": "data/in"}}), encoding="utf-8")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False), encoding="utf-8")
    return root


@pytest.fixture
def package_project(tmp_path: Path) -> Path:
    """`stages/run.py` -> pkg.core, which imports pkg.helpers inside a function (relative import),
    pkg.typing_only under TYPE_CHECKING, and the allowlisted pkg.logs."""
    root = tmp_path / "project"
    write(root / "src/pkg/__init__.py", '"""An inert package: a docstring and imports only."""\n__all__ = []\n')
    write(root / "src/pkg/core.py", """
        from typing import TYPE_CHECKING

        from pkg import logs

        if TYPE_CHECKING:
            from pkg.typing_only import Hint


        def work():
            from . import helpers

            return helpers.value()
        """)
    write(root / "src/pkg/helpers.py", "def value():\n    return 1\n")
    write(root / "src/pkg/typing_only.py", "Hint = int\n")
    write(root / "src/pkg/logs.py", "import logging\n")
    write(root / "stages/run.py", "import json\n\nfrom pkg.core import work\n\nprint(json.dumps(work()))\n")
    return root


def run_stage(deps: list[str]) -> dict:
    return {"run": {"cmd": "python stages/run.py", "deps": deps, "outs": ["out.json"]}}


def test_a_covering_folder_and_the_allowlist_pass(package_project: Path) -> None:
    dvc_project(package_project, run_stage(["stages/run.py", "src/pkg/core.py", "src/pkg/helpers.py"]))
    assert check_dependencies(package_project, harmless={"pkg.logs": "logging only"}).problems == []
    dvc_project(package_project, run_stage(["stages/run.py", "src/pkg"]))
    assert check_dependencies(package_project, harmless={}).problems == []


def test_an_undeclared_module_fails_with_its_import_chain_and_the_fix(package_project: Path) -> None:
    dvc_project(package_project, run_stage(["stages/run.py", "src/pkg/core.py"]))
    problems = check_dependencies(package_project, harmless={"pkg.logs": "logging only"}).problems
    assert problems == [
        "stage 'run' imports pkg.helpers (stages/run.py -> pkg.core -> pkg.helpers) but its deps do not cover "
        "src/pkg/helpers.py: add `- src/pkg/helpers.py` (or a folder above it) to stages.run.deps in dvc.yaml; "
        "only if it cannot change the stage's outputs, add 'pkg.helpers' with the reason to HARMLESS_MODULES "
        "in src/cybulde/reproducibility/dependencies.py"]
    # Without the allowlist entry, the logging module must be declared too.
    names = [problem.split()[3] for problem in check_dependencies(package_project, harmless={}).problems]
    assert names == ["pkg.logs", "pkg.helpers"]


def test_an_init_that_runs_code_needs_a_dep(package_project: Path) -> None:
    write(package_project / "src/pkg/__init__.py", "import os\n\nMODE = os.environ.get('MODE', 'a')\n")
    dvc_project(package_project, run_stage(["stages/run.py", "src/pkg/core.py", "src/pkg/helpers.py"]))
    problems = check_dependencies(package_project, harmless={"pkg.logs": "logging only"}).problems
    assert [problem.split()[3] for problem in problems] == ["pkg"]


def test_templated_deps_and_module_entry_points_are_resolved(package_project: Path) -> None:
    stages = {"run": {"cmd": "torchrun --nproc_per_node=2 stages/run.py && python -m pkg.core",
                      "deps": ["${paths.data}", "stages/run.py", "src/pkg"], "outs": ["out.json"]}}
    dvc_project(package_project, stages, {"paths": {"data": "data/in"}})
    (stage,) = read_stages(package_project)
    assert stage.deps == ("data/in", "stages/run.py", "src/pkg")
    assert entry_scripts(stage.cmd, package_project) == ["stages/run.py", "src/pkg/core.py"]


READER = """
import sys

from cybulde.config.loader import load_config
from cybulde.tracking.client import configure_http
from cybulde.training.distributed import LaunchEnv, threads_per_rank

cfg = load_config()
print(cfg.train.lr, cfg.data.fetched_dir)                # read by the stage script
threads_per_rank(cfg, LaunchEnv(1, 0, 0, 1, False))      # read by a project module it calls
configure_http(cfg)                                       # read by MLflow's client setup: cannot change outputs
"""


def reader_project(tmp_path: Path, params: list[str]) -> Path:
    root = dvc_project(tmp_path / "reader", {"read": {"cmd": "python stages/read.py", "deps": ["stages/read.py"],
                                                      "params": params}})
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    write(root / "stages/read.py", READER)
    return root


def repro_recording(root: Path, records: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", RECORD_ENV: str(records), "HOME": str(root)}
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=env, check=True, timeout=300,
                   capture_output=True)


@pytest.mark.slow
def test_an_undeclared_param_read_fails_and_declaring_it_passes(tmp_path: Path) -> None:
    root = reader_project(tmp_path, ["train.lr"])
    repro_recording(root, tmp_path / "reads")
    # cybulde is installed, not part of this project, so only param problems can arise.
    report = check_dependencies(root, tmp_path / "reads")
    assert report.params_unchecked == []
    assert report.problems == [
        "stage 'read' reads param data.fetched_dir (in __main__) but does not declare it: add `- data.fetched_dir` "
        "(or its section `- data`) to stages.read.params in dvc.yaml",
        "stage 'read' reads param launch.threads_per_rank (in cybulde.training.distributed) but does not declare it: "
        "add `- launch.threads_per_rank` (or its section `- launch`) to stages.read.params in dvc.yaml"]

    fixed = yaml.safe_load((root / "dvc.yaml").read_text())
    fixed["stages"]["read"]["params"] = ["train.lr", "data.fetched_dir", "launch"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(fixed))
    report = check_dependencies(root, tmp_path / "reads")
    assert report.problems == []  # mlflow.http_*, read by cybulde.tracking, need no declaration
    assert "cybulde.tracking" in HARMLESS_MODULES


def test_a_stage_without_recorded_reads_is_reported_unchecked(tmp_path: Path) -> None:
    root = reader_project(tmp_path, ["train"])
    (tmp_path / "reads").mkdir()
    report = check_dependencies(root, tmp_path / "reads")
    assert report.params_unchecked == ["read"] and report.problems == []


def test_this_repository_declares_every_imported_module() -> None:
    """The static half on the real dvc.yaml; the recorded params of a real run: tests/e2e."""
    report = check_dependencies(REPO_ROOT)
    assert report.problems == []
    assert {stage.name for stage in read_stages(REPO_ROOT)} >= {"fetch", "baseline", "train", "validate", "test"}
