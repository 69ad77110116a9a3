"""infra/tracking-server/start.sh, and the compose file that runs it, without services: what it hands to
`mlflow server`, and what it refuses."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "tracking-server" / "start.sh"
PASSWORD = "p@ss:w/rd %é"
ADMIN_PASSWORD = "adm1n-first-password"


@pytest.fixture
def fake_mlflow(tmp_path: Path) -> Path:
    """An `mlflow` that records its environment's store URI and its arguments."""
    binary = tmp_path / "mlflow"
    binary.write_text('#!/bin/bash\nprintf "%s\\n" "$MLFLOW_BACKEND_STORE_URI" "$MLFLOW_SERVER_ENABLE_JOB_EXECUTION" '
                      f'"${{PGPASSWORD:-unset}}" "$*" "${{MLFLOW_AUTH_CONFIG_PATH:-unset}}" > {tmp_path / "calls.txt"}\n')
    binary.chmod(0o755)
    return binary


def _start(fake_mlflow: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_"))}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**clean, "MLFLOW_BIN": str(fake_mlflow), "TMPDIR": str(fake_mlflow.parent),
                               "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, **env})


def _recorded(fake_mlflow: Path) -> list[str]:
    return (fake_mlflow.parent / "calls.txt").read_text().splitlines()


def test_libpq_variables_become_a_psycopg2_uri_off_the_command_line(fake_mlflow: Path) -> None:
    result = _start(fake_mlflow, {"PGHOST": "db", "PGPORT": "6543", "PGUSER": "ml flow", "PGPASSWORD": PASSWORD,
                                  "PGDATABASE": "runs", "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/art"},
                    "--port", "5000")
    assert result.returncode == 0, result.stderr
    store_uri, job_execution, pgpassword, argv, _ = _recorded(fake_mlflow)
    url = make_url(store_uri)
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == \
        ("postgresql+psycopg2", "ml flow", PASSWORD, "db", 6543, "runs")
    assert job_execution == "false"
    assert pgpassword == "unset"
    assert argv == ("server --app-name basic-auth --serve-artifacts --artifacts-destination gs://b/art --workers 1 "
                    "--port 5000")
    assert PASSWORD not in result.stdout + result.stderr
    assert "postgresql+psycopg2://ml%20flow:***@db:6543/runs" in result.stdout


def test_plain_postgresql_uri_gets_the_psycopg2_driver(fake_mlflow: Path) -> None:
    result = _start(fake_mlflow, {"MLFLOW_BACKEND_STORE_URI": "postgresql://u:secret@db/mlflow",
                                  "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/art"})
    assert result.returncode == 0, result.stderr
    assert _recorded(fake_mlflow)[0] == "postgresql+psycopg2://u:secret@db/mlflow"
    assert "secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("env, args, message", [
    ({"MLFLOW_ARTIFACTS_DESTINATION": "gs://b/a"}, [], "set MLFLOW_BACKEND_STORE_URI, or PGHOST"),
    ({"PGHOST": "db", "PGUSER": "u"}, [], "MLFLOW_ARTIFACTS_DESTINATION must be a gs://"),
    ({"MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db", "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/a"}, [],
     "must be a postgresql+psycopg2://"),
    ({"PGHOST": "db", "PGUSER": "u", "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/a"},
     ["--backend-store-uri", "postgresql://u:p@db/x"], "pass the store through MLFLOW_BACKEND_STORE_URI"),
])
def test_misconfigurations_are_refused(fake_mlflow: Path, env: dict, args: list, message: str) -> None:
    result = _start(fake_mlflow, env, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (fake_mlflow.parent / "calls.txt").exists()


def test_authentication_is_on_with_its_settings_in_a_private_file(fake_mlflow: Path) -> None:
    result = _start(fake_mlflow, {"PGHOST": "db", "PGUSER": "mlflow", "PGPASSWORD": "50%off",
                                  "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/art"})
    assert result.returncode == 0, result.stderr
    config_path = Path(_recorded(fake_mlflow)[4])
    assert config_path.stat().st_mode & 0o077 == 0 and config_path.parent.stat().st_mode & 0o077 == 0
    settings = configparser.ConfigParser()
    settings.read(config_path)
    assert settings["mlflow"]["default_permission"] == "READ"
    assert make_url(settings["mlflow"]["database_uri"]).password == "50%off"  # %% survives configparser
    assert ADMIN_PASSWORD not in config_path.read_text() + result.stdout + result.stderr
    assert "authentication basic-auth (users in postgresql+psycopg2://mlflow:***@db:5432/mlflow" in result.stdout


def test_authentication_needs_the_admins_first_password(fake_mlflow: Path) -> None:
    result = _start(fake_mlflow, {"PGHOST": "db", "PGUSER": "u", "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/a",
                                  "MLFLOW_AUTH_ADMIN_PASSWORD": ""})
    assert result.returncode == 2
    assert "authentication is on: set MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr
    assert not (fake_mlflow.parent / "calls.txt").exists()


def test_no_auth_is_explicit_and_loud(fake_mlflow: Path) -> None:
    result = _start(fake_mlflow, {"PGHOST": "db", "PGUSER": "u", "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/a",
                                  "MLFLOW_AUTH_ADMIN_PASSWORD": ""}, "--no-auth", "--port", "5000")
    assert result.returncode == 0, result.stderr
    assert "WARNING: --no-auth: this tracking server has NO authentication" in result.stderr
    assert "authentication OFF (--no-auth)" in result.stdout
    assert _recorded(fake_mlflow)[3] == "server --serve-artifacts --artifacts-destination gs://b/a --workers 1 --port 5000"
    assert _start(fake_mlflow, {"PGHOST": "db", "PGUSER": "u", "MLFLOW_ARTIFACTS_DESTINATION": "gs://b/a"},
                  "--app-name", "x").returncode == 2


def test_the_compose_stack_serves_with_authentication_behind_the_proxy() -> None:
    """docker-compose.yml: start.sh without --no-auth, no start without the admin's first password, only
    the proxy published beyond loopback."""
    compose = yaml.safe_load((SCRIPT.parent / "docker-compose.yml").read_text())
    mlflow, proxy = compose["services"]["mlflow"], compose["services"]["proxy"]
    assert mlflow["command"][:2] == ["bash", "/opt/tracking-server/start.sh"]
    assert not any("no-auth" in part or "app-name" in part for part in mlflow["command"])
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_AUTH_ADMIN_PASSWORD:?")
    assert mlflow["environment"]["MLFLOW_AUTH_DEFAULT_PERMISSION"] == "${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}"
    assert all(port.startswith("127.0.0.1:") for port in mlflow["ports"])
    assert proxy["environment"]["UPSTREAM"] == "mlflow:5000"
    assert proxy["environment"]["MAX_BODY_SIZE"] == "${MAX_BODY_SIZE:-10m}"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="nginx's workers run as nobody only when proxy.sh runs as root (runuser checks)")
def test_the_proxy_refuses_a_runtime_folder_its_workers_cannot_reach(tmp_path: Path) -> None:
    """Else every body or answer above nginx's buffers (16 KB) would be a 500: the workers write them there."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    pem = tmp_path / "unused.pem"
    pem.write_text("not read: the check comes first\n")
    env = {**os.environ, "TLS_CERTIFICATE": str(pem), "TLS_CERTIFICATE_KEY": str(pem), "NGINX_BIN": "/bin/true",
           "PROXY_RUNTIME_DIR": str(private / "runtime")}
    result = subprocess.run(["bash", str(SCRIPT.parent / "proxy.sh")], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr == (f"error: nginx's workers (user nobody) cannot reach {private / 'runtime'}: set "
                             "PROXY_RUNTIME_DIR to a folder whose parents others may enter\n")
