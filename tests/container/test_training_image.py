"""The training image, built and run with podman: the tiny pipeline inside it as uid 10001 against a
mounted clone gives the host's weights and metrics, `cybulde predict` in it scores like the host, the
image holds nothing of the build's pip settings nor any credential, and the tracking-server compose
stack (emulator profile: PostgreSQL, the GCS emulator and mlflow from the same image, nginx's TLS proxy)
runs with the host's pipeline logging into it through the proxy.

Needs root and podman with runc (Debian: apt-get install podman runc debootstrap); the image is built
on the Debian base of infra/image/python-base.sh with this shell's pip settings (build.sh --host-pip).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from cybulde.reproducibility.check import fingerprint, tool_env
from tests.helpers.ports import free_port
from tests.helpers.services import self_signed_certificate
from tests.helpers.tiny_project import REPO_ROOT, git, make_tiny_project, run

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE = "localhost/cybulde:test"
CONTAINER_UID = 10001  # the image's user (Dockerfile: USER 10001)
POSTGRES_IMAGE = "localhost/cybulde-postgres:15-bookworm"
NGINX_IMAGE = "localhost/cybulde-nginx:bookworm"
COMPOSE_FILE = REPO_ROOT / "infra/tracking-server/docker-compose.yml"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(REPO_ROOT / "infra/image/containers.conf")}
BUILD_TIMEOUT_S = 2400
RUN_TIMEOUT_S = 1200
MAX_IMAGE_BYTES = 3.2e9  # 2.76 GB measured with torch's CPU build: a CUDA or duplicate install shows
TEXTS = ["you are a pathetic clown", "thanks, lovely sunny day", "what a game"]


def _runtime_unavailable() -> str:
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman runc debootstrap; .ci/run does)"
    if os.geteuid() != 0:
        return "building the Debian base image (debootstrap) and mounting images need root"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap)"
    probe = podman("info", check=False)
    return "" if probe.returncode == 0 else f"podman does not work here: {probe.stderr[-500:]}"


def podman(*args: str, check: bool = True, timeout: float = 300, env: Mapping[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], env=env or PODMAN_ENV, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    reason = _runtime_unavailable()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    build = subprocess.run([str(REPO_ROOT / "infra/image/build.sh"), "--engine", "podman", "--tag", IMAGE,
                            "--offline-base", "--host-pip"], capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"image built in {time.monotonic() - started:.0f} s")
    return IMAGE


# -- the tiny pipeline, on the host and in the image ---------------------------------------------------
@dataclass(frozen=True)
class Projects:
    host: Path  # the tiny project, run on the host (logging into the tracking stack)
    clone: Path  # a git clone of it, owned by the image's user, run in the image
    registry: Path  # the published tiny dataset both read
    texts: Path  # a folder with texts.txt, mounted read-only for `cybulde predict`


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Projects:
    base = tmp_path_factory.mktemp("image")
    host = make_tiny_project(base)
    clone = base / "clone"
    git(base, "clone", "-q", str(host), str(clone))
    subprocess.run(["chown", "-R", f"{CONTAINER_UID}:{CONTAINER_UID}", str(clone)], check=True)
    texts = base / "texts"
    texts.mkdir()
    (texts / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    return Projects(host=host, clone=clone, registry=base / "registry", texts=texts)


def run_in_image(image: str, projects: Projects, *command: str, volumes: Sequence[str] = ()
                 ) -> subprocess.CompletedProcess[str]:
    """`command` through the image's entry point, as its user, with the clone at /workspace and no
    network: the registry (an absolute path in params.yaml) and the texts are mounted read-only, and
    any further `volumes` (podman's SOURCE:TARGET[:OPTIONS])."""
    extra = [arg for volume in volumes for arg in ("--volume", volume)]
    return podman("run", "--rm", "--network", "none", "--shm-size", "1g",
                  "--volume", f"{projects.clone}:/workspace",
                  "--volume", f"{projects.registry}:{projects.registry}:ro",
                  "--volume", f"{projects.texts}:/texts:ro", *extra,
                  image, *command, check=False, timeout=RUN_TIMEOUT_S)


def predicted_rows(output: str) -> list[dict[str, Any]]:
    """The JSON lines of `cybulde predict`'s output."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def image_run(image: str, projects: Projects) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = run_in_image(image, projects, "repro")
    print(f"dvc repro in the image: {time.monotonic() - started:.0f} s")
    return result


@pytest.fixture(scope="module")
def host_run(projects: Projects, tracking_stack: Mapping[str, str]) -> str:
    """The same tiny pipeline on the host, logging into the tracking stack (through its TLS proxy)."""
    return run(projects.host, "dvc", "repro", env={**tool_env(), **tracking_stack})


def test_pipeline_in_the_image_gives_the_hosts_weights_and_metrics(
        image_run: subprocess.CompletedProcess[str], host_run: str, projects: Projects) -> None:
    assert image_run.returncode == 0, image_run.stdout[-4000:] + image_run.stderr[-4000:]
    in_image, on_host = fingerprint(projects.clone), fingerprint(projects.host)
    assert any(name.startswith("metrics/") for name in on_host)
    differing = sorted(name for name in on_host if in_image.get(name) != on_host[name])
    assert not differing and in_image.keys() == on_host.keys(), differing


def test_image_resolves_precision_like_the_host(image: str, projects: Projects) -> None:
    probe = "from cybulde.hardware import resolve_precision; print(resolve_precision('auto', 'cpu').precision)"
    in_image = run_in_image(image, projects, "python", "-c", probe)
    assert in_image.returncode == 0, in_image.stderr[-2000:]
    assert in_image.stdout.strip() == run(REPO_ROOT, "python", "-c", probe).strip()


def test_predict_in_the_image_scores_like_the_host(image_run: subprocess.CompletedProcess[str], host_run: str,
                                                   image: str, projects: Projects) -> None:
    predicted = run_in_image(image, projects, "cybulde", "predict", "-m", "model", "/texts/texts.txt")
    assert predicted.returncode == 0, predicted.stderr[-4000:]
    on_host = run(projects.host, "cybulde", "predict", "-m", "model", str(projects.texts / "texts.txt"))
    rows = predicted_rows(predicted.stdout)
    assert len(rows) == len(TEXTS)
    assert rows == predicted_rows(on_host)


def test_the_image_user_reads_a_model_exported_by_root_on_the_host(host_run: str, image: str,
                                                                    projects: Projects) -> None:
    """A model one user exported (root here, as in CI) is ordinary data another user (the image's) reads."""
    weights = projects.host / "model/model.safetensors"
    assert weights.stat().st_uid == 0 != CONTAINER_UID
    predicted = run_in_image(image, projects, "cybulde", "predict", "-m", "/host-model", "/texts/texts.txt",
                             volumes=[f"{projects.host / 'model'}:/host-model:ro"])
    assert predicted.returncode == 0, predicted.stderr[-4000:]
    on_host = run(projects.host, "cybulde", "predict", "-m", "model", str(projects.texts / "texts.txt"))
    assert predicted_rows(predicted.stdout) == predicted_rows(on_host) and len(predicted_rows(on_host)) == len(TEXTS)


def test_image_leaves_no_root_owned_file_in_the_checkout(image_run: subprocess.CompletedProcess[str],
                                                         projects: Projects) -> None:
    assert (projects.clone / "dvc.lock").is_file() and (projects.clone / "model").is_dir()
    owners: dict[int, list[str]] = {}
    for folder, names, files in os.walk(projects.clone):
        for name in [*names, *files]:
            path = Path(folder, name)
            owners.setdefault(path.lstat().st_uid, []).append(str(path.relative_to(projects.clone)))
    assert set(owners) == {CONTAINER_UID}, {uid: paths[:5] for uid, paths in owners.items()}


# -- what the image holds -----------------------------------------------------------------------------
CREDENTIAL_NAMES = {".env", "config.local", ".git-credentials", ".netrc", "gcp-key.json", "pip.conf",
                    "application_default_credentials.json"}
BUILD_SETTING_WORDS = re.compile(r"PIP_CERT|PIP_FIND_LINKS|PIP_INDEX_URL|PIP_EXTRA_INDEX_URL|PASSWORD|SECRET|"
                                 r"TOKEN|CREDENTIALS|_KEY=")


@pytest.fixture(scope="module")
def image_files(image: str) -> Iterator[Path]:
    root = Path(podman("image", "mount", image).stdout.strip())
    try:
        yield root
    finally:
        podman("image", "unmount", image, check=False)


def host_pip_setting(name: str) -> str:
    """A pip setting of this machine as `build.sh --host-pip` reads it: PIP_<NAME>, else pip's config."""
    value = os.environ.get(f"PIP_{name.upper().replace('-', '_')}", "")
    if not value:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
        found = re.findall(rf"^global\.{re.escape(name)}='(.*)'$", listed, flags=re.M)
        value = found[-1] if found else ""
    return value


def test_image_settings_hold_no_build_option_or_credential(image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == str(CONTAINER_UID)
    assert not [value for value in config.get("Env", []) if BUILD_SETTING_WORDS.search(value)]
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    recorded = json.dumps(inspected) + history
    host_paths = [path for path in (host_pip_setting("cert"), host_pip_setting("find-links")) if path]
    assert not [path for path in host_paths if path in recorded]


def test_image_files_hold_no_credential_nor_build_input(image_files: Path) -> None:
    assert (image_files / "opt/venv/bin/cybulde").is_file()
    credentials, wheels = [], []
    sizes: dict[int, list[Path]] = {}
    for folder, _, files in os.walk(image_files):
        for name in files:
            path = Path(folder, name)
            if name in CREDENTIAL_NAMES:
                credentials.append(path)
            # Debian's python3-pip keeps its own pip and setuptools wheels there; no other wheel belongs.
            if name.endswith(".whl") and path.parent != image_files / "usr/share/python-wheels":
                wheels.append(path)
            if path.is_file() and not path.is_symlink():
                sizes.setdefault(path.stat().st_size, []).append(path)
    assert not credentials
    assert not wheels
    # The mount points of the build options stay, empty.
    for mount_point in ("run/build/wheels", "run/secrets", "root/.cache"):
        assert not any((image_files / mount_point).iterdir()), mount_point
    ca_bundle = host_pip_setting("cert")
    if ca_bundle:
        bundle = Path(ca_bundle).read_bytes()
        assert not [path for path in sizes.get(len(bundle), []) if path.read_bytes() == bundle]


def test_image_size(image: str) -> None:
    size = json.loads(podman("image", "inspect", image).stdout)[0]["Size"]
    print(f"image size: {size / 1e9:.2f} GB")
    assert size < MAX_IMAGE_BYTES, f"{size / 1e9:.2f} GB"


# -- the tracking-server compose stack ------------------------------------------------------------------
# The stack's server has authentication on; the host's pipeline logs in as its admin.
STACK_ADMIN_PASSWORD = secrets.token_hex(16)
STACK_ADMIN_CREDENTIAL = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": STACK_ADMIN_PASSWORD}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR:+other}`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator is None:
            return current or ""
        present = bool(current) if operator.startswith(":") else current is not None
        if operator.endswith("?"):
            if not present:
                raise ValueError(f"{name}: {argument}")
            return current or ""
        if operator.endswith("+"):
            return argument if present else ""
        return current if present and current is not None else argument

    return _VARIABLE.sub(substitute, value)


def compose_services(dot_env: Mapping[str, str], profile: str) -> dict[str, dict[str, Any]]:
    """The compose file's services of `profile` (and those without one), variables substituted from `.env`."""
    compose = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), dot_env)
    return {name: service for name, service in compose["services"].items()
            if profile in service.get("profiles", [profile])}


def start_order(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    while len(order) < len(services):
        ready = [name for name, service in services.items()
                 if name not in order and set(service.get("depends_on", {})) <= set(order)]
        assert ready, f"services that depend on missing or each other: {set(services) - set(order)}"
        order += ready
    return order


class ComposeStack:
    """The compose services as one podman pod: the services reach each other by name on the pod's
    loopback (--add-host), the pod publishes the services' ports on free host ports."""

    def __init__(self, services: dict[str, dict[str, Any]], dot_env: Mapping[str, str],
                 images: Mapping[str, str], published: Mapping[int, int]) -> None:
        self.services, self.dot_env, self.images = services, dot_env, images
        self.pod = f"cybulde-tracking-{secrets.token_hex(4)}"
        self.volumes: list[str] = []
        hosts = [arg for name in services for arg in ("--add-host", f"{name}:127.0.0.1")]
        ports = [arg for inside, outside in published.items() for arg in ("--publish", f"127.0.0.1:{outside}:{inside}")]
        podman("pod", "create", "--name", self.pod, *hosts, *ports)

    def start(self, name: str) -> None:
        service = self.services[name]
        environment = {key: str(value) for key, value in service.get("environment", {}).items()}
        args = ["run", "--detach", "--pod", self.pod, "--name", f"{self.pod}-{name}"]
        for key in environment:  # values reach podman through its environment, not its command line
            args += ["--env", key]
        for volume in service.get("volumes", []):
            source, rest = volume.split(":", 1)
            if source.startswith("."):
                source = str((COMPOSE_FILE.parent / source).resolve())
            elif not source.startswith("/"):
                source = f"{self.pod}-{source}"
                podman("volume", "create", source)
                self.volumes.append(source)
            args += ["--volume", f"{source}:{rest}"]
        image = self.images.get(service["image"], service["image"])
        podman(*args, image, *service.get("command", []), env={**PODMAN_ENV, **environment})

    def wait_healthy(self, name: str, timeout_s: float = 180) -> None:
        test = self.services[name]["healthcheck"]["test"]
        command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        deadline = time.monotonic() + timeout_s
        while podman("exec", f"{self.pod}-{name}", *command, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is not healthy after {timeout_s} s:\n{self.logs()}")
            time.sleep(2)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n" + podman("logs", "--tail", "30", f"{self.pod}-{name}", check=False).stderr
                         for name in self.services)

    def remove(self) -> None:
        podman("pod", "rm", "--force", self.pod, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)


def wait_for_https(url: str, certificate: Path, timeout_s: float = 60) -> None:
    context = ssl.create_default_context(cafile=str(certificate))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=10, context=context).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture(scope="module")
def tracking_stack(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`docker compose --profile emulator up` of infra/tracking-server, as podman commands; yields the
    environment that logs into it through its nginx proxy (URL, the proxy's certificate, the admin)."""
    for script, tag in (("postgres-image.sh", POSTGRES_IMAGE), ("nginx-image.sh", NGINX_IMAGE)):
        subprocess.run([str(REPO_ROOT / "infra/image" / script), "--tag", tag], check=True, env=PODMAN_ENV,
                       capture_output=True, timeout=BUILD_TIMEOUT_S)
    certificate, _ = self_signed_certificate(tmp_path_factory.mktemp("stack") / "tls")  # the compose file's tls/
    port, https_port = free_port(), free_port()
    # nginx forwards the Host without its port: the name the server's --allowed-hosts must list.
    dot_env = {"POSTGRES_PASSWORD": secrets.token_hex(16), "POSTGRES_IMAGE": POSTGRES_IMAGE,
               "NGINX_IMAGE": NGINX_IMAGE, "TLS_DIR": str(certificate.parent), "MLFLOW_PUBLIC_HOST": "127.0.0.1",
               "MLFLOW_AUTH_ADMIN_PASSWORD": STACK_ADMIN_PASSWORD}
    services = compose_services(dot_env, profile="emulator")
    assert set(services) == {"postgres", "gcs", "mlflow", "proxy"}
    stack = ComposeStack(services, dot_env, images={"cybulde:latest": image},
                         published={5000: port, 8443: https_port})
    try:
        for name in start_order(services):
            stack.start(name)
            if "healthcheck" in services[name]:
                stack.wait_healthy(name)
        url = f"https://127.0.0.1:{https_port}"
        try:
            wait_for_https(f"{url}/health", certificate)
        except OSError as error:
            raise AssertionError(f"the proxy does not answer on {url}: {error}\n{stack.logs()}") from error
        yield {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(certificate),
               **STACK_ADMIN_CREDENTIAL}
    finally:
        stack.remove()


def test_host_pipeline_logs_into_the_compose_stack(host_run: str, tracking_stack: Mapping[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in tracking_stack.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking_stack["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("cybulde")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run_.info.status for run_ in runs] == ["FINISHED"]
    assert {"validation/macro_f1", "test/macro_f1"} <= runs[0].data.metrics.keys()
    # Artifacts go through the proxy and the server into the emulated bucket of the `gcs` service.
    assert {"metrics", "plots", "predictions"} <= {a.path for a in client.list_artifacts(runs[0].info.run_id)}
