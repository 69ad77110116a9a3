"""Real services on loopback for integration tests: PostgreSQL, an MLflow tracking server and the
TLS proxy in front of it.

The GCS emulator is the session fixture `gcs_emulator` of tests/conftest.py; `GcsEmulator` and
`list_bucket` here describe and read it.

Each `start_*` function is a context manager that starts the service as a child process on a free
127.0.0.1 port, waits until it answers, yields a handle and stops it again. A service that fails to
start raises `ServiceError` with the tail of its log. Credentials travel through the environment
of the child process only, never on its command line.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.ports import free_port

STARTUP_TIMEOUT_S = 60.0
ARTIFACTS_PREFIX = "mlartifacts"  # where in the bucket the tracking server puts run artifacts
POSTGRES_SUPERUSER = "postgres"
MLFLOW_DATABASE = "mlflow"


class ServiceError(RuntimeError):
    """A service did not start or did not answer in time."""


def venv_binary(name: str) -> Path:
    """A console script installed beside the running interpreter (the project's virtual environment)."""
    return Path(sys.executable).parent / name


def _log_tail(log_path: Path, lines: int = 40) -> str:
    if not log_path.is_file():
        return "(no log)"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(ready: Callable[[], bool], what: str, log_path: Path,
               process: subprocess.Popen | None = None, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{what} exited with status {process.returncode}:\n{_log_tail(log_path)}")
        if ready():
            return
        time.sleep(0.2)
    raise ServiceError(f"{what} did not answer within {timeout_s:.0f} s:\n{_log_tail(log_path)}")


def http_ok(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    return probe


@contextlib.contextmanager
def background_process(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                       cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """`argv` in its own process group (servers fork workers), stopped with the whole group at exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                   cwd=cwd, start_new_session=True)
    try:
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- GCS (emulated) ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GcsEmulator:
    endpoint: str  # http://127.0.0.1:PORT, the value of STORAGE_EMULATOR_HOST
    bucket: str

    def environment(self) -> dict[str, str]:
        """What a client process needs to talk to the emulator instead of Google Cloud Storage."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def list_bucket(emulator_endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """Object name -> size of every object under `prefix`, read through the GCS JSON API client."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": emulator_endpoint})
    return {blob.name: int(blob.size or 0) for blob in client.list_blobs(bucket, prefix=prefix)}


# -- PostgreSQL ------------------------------------------------------------------------------------
def postgres_bin_dir() -> Path | None:
    """Debian's versioned server binaries (package `postgresql`), newest first; None if absent."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major_version(initdb_path: str) -> tuple[int, ...]:
    version = Path(initdb_path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _as_cluster_owner(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", POSTGRES_SUPERUSER, "--", *argv]


def _give_to_cluster_owner(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=POSTGRES_SUPERUSER, group=POSTGRES_SUPERUSER)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def libpq_environment(self) -> dict[str, str]:
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": self.database}

    def connect(self, database: str | None = None):  # noqa: ANN201 - psycopg2 connection
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=database or self.database)


def _initdb(bin_dir: Path, data_dir: Path, password: str, log_path: Path) -> None:
    password_file = data_dir.parent / "pwfile"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    _give_to_cluster_owner(password_file)
    try:
        argv = [str(bin_dir / "initdb"), "--pgdata", str(data_dir), "--username", POSTGRES_SUPERUSER,
                "--pwfile", str(password_file), "--auth", "scram-sha-256", "--encoding", "UTF8",
                "--locale", "C", "--no-sync"]
        with open(log_path, "ab") as log:
            subprocess.run(_as_cluster_owner(argv), stdout=log, stderr=subprocess.STDOUT, check=True)
    except subprocess.CalledProcessError as error:
        raise ServiceError(f"initdb failed ({error.returncode}):\n{_log_tail(log_path)}") from error
    finally:
        password_file.unlink(missing_ok=True)


def _pg_ctl(bin_dir: Path, data_dir: Path, log_path: Path, *args: str) -> None:
    argv = [str(bin_dir / "pg_ctl"), "--pgdata", str(data_dir), "--log", str(log_path), *args]
    result = subprocess.run(_as_cluster_owner(argv), capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"pg_ctl {args[0]} failed ({result.returncode}): {result.stderr.strip()}\n"
                           f"{_log_tail(log_path)}")


def _accepts_connections(server: Postgres) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            server.connect(database="postgres").close()
            return True
        except Exception:  # psycopg2.OperationalError while the server starts
            return False

    return probe


def create_database(server: Postgres, name: str) -> None:
    connection = server.connect(database="postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


@contextlib.contextmanager
def start_postgres(database: str = MLFLOW_DATABASE) -> Iterator[Postgres]:
    """A private cluster (initdb + pg_ctl) on 127.0.0.1 with a random password, deleted afterwards.

    The cluster lives in its own folder under the system temp dir: pytest's tmp_path is private
    to root, and the server runs as `postgres`.
    """
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServiceError("PostgreSQL server binaries not found (install Debian's `postgresql` package)")
    root = Path(tempfile.mkdtemp(prefix="cybulde-pg-"))
    root.chmod(0o755)
    data_dir, log_path = root / "data", root / "server.log"
    data_dir.mkdir(mode=0o700)
    log_path.touch()
    for path in (root, data_dir, log_path):
        _give_to_cluster_owner(path)
    server = Postgres(host="127.0.0.1", port=free_port(), user=POSTGRES_SUPERUSER,
                      password=secrets.token_urlsafe(18), database=database)
    started = False
    try:
        _initdb(bin_dir, data_dir, server.password, log_path)
        options = f"-h {server.host} -p {server.port} -k {root} -c fsync=off"
        _pg_ctl(bin_dir, data_dir, log_path, "start", "--options", options)
        started = True
        wait_until(_accepts_connections(server), "PostgreSQL", log_path)
        create_database(server, database)
        yield server
    finally:
        if started:
            with contextlib.suppress(ServiceError):
                _pg_ctl(bin_dir, data_dir, log_path, "stop", "--mode", "fast", "--wait")
        shutil.rmtree(root, ignore_errors=True)


# -- MLflow tracking server ------------------------------------------------------------------------
@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts_destination: str
    log_path: Path
    pid: int

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def command_line(self) -> str:
        """What `ps` shows for the server process."""
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


TRACKING_SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "tracking-server" / "start.sh"


@contextlib.contextmanager
def start_mlflow_server(workdir: Path, store_env: Mapping[str, str], artifacts_destination: str,
                        extra_env: Mapping[str, str] | None = None,
                        options: Sequence[str] = ()) -> Iterator[MlflowServer]:
    """The project's tracking server script (infra/tracking-server/start.sh) on a free loopback port.

    `store_env` holds the connection settings (MLFLOW_BACKEND_STORE_URI or the PG* variables): the
    script reads them from its environment, as it would in production; so do the auth settings
    (MLFLOW_AUTH_*) in `extra_env`. `options` go to the script (`--no-auth`).
    """
    port = free_port()
    log_path = workdir / "mlflow-server.log"
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith("PG") and k != "MLFLOW_BACKEND_STORE_URI"}
    env = {**inherited, **store_env, "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
           "MLFLOW_BIN": str(venv_binary("mlflow")), "TMPDIR": str(workdir), **(extra_env or {})}
    argv = ["bash", str(TRACKING_SERVER_SCRIPT), "--host", "127.0.0.1", "--port", str(port), *options]
    with background_process(argv, log_path, env=env, cwd=workdir) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(http_ok(url + "/health"), "mlflow server", log_path, process, timeout_s=90)
        yield MlflowServer(url=url, artifacts_destination=artifacts_destination, log_path=log_path,
                           pid=process.pid)


# -- TLS proxy (nginx) -----------------------------------------------------------------------------
TLS_PROXY_SCRIPT = TRACKING_SERVER_SCRIPT.parent / "proxy.sh"


def nginx_binary() -> Path | None:
    """nginx on PATH or Debian's /usr/sbin/nginx (package `nginx`); None if absent."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return Path(found) if os.access(found, os.X_OK) else None


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for `host` (an IP address) and its key, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(certificate), "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}"],
                   check=True, capture_output=True)
    return certificate, key


