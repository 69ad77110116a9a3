"""infra/multinode/launch-node.sh without torchrun: what it refuses before starting anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "multinode" / "launch-node.sh"


def test_a_tracking_uri_with_credentials_is_refused_as_an_override() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--nnodes", "1", "--node-addr", "10.0.0.1",
                             "--rdzv-endpoint", "10.0.0.1:29400", "--run-id", "r0",
                             "--", "mlflow.tracking_uri=https://pipeline:s3cret@mlflow.internal"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "mlflow.tracking_uri must carry no credentials" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
