"""run_stage: one-line errors, and SIGTERM / SIGINT that end a stage through its cleanup code."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STAGE = """
import sys, time
from pathlib import Path
from cybulde.entrypoint import run_stage

def work(cfg):
    scratch = Path("scratch")
    scratch.mkdir()
    try:
        print("working", flush=True)
        time.sleep(60)
    finally:
        scratch.rmdir()  # what fetch does with its staging folder

sys.exit(run_stage("demo", work, []))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    return tmp_path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_stage_through_its_cleanup(project: Path, signum: int) -> None:
    # SIGINT as a foreground job has it, also when pytest runs in the background (`&` ignores it).
    stage = subprocess.Popen([sys.executable, "-c", STAGE], cwd=project, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert stage.stdout.readline().strip() == "working"
        stage.send_signal(signum)
        _, stderr = stage.communicate(timeout=30)
    finally:
        if stage.poll() is None:
            stage.kill()
    assert stage.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines() == [f"demo: stopped by {name}; its partial work was cleaned up, "
                                           "run it again to continue"]
    assert not (project / "scratch").exists()


def test_a_project_error_is_one_line(project: Path) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", STAGE.replace('run_stage("demo", work, [])',
                                                                'run_stage("demo", work, ["train.lr=-1"])')],
                            cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and time.monotonic() - started < 60
    assert result.stderr.strip().splitlines() == ["demo: error: invalid parameter 'train.lr': must be > 0, got -1.0"]
