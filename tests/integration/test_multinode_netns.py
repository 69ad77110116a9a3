"""The `train` stage across two hosts: network namespaces joined by a veth pair, one torchrun per host
(infra/multinode/launch-node.sh, c10d rendezvous on the first host's address), one MLflow run."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cybulde.config.presets import TINY, as_overrides
from tests.integration.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_NODE = REPO_ROOT / "infra" / "multinode" / "launch-node.sh"
TRAIN_WITH_DIGEST = Path(__file__).resolve().parent / "multinode_train.py"
NODE_TIMEOUT_S = 150
# The project's tiny config, its 2 ranks on 2 hosts of one rank each.
TINY_PARAMS = [
    "data.dataset=tiny", "data.version=v1",
    *as_overrides({**TINY, "launch.nnodes": 2, "launch.nproc_per_node": 1}),
    "mlflow.experiment=multinode",
]


@dataclass(frozen=True)
class Host:
    namespace: str
    interface: str
    address: str
    project: Path

    def run(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _namespaces_unavailable() -> str:
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (apt-get install iproute2)"
    return ""


@contextlib.contextmanager
def _two_namespaces(base: Path) -> Iterator[tuple[Host, Host]]:
    """Two namespaces linked by a veth pair on a private /24, each with its own project checkout."""
    tag = secrets.token_hex(3)
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    hosts = tuple(Host(namespace=f"cyb{tag}{side}", interface=f"cyb{tag}{side}", address=f"{subnet}.{index}",
                       project=base / f"host-{side}") for index, side in ((1, "a"), (2, "b")))
    created: list[str] = []
    try:
        for host in hosts:
            try:
                _ip("netns", "add", host.namespace)
            except subprocess.CalledProcessError as error:
                pytest.skip(f"cannot create a network namespace: {error.stderr.strip()}")
            created.append(host.namespace)
        first, second = hosts
        try:
            _ip("link", "add", first.interface, "netns", first.namespace, "type", "veth",
                "peer", "name", second.interface, "netns", second.namespace)
        except subprocess.CalledProcessError as error:
            pytest.skip(f"cannot create a veth pair between network namespaces: {error.stderr.strip()}")
        for host in hosts:
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip("-n", host.namespace, "link", "set", host.interface, "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        yield first, second
    finally:
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _tool_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def _write_params(base: Path, project: Path, tracking_uri: str) -> None:
    from cybulde.config.loader import to_dict
    from cybulde.config.schema import Config
    from cybulde.reproducibility.check import set_params

    project.mkdir(parents=True)
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(Config()), sort_keys=False))
    set_params(params, [*TINY_PARAMS, f"data.registry={base / 'registry'}", f"mlflow.tracking_uri={tracking_uri}"])


def _publish_and_fetch(base: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetched data of a small dataset published to the local registry params.yaml names."""
    from cybulde.config.loader import load_config
    from cybulde.data.fetch import fetch
    from cybulde.data.publish import publish
    from tests.e2e.project import write_raw_csv

    publish("csv", write_raw_csv(base / "raw.csv", rows=160), str(base / "registry"), "v1", dataset="tiny",
            tokenizer="wordpiece", vocab_size=200, max_length=32, text_column="tweet", label_column="class",
            echo=None)
    monkeypatch.chdir(project)
    fetch(load_config(project / "params.yaml"))


def _start_run_creation(project: Path, rendezvous: str, env: dict[str, str]) -> subprocess.Popen:
    """`launch-node.sh --create-run` (slow: a fresh store is migrated), started in the background."""
    return subprocess.Popen(["bash", str(LAUNCH_NODE), "--create-run", "--nnodes", "2", "--rdzv-endpoint",
                             rendezvous, "--project-dir", str(project)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _created_run_id(creation: subprocess.Popen) -> str:
    stdout, stderr = creation.communicate(timeout=90)
    assert creation.returncode == 0, stderr
    return stdout.strip().splitlines()[-1]


def _launch(host: Host, rendezvous: str, run_id: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = host.run("bash", str(LAUNCH_NODE), "--nnodes", "2", "--node-addr", host.address,
                    "--rdzv-endpoint", rendezvous, "--run-id", run_id, "--iface", host.interface,
                    "--project-dir", str(host.project), "--script", str(TRAIN_WITH_DIGEST))
    with log.open("wb") as output:
        return subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_all(nodes: list[tuple[subprocess.Popen, Path]]) -> None:
    try:
        for process, log in nodes:
            try:
                process.wait(timeout=NODE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a node did not finish within {NODE_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            assert process.returncode == 0, f"node failed:\n{log.read_text()[-6000:]}"
    finally:
        for process, _ in nodes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_two_hosts_train_one_model_into_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    from mlflow import MlflowClient

    from cybulde.tracking.lineage import model_digest
    from cybulde.tracking.run import MODEL_TAG

    tracking_uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    digests = tmp_path / "digests"
    env = _tool_env({"WEIGHTS_DIGEST_DIR": str(digests)})
    with _two_namespaces(tmp_path) as (first, second):
        rendezvous = f"{first.address}:{free_port()}"
        _write_params(tmp_path, first.project, tracking_uri)
        creation = _start_run_creation(first.project, rendezvous, env)
        _publish_and_fetch(tmp_path, first.project, monkeypatch)
        shutil.copytree(first.project, second.project)
        run_id = _created_run_id(creation)
        nodes = [(_launch(host, rendezvous, run_id, env, tmp_path / f"{host.namespace}.log"),
                  tmp_path / f"{host.namespace}.log") for host in (first, second)]
        _wait_all(nodes)

    rank_digests = {path.name: path.read_text() for path in digests.glob("rank*.sha256")}
    assert set(rank_digests) == {"rank0.sha256", "rank1.sha256"}
    assert rank_digests["rank0.sha256"] == rank_digests["rank1.sha256"]

    exported = [host.project / "model" for host in (first, second) if (host.project / "model").is_dir()]
    assert len(exported) == 1, "exactly one node (global rank 0) exports the model"

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("multinode")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.data.tags[MODEL_TAG] == model_digest(exported[0])
    assert run.data.params["launch.nnodes"] == "2"
    assert any(key.startswith("train/") for key in run.data.metrics), run.data.metrics
