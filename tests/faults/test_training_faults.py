"""Faults of training, tracking and stages, injected into real processes on a tiny config.

Each test starts the real entry points (`python stages/train.py`, `dvc repro`) and hits them with
a real fault: SIGKILL of one rank, of the whole `train` stage or of it during the model export,
SIGINT/SIGTERM in every stage, a tracking server stopped mid-training. To land the fault in the
middle of the work, the processes are slowed down by tests/faults/slowdown/sitecustomize.py
(sleeps after chosen functions; it changes no result). Weights are compared byte for byte with an
uninterrupted run of the same params and data.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cybulde.reproducibility.check import copy_project, set_params, tool_env
from cybulde.tracking.client import FAILURE_TAG
from tests.helpers import tiny_train
from tests.helpers.ports import free_port
from tests.helpers.processes import descendants, is_alive, read_proc, stop_group
from tests.helpers.tiny_project import make_tiny_project
from tests.helpers.weights import assert_same_weights

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRAIN_STAGE = REPO / "stages" / "train.py"
SLOWDOWN = Path(__file__).resolve().parent / "slowdown"
STEP = "cybulde.training.module:ClassifierModule.training_step"
EXPORT = "cybulde.models.export:write_model_files"
FETCH = "cybulde.registry.fetch:verify_files"
EVALUATE = "cybulde.evaluation.evaluate:log_evaluation"
LOG_SERVABLE_MODEL = "cybulde.publishing:log_pyfunc_model"  # the test stage only
RUN_TIMEOUT_S = 420
RESUMED = re.compile(r"resuming training from step (\d+)")
# Two DDP ranks on the tiny data: 48 rows / (8 per rank * 2 ranks) = 3 steps per epoch.
DDP = {"launch.nproc_per_node": 2, "train.global_batch_size": 16, "launch.threads_per_rank": 1}


# -- processes ----------------------------------------------------------------------------------
def stage_env(delays: dict[str, float] | None = None) -> dict[str, str]:
    env = {key: value for key, value in tool_env().items() if not key.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(SLOWDOWN)
    # dvc runs each stage through $SHELL -c: pin the shell that leaves one more process in between
    # (dash does not exec the command), so that the tree is the same wherever the tests run.
    env["SHELL"] = "/bin/sh"
    if delays:
        env["CYBULDE_TEST_DELAYS"] = ",".join(f"{target}={seconds}" for target, seconds in delays.items())
    return env


def _as_from_a_terminal() -> None:
    """SIGINT as a shell's foreground job has it, also when pytest runs in the background (`&` ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv: list[str], cwd: Path, log: Path, delays: dict[str, float] | None = None) -> subprocess.Popen:
    with log.open("ab") as output:
        return subprocess.Popen(argv, cwd=cwd, env=stage_env(delays), stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_as_from_a_terminal)


def finish(process: subprocess.Popen, log: Path, timeout_s: float = RUN_TIMEOUT_S) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(process)
        pytest.fail(f"{process.args} did not finish within {timeout_s} s:\n{tail(log)}")


def run_to_end(argv: list[str], cwd: Path, log: Path, delays: dict[str, float] | None = None) -> str:
    """Run `argv` and require success; returns what this run wrote to `log`."""
    offset = log.stat().st_size if log.exists() else 0
    code = finish(start(argv, cwd, log, delays), log)
    output = log.read_bytes()[offset:].decode(errors="replace")
    assert code == 0, f"{argv} failed with {code}:\n{output[-6000:]}"
    return output


@contextlib.contextmanager
def started(argv: list[str], cwd: Path, log: Path, delays: dict[str, float] | None = None
            ) -> Iterator[subprocess.Popen]:
    """`argv` running in a session of its own; whatever is left of it is killed on the way out."""
    process = start(argv, cwd, log, delays)
    try:
        yield process
    finally:
        if process.poll() is None:
            stop_group(process)


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no output)"


def wait_until(condition: Callable[[], object], what: str, timeout_s: float, log: Path,
               process: subprocess.Popen | None = None) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout_s} s:\n{tail(log)}")