def _https_ok(url: str, certificate: Path) -> Callable[[], bool]:
    import ssl

    context = ssl.create_default_context(cafile=str(certificate))

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    return probe


@contextlib.contextmanager
def start_tls_proxy(workdir: Path, upstream: str, certificate: Path, key: Path,
                    extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """infra/tracking-server/proxy.sh (nginx) on a free loopback port in front of `upstream` (host:port);
    yields its https:// URL once it passes /health through.

    As root, nginx's workers run as nobody and must enter the runtime folder's parents (pytest's own
    folders are private): it is then a new folder in the system's temporary folder, removed at exit."""
    nginx = nginx_binary()
    if nginx is None:
        raise ServiceError("nginx not found (install Debian's `nginx` package)")
    port = free_port()
    log_path = workdir / "proxy.log"
    with contextlib.ExitStack() as stack:
        runtime = (stack.enter_context(tempfile.TemporaryDirectory(prefix="cybulde-proxy-")) if os.geteuid() == 0
                   else str(workdir / "proxy"))
        env = {**os.environ, "NGINX_BIN": str(nginx), "TLS_CERTIFICATE": str(certificate),
               "TLS_CERTIFICATE_KEY": str(key), "PROXY_RUNTIME_DIR": runtime, **(extra_env or {})}
        argv = ["bash", str(TLS_PROXY_SCRIPT), "--listen", f"127.0.0.1:{port}", "--upstream", upstream]
        process = stack.enter_context(background_process(argv, log_path, env=env, cwd=workdir))
        url = f"https://127.0.0.1:{port}"
        wait_until(_https_ok(url + "/health", certificate), "TLS proxy", log_path, process)
        yield url
