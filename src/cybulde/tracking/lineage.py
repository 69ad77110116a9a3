"""What ties a run to its inputs: the data hash DVC pinned in `dvc.lock`, and the model's digest."""

from __future__ import annotations

from pathlib import Path

import yaml

from cybulde.files import sha256_file
from cybulde.models.export import WEIGHTS_FILE

LOCK_FILE = "dvc.lock"
FETCH_STAGE = "fetch"


def data_lock_hash(root: str | Path, fetched_dir: str) -> str:
    """The md5 DVC recorded for the `fetch` stage's output, or '' before `fetch` has been locked."""
    lock_path = Path(root) / LOCK_FILE
    if not lock_path.is_file():
        return ""
    lock = yaml.safe_load(lock_path.read_text()) or {}
    outs = lock.get("stages", {}).get(FETCH_STAGE, {}).get("outs", [])
    wanted = fetched_dir.rstrip("/")
    for out in outs:
        if str(out.get("path", "")).rstrip("/") == wanted:
            return str(out.get("md5", ""))
    return ""


def model_digest(model_dir: str | Path) -> str:
    """sha256 of the exported weights: the identity of a trained model."""
    return sha256_file(Path(model_dir) / WEIGHTS_FILE)