def environ(pid: int) -> dict[str, str]:
    pairs = (item.split(b"=", 1) for item in read_proc(pid, "environ").split(b"\0") if b"=" in item)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


def argv(pid: int) -> list[str]:
    return read_proc(pid, "cmdline").decode(errors="replace").split("\0")


def stage_process(root: int, script: str) -> int | None:
    """The Python process below `root` running `stages/<script>` as a stage (not as a torchrun worker).

    Not the `sh -c "python stages/<script>"` that dvc may run it through: dash waits for its command
    rather than exec'ing it, and a signal to that shell would miss the stage.
    """
    for pid in descendants(root):
        if f"stages/{script}" in argv(pid) and "TORCHELASTIC_RUN_ID" not in environ(pid):
            return pid
    return None


def workers(launcher: int) -> list[int]:
    return [pid for pid in descendants(launcher) if "TORCHELASTIC_RUN_ID" in environ(pid)]


def saved_checkpoint(project: Path) -> Path | None:
    found = sorted(project.glob(".cybulde/resume/train/*/last.ckpt"))
    return found[0] if found else None


def resumed_steps(output: str) -> list[int]:
    return [int(step) for step in RESUMED.findall(output)]


def only_run(store: str, experiment: str = "cybulde") -> object:
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [(run.info.run_id, run.info.status) for run in runs]
    return runs[0]


def untracked(project: Path) -> list[str]:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    return [line for line in status.splitlines() if line.startswith("??")]


# -- a rank is killed -----------------------------------------------------------------------------
def tiny_ddp_project(folder: Path, store: str, extra: dict | None = None) -> Path:
    return tiny_train.make_project(folder, {**DDP, "train.epochs": 3, "train.checkpoint_every_n_steps": 1,
                                            "mlflow.tracking_uri": store, **(extra or {})})


def same_data_copy(project: Path, folder: Path, overrides: dict) -> Path:
    shutil.copytree(project, folder, ignore=shutil.ignore_patterns("model", "metrics", ".cybulde"))
    return tiny_train.write_params(folder, {**DDP, "train.epochs": 3, "train.checkpoint_every_n_steps": 1,
                                            **overrides})


