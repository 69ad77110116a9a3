"""The `train` stage across two hosts: network namespaces joined by a veth pair, one torchrun per host
(infra/multinode/launch-node.sh, c10d rendezvous on the first host's address), one MLflow run; and
the same job with its second host preempted mid-training and a new node started in its place, and with
its rendezvous host lost and the whole job started again."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cybulde.config.presets import TINY, as_overrides
from tests.helpers.ports import free_port
from tests.helpers.processes import stop_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_NODE = REPO_ROOT / "infra" / "multinode" / "launch-node.sh"
TRAIN_WITH_DIGEST = Path(__file__).resolve().parent / "multinode_train.py"
NODE_TIMEOUT_S = 150
# The project's tiny config, its 2 ranks on 2 hosts of one rank each.
TINY_PARAMS = [
    "data.dataset=tiny", "data.version=v1", "data.manifest_sha256=",
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


def _write_params(base: Path, project: Path, tracking_uri: str, extra_params: list[str]) -> None:
    from cybulde.config.loader import to_dict
    from cybulde.config.schema import Config
    from cybulde.reproducibility.check import set_params

    project.mkdir(parents=True)
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(Config()), sort_keys=False))
    set_params(params, [*TINY_PARAMS, f"data.registry={base / 'registry'}", f"mlflow.tracking_uri={tracking_uri}",
                        *extra_params])


def _publish_and_fetch(base: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetched data of a small dataset published to the local registry params.yaml names."""
    from cybulde.config.loader import load_config
    from cybulde.preparation.publish import publish
    from cybulde.registry.fetch import fetch
    from tests.helpers.tiny_project import write_raw_csv

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
    for process, log in nodes:
        try:
            process.wait(timeout=NODE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a node did not finish within {NODE_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
        assert process.returncode == 0, f"node failed:\n{log.read_text()[-6000:]}"


@dataclass(frozen=True)
class Job:
    """A two-host training job that ran to its end."""
    hosts: tuple[Host, Host]
    tracking_uri: str
    run_id: str
    digests: dict[str, str]  # rank<N>.sha256 -> that rank's final weights
    logs: list[Path]


def _digests(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in folder.glob("rank*.sha256")}


Nodes = dict[Host, tuple[subprocess.Popen, Path]]  # each host's torchrun and its log


def _train_on_two_hosts(base: Path, extra_params: list[str], env_extra: dict[str, str],
                        fault: Callable[[tuple[Host, Host], Nodes, str, str, dict[str, str]], None] | None = None
                        ) -> Job:
    """Publish, fetch, create the run and train on two hosts; `fault` may replace processes mid-run."""
    tracking_uri = f"sqlite:///{base / 'shared' / 'mlflow.db'}"
    (base / "shared").mkdir(parents=True)
    digests = base / "digests"
    env = _tool_env({"WEIGHTS_DIGEST_DIR": str(digests), **env_extra})
    with _two_namespaces(base) as (first, second), pytest.MonkeyPatch.context() as monkeypatch:
        rendezvous = f"{first.address}:{free_port()}"
        _write_params(base, first.project, tracking_uri, extra_params)
        creation = _start_run_creation(first.project, rendezvous, _tool_env({}))
        _publish_and_fetch(base, first.project, monkeypatch)
        shutil.copytree(first.project, second.project)
        run_id = _created_run_id(creation)
        nodes: Nodes = {}
        for host in (first, second):
            log = base / f"{host.namespace}.log"
            nodes[host] = (_launch(host, rendezvous, run_id, env, log), log)
        try:
            if fault is not None:
                fault((first, second), nodes, rendezvous, run_id, env)
            _wait_all(list(nodes.values()))
        finally:
            for process, _ in nodes.values():
                stop_group(process)
    return Job((first, second), tracking_uri, run_id, _digests(digests),
               sorted(base.glob("*.log")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Job:
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    return _train_on_two_hosts(tmp_path_factory.mktemp("uninterrupted"), [], {})


def test_two_hosts_train_one_model_into_one_run(uninterrupted: Job) -> None:
    from mlflow import MlflowClient

    from cybulde.tracking.client import MODEL_TAG
    from cybulde.tracking.lineage import model_digest

    assert set(uninterrupted.digests) == {"rank0.sha256", "rank1.sha256"}
    assert uninterrupted.digests["rank0.sha256"] == uninterrupted.digests["rank1.sha256"]

    exported = [host.project / "model" for host in uninterrupted.hosts if (host.project / "model").is_dir()]
    assert len(exported) == 1, "exactly one node (global rank 0) exports the model"

    client = MlflowClient(uninterrupted.tracking_uri)
    experiment = client.get_experiment_by_name("multinode")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [uninterrupted.run_id]
    run = runs[0]
    assert run.data.tags[MODEL_TAG] == model_digest(exported[0])
    assert run.data.params["launch.nnodes"] == "2"
    assert any(key.startswith("train/") for key in run.data.metrics), run.data.metrics


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout_s} s:\n" + "\n".join(log.read_text()[-3000:] for log in logs))


def _has_checkpoint(host: Host) -> bool:
    return any(host.project.glob(".cybulde/resume/train/*/last.ckpt"))


def _preempt_the_second_host(hosts: tuple[Host, Host], nodes: Nodes, rendezvous: str, run_id: str,
                             env: dict[str, str]) -> None:
    """Once both hosts hold a step checkpoint, the second one is gone (agent and workers killed at once)
    and a new node is started in its place, on its disk, with the same command."""
    first, second = hosts
    _wait_for(lambda: _has_checkpoint(first) and _has_checkpoint(second), "step checkpoint on both hosts",
              NODE_TIMEOUT_S, [log for _, log in nodes.values()])
    stop_group(nodes[second][0])
    log = second.project.parent / "replacement.log"
    nodes[second] = (_launch(second, rendezvous, run_id, env, log), log)


SLOWDOWN = {"PYTHONPATH": str(REPO_ROOT / "tests" / "faults" / "slowdown"),
            "CYBULDE_TEST_DELAYS": "cybulde.training.module:ClassifierModule.training_step=0.5"}


def _faulted_job_resumes_like_the_uninterrupted_one(uninterrupted: Job, base: Path,
                                                    fault: Callable[..., None]) -> None:
    """Train with step checkpoints every 2 steps and `fault` mid-run; the job logs that it resumed from a
    step past 0, tags the run with it, and ends with the uninterrupted job's weights and run status."""
    from mlflow import MlflowClient

    from cybulde.training.train import RESUMED_TAG

    job = _train_on_two_hosts(base, ["train.checkpoint_every_n_steps=2"], SLOWDOWN, fault=fault)

    output = "\n".join(log.read_text(errors="replace") for log in job.logs)
    resumed = [int(step) for step in re.findall(r"resuming training from step (\d+)", output)]
    assert resumed and min(resumed) > 0, output[-6000:]
    assert job.digests == uninterrupted.digests, "the resumed job ends with other weights than an uninterrupted one"
    run = MlflowClient(job.tracking_uri).get_run(job.run_id)
    assert int(run.data.tags[RESUMED_TAG]) == resumed[0]
    # train leaves the run open for the stages after it, killed node or not
    assert run.info.status == MlflowClient(uninterrupted.tracking_uri).get_run(uninterrupted.run_id).info.status


def test_a_preempted_host_is_replaced_and_the_job_resumes_to_the_uninterrupted_weights(
        uninterrupted: Job, tmp_path: Path) -> None:
    _faulted_job_resumes_like_the_uninterrupted_one(uninterrupted, tmp_path, _preempt_the_second_host)


def _lose_the_rendezvous_host(hosts: tuple[Host, Host], nodes: Nodes, rendezvous: str, run_id: str,
                              env: dict[str, str]) -> None:
    """Once both hosts hold a step checkpoint, the first host (the rendezvous store and global rank 0)
    is gone. The surviving node cannot rendezvous without it and must give up on its own; then the
    whole job is started again with the same commands, each node on its own disk."""
    first, second = hosts
    logs = [log for _, log in nodes.values()]
    _wait_for(lambda: _has_checkpoint(first) and _has_checkpoint(second), "step checkpoint on both hosts",
              NODE_TIMEOUT_S, logs)
    stop_group(nodes[first][0])
    survivor, survivor_log = nodes[second]
    _wait_for(lambda: survivor.poll() is not None, "exit of the node that lost its rendezvous host",
              NODE_TIMEOUT_S, logs)
    assert survivor.returncode != 0, survivor_log.read_text()[-4000:]
    for host in (first, second):
        log = host.project.parent / f"restart-{host.namespace}.log"
        nodes[host] = (_launch(host, rendezvous, run_id, env, log), log)


def test_losing_the_rendezvous_host_ends_the_job_and_a_restart_resumes_to_the_uninterrupted_weights(
        uninterrupted: Job, tmp_path: Path) -> None:
    _faulted_job_resumes_like_the_uninterrupted_one(uninterrupted, tmp_path, _lose_the_rendezvous_host)
