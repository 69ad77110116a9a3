"""A PNG of an MLflow experiment's runs page, as `mlflow ui` shows it (the README's picture).

Usage: python scripts/mlflow_screenshot.py [--store sqlite:///mlflow.db] [--experiment cybulde]
                                           [--out docs/images/mlflow-runs.png]

Starts `mlflow server` on a free loopback port against the store, opens the experiment's runs
page (sorted by the headline metric) in headless Chromium, saves the screenshot and stops the
server. Needs `chromium` on PATH (Debian: `apt-get install chromium`); reaches nothing but
127.0.0.1. docs/images/mlflow-runs.png shows the store of a tiny pipeline (tests/helpers/tiny_project.py)
after `dvc repro` and `dvc exp run -S model.head=sigmoid`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
HEADLINE_METRIC = "test/macro_f1"
SERVER_START_S = 120.0
PAGE_SETTLE_MS = 20000  # virtual time Chromium gives the page's scripts to fetch and draw the runs
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
ML_VIEW = "workflowType=machine_learning"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def experiment_id(store: str, name: str) -> str:
    from mlflow import MlflowClient

    experiment = MlflowClient(store).get_experiment_by_name(name)
    if experiment is None:
        raise SystemExit(f"no experiment {name!r} in {store}: run the pipeline first")
    return str(experiment.experiment_id)


@contextmanager
def mlflow_server(store: str, port: int) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1:`port` for the block; yields its base URL."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, server)
        yield base
    finally:
        with_group_signal(server, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with_group_signal(server, signal.SIGKILL)
            server.wait()


def with_group_signal(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the server's workers are in its session
    except ProcessLookupError:
        pass


def wait_until_healthy(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlflow server exited with status {server.returncode}:\n"
                             f"{(server.stderr.read() if server.stderr else '')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"mlflow server did not answer on {base} within {SERVER_START_S:.0f} s")


def runs_page(base: str, experiment: str, sort_by: str = HEADLINE_METRIC) -> str:
    """The experiment's runs in the UI's model-training view, the best first.

    MLflow 3's UI opens on its GenAI pages whatever the experiment's kind until `workflowType` says
    otherwise (the "Model training" switch at its top left)."""
    order = quote(f"metrics.`{sort_by}`", safe="")
    return f"{base}/#/experiments/{experiment}/runs?{ML_VIEW}&orderByKey={order}&orderByAsc=false"


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(f"no headless browser found (tried {', '.join(BROWSERS)}): apt-get install chromium")


def headless(url: str, *options: str) -> str:
    """Run headless Chromium on `url` with `options` in a throwaway profile; returns its stdout."""
    with tempfile.TemporaryDirectory(prefix="cybulde-chromium-") as profile:
        command = [browser(), "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   f"--user-data-dir={profile}", f"--virtual-time-budget={PAGE_SETTLE_MS}", *options, url]
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses its sandbox to root
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=180).stdout


def screenshot(url: str, out: Path, width: int, height: int) -> Path:
    """Chromium's headless screenshot of `url` into `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    headless(url, f"--window-size={width},{height}", f"--screenshot={out.resolve()}")
    if not out.is_file():
        raise SystemExit(f"chromium wrote no screenshot to {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'mlflow.db'}", help="MLflow backend store URI")
    parser.add_argument("--experiment", default="cybulde")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/mlflow-runs.png")
    parser.add_argument("--width", type=int, default=1920)  # wide enough for the Source and Models columns
    parser.add_argument("--height", type=int, default=560)
    args = parser.parse_args(argv)
    experiment = experiment_id(args.store, args.experiment)
    with mlflow_server(args.store, free_port()) as base:
        path = screenshot(runs_page(base, experiment), args.out, args.width, args.height)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
