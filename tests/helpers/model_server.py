"""A tiny model logged into MLflow and served by `mlflow models serve` on loopback: the records the
serving fixtures return and the server's command line and environment."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THRESHOLD = 0.35  # the decision threshold the served sigmoid model is logged with
SERVE_STARTUP_S = 180.0


@dataclass(frozen=True)
class LoggedModel:
    tracking_uri: str
    run_id: str
    model_id: str
    model_dir: Path  # the exported folder it was logged from
    artifacts: Path  # where the store keeps the logged model's files


@dataclass(frozen=True)
class ModelServer:
    url: str  # http://127.0.0.1:PORT
    log_path: Path

    def post(self, payload: bytes | dict[str, Any] | list[Any], content_type: str = "application/json",
             timeout_s: float = 120.0) -> tuple[int, bytes]:
        """(HTTP status, body) of a POST to /invocations."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/invocations", data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def serve_command(model_uri: str, port: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)]


def serve_environment(tracking_uri: str) -> dict[str, str]:
    # The server execs `uvicorn` from PATH: the one installed beside this interpreter.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
