"""`dvc push` / `dvc pull` of a pipeline output through a `gs://` remote (dvc-gs) on the GCS emulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.services import GcsEmulator, list_bucket

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
REMOTE_SCRIPT = REPO_ROOT / "infra" / "dvc-remote.sh"
STAGE_SCRIPT = """\
import os
os.makedirs("out", exist_ok=True)
open("out/weights.bin", "wb").write(bytes(range(256)) * 64)
open("out/notes.txt", "w").write("tiny pipeline output\\n")
"""


def _tool_env() -> dict[str, str]:
    env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The remote's endpointurl, not this variable, must be what points dvc at the emulator.
    env.pop("STORAGE_EMULATOR_HOST", None)
    return env


def _run(cwd: Path, env: dict[str, str], *argv: str) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path, gcs_bucket_emulator: GcsEmulator) -> Path:
    """A git + DVC repo whose one stage wrote `out/`, committed."""
    env = _tool_env()
    project = tmp_path / "repo"
    project.mkdir()
    (project / "make_out.py").write_text(STAGE_SCRIPT)
    _run(project, env, "git", "init", "-q")
    _run(project, env, "dvc", "init", "-q")
    _run(project, env, "dvc", "stage", "add", "-q", "-n", "make", "-d", "make_out.py", "-o", "out",
         f"{sys.executable} make_out.py")
    _run(project, env, "dvc", "repro", "-q")
    _run(project, env, "git", "add", "-A")
    _run(project, env, "git", "-c", "user.name=test", "-c", "user.email=test@localhost",
         "commit", "-qm", "pipeline")
    return project


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


def test_push_and_pull_round_trip_through_the_bucket(repo: Path, gcs_bucket_emulator: GcsEmulator) -> None:
    env = _tool_env()
    remote_url = f"gs://{gcs_bucket_emulator.bucket}/dvcstore"
    _run(repo, env, "bash", str(REMOTE_SCRIPT), remote_url, "--endpoint", gcs_bucket_emulator.endpoint,
         "--anonymous", "--project", "test")
    committed = (repo / ".dvc" / "config").read_text()
    assert "gs://" not in committed and "endpointurl" not in committed
    local = (repo / ".dvc" / "config.local").read_text()
    assert remote_url in local and gcs_bucket_emulator.endpoint in local
    assert "allow_anonymous_login = true" in local and "projectname = test" in local
    assert ".dvc/config.local" not in _run(repo, env, "git", "status", "--porcelain", "--ignored=no")

    expected = _snapshot(repo / "out")
    _run(repo, env, "dvc", "push")
    assert list_bucket(gcs_bucket_emulator.endpoint, gcs_bucket_emulator.bucket, "dvcstore/")

    shutil.rmtree(repo / "out")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(repo, env, "dvc", "pull")
    assert _snapshot(repo / "out") == expected
    assert "in sync" in _run(repo, env, "dvc", "status", "--cloud")
