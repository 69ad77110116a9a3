"""What infra/tracking-server keeps secret without services: the store URI's password in start.sh's
log line (the real script, a fake `mlflow`), and the `.env` file that holds the database password."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cybulde.config.paths import redact_uri

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "tracking-server" / "start.sh"

# (store URI, what must not be printed); every password character a raw URI can carry
CRAFTED = [
    ("postgresql+psycopg2://mlflow:pa@ss@db:5432/mlflow", ["pa@ss", "ss@db"]),
    ("postgresql+psycopg2://mlflow:p:a/s%40s@db:5432/mlflow", ["p:a", "a/s", "%40s"]),
    ("postgresql+psycopg2://mlflow:p@a:s/s%@d@db:5432/mlflow", ["p@a", "s/s", "%@d"]),
    ("postgresql+psycopg2://mlflow@db:5432/mlflow?password=qu3ry&sslmode=require", ["qu3ry"]),
    ("postgresql+psycopg2://db:5432/mlflow?user=mlflow&PASSWORD=qu3ry&x=1", ["qu3ry"]),
    ("postgresql+psycopg2://u:pw1@db/mlflow?sslpassword=pw2&options=-c%20a&password=p&w;d3", ["pw1", "pw2", "p&w", "w;d3"]),
    ("postgresql+psycopg2://t0ken@db/mlflow", ["t0ken"]),
]


@pytest.fixture
def fake_mlflow(tmp_path: Path) -> Path:
    binary = tmp_path / "mlflow"
    binary.write_text("#!/bin/bash\nexit 0\n")
    binary.chmod(0o755)
    return binary


def _start(fake_mlflow: Path, store_uri: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_"))}
    # Authentication on: the auth app's database (the same store) is printed redacted too.
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={**clean, "MLFLOW_BIN": str(fake_mlflow), "MLFLOW_BACKEND_STORE_URI": store_uri,
                               "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/art", "MLFLOW_AUTH_ADMIN_PASSWORD": "adm1n",
                               "TMPDIR": str(fake_mlflow.parent)})


@pytest.mark.parametrize("store_uri, secrets", CRAFTED)
def test_start_sh_prints_the_store_without_its_passwords(fake_mlflow: Path, store_uri: str,
                                                         secrets: list[str]) -> None:
    result = _start(fake_mlflow, store_uri)
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    for secret in secrets:
        assert secret not in printed
    # the script and the package redact alike, and the server stays named
    assert f"store {redact_uri(store_uri)}, artifacts gs://b/art" in result.stdout
    assert f"basic-auth (users in {redact_uri(store_uri)}, default permission READ)" in result.stdout
    assert "db" in redact_uri(store_uri)


def test_libpq_variables_with_any_password_character_stay_hidden(tmp_path: Path, fake_mlflow: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_"))}
    password = "p@ss:w/rd%41?password=x&y#z"
    result = subprocess.run(["bash", str(SCRIPT), "--no-auth"], capture_output=True, text=True, timeout=30,
                            env={**clean, "MLFLOW_BIN": str(fake_mlflow), "PGHOST": "db", "PGUSER": "mlflow",
                                 "PGPASSWORD": password, "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/art"})
    assert result.returncode == 0, result.stderr
    assert "store postgresql+psycopg2://mlflow:***@db:5432/mlflow," in result.stdout
    for fragment in ("p@ss", "w/rd", "%41", "%40", "rd%25"):
        assert fragment not in result.stdout + result.stderr


@pytest.mark.parametrize("path", ["infra/tracking-server/.env", ".env", "infra/tracking-server/prod.env",
                                  "src/cybulde/.env", ".env.local"])
def test_env_files_are_ignored_by_git(path: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--quiet", "--no-index", path])
    assert result.returncode == 0, f"{path} is not git-ignored"


def test_an_env_example_may_be_committed() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--quiet", "--no-index",
                             "infra/tracking-server/.env.example"])
    assert result.returncode == 1