def test_a_killed_rank_restarts_in_place_and_resumes_to_the_same_weights(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/faulty.db"
    faulty = tiny_ddp_project(tmp_path / "faulty", store, {"launch.max_restarts": 1})
    baseline = same_data_copy(faulty, tmp_path / "baseline", {
        "launch.max_restarts": 1,
        "mlflow.tracking_uri": f"sqlite:///{tmp_path}/baseline.db"})
    run_to_end([sys.executable, str(TRAIN_STAGE)], baseline, tmp_path / "baseline.log")

    log = tmp_path / "faulty.log"
    with started([sys.executable, str(TRAIN_STAGE)], faulty, log, {STEP: 1.0}) as launcher:
        wait_until(lambda: saved_checkpoint(faulty), "first step checkpoint", 300, log, launcher)
        rank_one = wait_until(lambda: [pid for pid in workers(launcher.pid) if environ(pid).get("RANK") == "1"],
                              "rank 1", 10, log, launcher)[0]
        os.kill(rank_one, signal.SIGKILL)
        code = finish(launcher, log)

    output = tail(log, 10**6)
    assert code == 0, output[-6000:]
    assert resumed_steps(output) and min(resumed_steps(output)) >= 1, output[-6000:]
    assert_same_weights(faulty / "model", baseline / "model")
    assert (faulty / "metrics/train.json").read_text() == (baseline / "metrics/train.json").read_text()
    run = only_run(store)  # the restarted workers went on logging into the same run
    assert int(run.data.tags["cybulde.resumed_at_step"]) >= 1 and run.info.status == "RUNNING"
    assert not any((faulty / ".cybulde/resume/train").iterdir())


# -- the whole train stage is killed --------------------------------------------------------------
def test_a_killed_train_stage_leaves_no_worker_and_the_next_repro_resumes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/faulty.db"
    faulty = make_tiny_project(tmp_path / "faulty", store, ["train.checkpoint_every_n_steps=2"])
    baseline = copy_project(faulty, tmp_path / "baseline" / "project")
    set_params(baseline / "params.yaml", [f"mlflow.tracking_uri=sqlite:///{tmp_path}/baseline.db"])
    run_to_end(["dvc", "repro", "train"], baseline, tmp_path / "baseline.log")

    log = tmp_path / "faulty.log"
    with started(["dvc", "repro"], faulty, log, {STEP: 0.5}) as dvc:
        wait_until(lambda: saved_checkpoint(faulty), "step checkpoint", 300, log, dvc)
        launcher = wait_until(lambda: stage_process(dvc.pid, "train.py"), "train launcher", 10, log, dvc)
        ranks = workers(launcher)
        assert len(ranks) == 2, ranks
        os.kill(launcher, signal.SIGKILL)  # what an OOM killer does
        wait_until(lambda: not any(is_alive(pid) for pid in ranks), "end of the orphaned workers", 30, log)
        assert finish(dvc, log) != 0

    output = run_to_end(["dvc", "repro"], faulty, log)
    assert resumed_steps(output) and resumed_steps(output)[0] >= 2, output[-6000:]
    assert_same_weights(faulty / "model", baseline / "model")
    run = only_run(store)  # the resumed training continued the killed one's run
    assert run.info.status == "FINISHED" and int(run.data.tags["cybulde.resumed_at_step"]) >= 2
    assert untracked(faulty) == []


def test_a_train_stage_killed_during_the_export_leaves_no_partial_model(tmp_path: Path) -> None:
    from cybulde.models.export import load_model

    project = tiny_train.make_project(tmp_path / "project", {
        "train.checkpoint_every_n_steps": 2, "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"})
    log = tmp_path / "train.log"
    with started([sys.executable, str(TRAIN_STAGE)], project, log, {EXPORT: 120}) as launcher:
        wait_until(lambda: f"slowdown: {EXPORT} returned" in tail(log), "model files in staging", 300, log,
                   launcher)
        assert list(project.glob(".model.partial-*"))
        ranks = workers(launcher.pid)
        os.kill(launcher.pid, signal.SIGKILL)
        wait_until(lambda: not any(is_alive(pid) for pid in ranks), "end of the orphaned worker", 30, log)

    model = project / "model"
    assert not model.exists() or load_model(model).config["format_version"] == 1  # absent or complete
    output = run_to_end([sys.executable, str(TRAIN_STAGE)], project, log)
    assert resumed_steps(output) == [12], output[-6000:]  # the final checkpoint: only the export was left
    assert load_model(model).config["metadata"]["train_metrics"]["global_steps"] == 12
    assert sorted(path.name for path in project.iterdir() if path.name.startswith(".model")) == []


# -- the tracking server goes away mid-training ---------------------------------------------------
@contextlib.contextmanager
def mlflow_server(folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """`mlflow server` (SQLite store in `folder`) on 127.0.0.1:`port`, answering /health."""
    from tests.helpers.services import http_ok, venv_binary
    from tests.helpers.services import wait_until as wait_for_service

    log = folder / "server.log"
    argv = [str(venv_binary("mlflow")), "server", "--backend-store-uri", f"sqlite:///{folder}/store.db",
            "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts", "--workers", "1",
            "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as output:
        server = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**stage_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        wait_for_service(http_ok(f"http://127.0.0.1:{port}/health"), "mlflow server", log, server, timeout_s=120)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_group(server)


def test_a_tracking_server_outage_mid_training_costs_no_metric(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    (tmp_path / "server").mkdir()
    project = make_tiny_project(tmp_path / "pipeline", uri, ["train.checkpoint_every_n_steps=2",
                                                            "mlflow.http_timeout_s=5", "mlflow.http_max_retries=1"])
    log = tmp_path / "repro.log"
    with mlflow_server(tmp_path / "server", port) as server, \
            started(["dvc", "repro"], project, log, {STEP: 1.0}) as dvc:
        wait_until(lambda: saved_checkpoint(project), "step checkpoint", 300, log, dvc)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        time.sleep(5)  # training goes on meanwhile
        assert dvc.poll() is None and not (project / "model").exists()
        with mlflow_server(tmp_path / "server", port):
            code = finish(dvc, log)

    output = tail(log, 10**6)
    assert code == 0, output[-6000:]
    assert "the MLflow tracking server did not take metrics" in output
    assert "the MLflow tracking server answers again" in output
    assert "were not logged" not in output
    assert (project / "model/model.safetensors").is_file()
    with mlflow_server(tmp_path / "server", port):
        run = only_run(uri)
        assert run.info.status == "FINISHED"
        losses = MlflowClient(uri).get_metric_history(run.info.run_id, "train/loss")
        steps = sorted(metric.step for metric in losses)
        last_step = json.loads((project / "metrics/train.json").read_text())["global_steps"] - 1
        # train.log_every_n_steps=2: every second step of the whole training, no hole during the outage.
        assert steps == list(range(steps[0], steps[0] + 2 * len(steps), 2)), steps
        assert steps[0] <= 1 and steps[-1] >= last_step - 1, steps
        assert {"validation/macro_f1", "test/macro_f1"} <= set(run.data.metrics)


# -- every stage interrupted by SIGINT or SIGTERM ---------------------------------------------------
INTERRUPTIONS = [  # stage script, what slows it, how it is stopped
    ("fetch.py", {FETCH: 60}, "SIGTERM to the stage"),
    ("train.py", {STEP: 0.5}, "SIGINT to the whole group (Ctrl-C)"),
    ("validate.py", {EVALUATE: 60}, "SIGTERM to the stage"),
    ("test.py", {LOG_SERVABLE_MODEL: 60}, "SIGINT to the whole group (Ctrl-C)"),
]


def interrupt(project: Path, log: Path, script: str, delays: dict[str, float], how: str) -> None:
    """`dvc repro` until `script` is at work, then stop it as `how` says; the repro must fail."""
    [(target, _)] = delays.items()
    offset = log.stat().st_size if log.exists() else 0
    with started(["dvc", "repro"], project, log, delays) as dvc:
        if script == "train.py":
            wait_until(lambda: saved_checkpoint(project), "a checkpoint", 300, log, dvc)
        else:
            marker = f"slowdown: {target} returned".encode()
            wait_until(lambda: marker in log.read_bytes()[offset:], f"{script} at work", 300, log, dvc)
        stage = wait_until(lambda: stage_process(dvc.pid, script), script, 10, log, dvc)
        if how.startswith("SIGTERM"):
            os.kill(stage, signal.SIGTERM)
        else:
            os.killpg(dvc.pid, signal.SIGINT)
        assert finish(dvc, log, timeout_s=120) != 0
    wait_until(lambda: not is_alive(stage), f"end of {script}", 30, log)


@pytest.mark.parametrize("target", [STEP, EXPORT, FETCH, EVALUATE, LOG_SERVABLE_MODEL])
def test_every_slowdown_target_exists(target: str) -> None:
    # A target that was renamed away would never be slowed down, and its fault test would race the stage.
    module, attribute = target.split(":")
    owner = importlib.import_module(module)
    for part in attribute.split("."):
        owner = getattr(owner, part)
    assert callable(owner)


def test_interrupted_stages_leave_nothing_that_breaks_the_next_repro(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    project = make_tiny_project(tmp_path / "pipeline", store, ["train.checkpoint_every_n_steps=2"])
    log = tmp_path / "repro.log"
    for script, delays, how in INTERRUPTIONS:
        interrupt(project, log, script, delays, how)
        assert untracked(project) == [], f"{script}: {how}"
        leftovers = [*project.glob("data/.fetched.*"), *project.glob(".model.*"),
                     *project.glob(".cybulde/**/*.tmp-*")]
        assert leftovers == [], f"{script}: {how}"

    run_to_end(["dvc", "repro"], project, log)
    status = subprocess.run(["dvc", "status"], cwd=project, env=stage_env(), capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr
    assert untracked(project) == []
    run = only_run(store)
    assert run.info.status == "FINISHED" and run.data.tags.get(FAILURE_TAG) is None
