"""The GCS emulator (`gcp-storage-emulator`) the registry and tracking tests run against."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

EMULATOR_START_TIMEOUT_S = 20.0


def emulator_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("gcp-storage-emulator")
    return str(beside_python) if beside_python.is_file() else shutil.which("gcp-storage-emulator")


def make_gcs_bucket(emulator_url: str, name: str) -> str:
    """Create bucket `name` in the emulator at `emulator_url` (idempotent); returns `gs://name`."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", project="test", endpoint_url=emulator_url, skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
    return f"gs://{name}"
