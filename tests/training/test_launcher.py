"""The train stage's launcher: torchrun settings from launch.*, checks before any worker starts."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cybulde.config.schema import Config
from cybulde.config.topology import resolve_topology
from cybulde.training.launcher import torchrun_argv
from tests.helpers import tiny_train

TRAIN_STAGE = Path(__file__).resolve().parents[2] / "stages" / "train.py"


def test_torchrun_gets_every_launch_setting():
    cfg = Config()
    cfg.launch.nnodes, cfg.launch.nproc_per_node, cfg.launch.max_restarts = 2, "4", 5
    cfg.launch.rdzv_endpoint = "10.0.0.1:29400"
    argv = torchrun_argv(cfg, resolve_topology(cfg), Path("stages/train.py"), ["train.lr=0.1"])
    assert argv[:5] == ["--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
                        "--rdzv-endpoint=10.0.0.1:29400", "--max-restarts=5"]
    assert argv[-2:] == ["stages/train.py", "train.lr=0.1"]


def stage_env() -> dict[str, str]:
    from cybulde.reproducibility.check import tool_env

    return {k: v for k, v in tool_env().items() if "MLFLOW" not in k}


def run_stage(project: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python stages/train.py` in `project`, and how long it took."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(TRAIN_STAGE), *overrides], cwd=project, capture_output=True,
                            text=True, timeout=300, env=stage_env())
    return result, time.monotonic() - started


def test_one_node_meets_on_a_free_loopback_port_whatever_the_endpoint():
    cfg = Config()
    cfg.launch.rdzv_endpoint = "10.0.0.1:29400"
    argv = torchrun_argv(cfg, resolve_topology(cfg), Path("stages/train.py"), [])
    assert "--standalone" in argv and not any(arg.startswith("--rdzv") for arg in argv)


@pytest.mark.slow
def test_two_trainings_on_one_machine_at_once_both_finish(tmp_path):
    # Both keep the default launch.rdzv_endpoint: on one node it must not be where they meet.
    projects = [tiny_train.make_project(tmp_path / name, {"mlflow.tracking_uri": f"sqlite:///{tmp_path}/{name}.db"})
                for name in ("first", "second")]
    logs = [project / "train.log" for project in projects]  # files, not pipes: neither waits on a reader
    stages = []
    for project, log in zip(projects, logs, strict=True):
        with log.open("w") as output:
            stages.append(subprocess.Popen([sys.executable, str(TRAIN_STAGE)], cwd=project, env=stage_env(),
                                           stdout=output, stderr=subprocess.STDOUT))
    for stage, log, project in zip(stages, logs, projects, strict=True):
        assert stage.wait(timeout=300) == 0, log.read_text()[-3000:]
        assert (project / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_one_line_before_any_worker_starts(tmp_path):
    project = tiny_train.make_project(tmp_path / "project")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result, seconds = run_stage(project, f"mlflow.tracking_uri=http://127.0.0.1:{port}")
    assert result.returncode == 1 and seconds < 30, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"train: error: cannot reach the MLflow tracking server at http://127.0.0.1:{port}: connection refused")
    assert "starting" not in result.stderr and "ChildFailedError" not in result.stderr

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result, seconds = run_stage(project, f"mlflow.tracking_uri=http://127.0.0.1:{port}",
                                    "mlflow.http_timeout_s=3")
    assert result.returncode == 1 and seconds < 30, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].endswith("no answer within 3 s (mlflow.http_timeout_s)")


@pytest.mark.slow
def test_a_failing_worker_is_one_line_from_the_launcher(tmp_path):
    # MiniLM's tokenizer is not the tiny data's: every worker stops with a TokenizerMismatchError.
    project = tiny_train.make_project(tmp_path / "project", {"model.backbone": "minilm", "launch.max_restarts": 0,
                                                             "mlflow.tracking_uri": f"sqlite:///{tmp_path}/m.db"})
    result, _ = run_stage(project)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[-1] == ("train: error: training failed (launch.max_restarts=0): rank 0 exited with status 1; "
                         "its own error is in the output above")
    assert any(line.startswith("train: error: ") and "tokenizer" in line for line in lines[:-1])
    assert "Traceback" not in result.stderr
