"""The pipeline's `fetch` stage: copy one dataset version from the registry into the workspace.

The copy is downloaded into a temporary folder beside `data.fetched_dir`, every file is checked
against the manifest (no file missing or extra, each sha256 equal), and only then does it replace
`data.fetched_dir` (by renames on the same filesystem). On any failure the temporary folder is
removed and `data.fetched_dir` is left as it was. The files are the registry's bytes, so fetching
a version twice gives byte-identical output (the same hash in `dvc.lock`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cybulde.files import honour_umask, replace_folder
from cybulde.registry.manifest import verify_files
from cybulde.registry.store import Registry

if TYPE_CHECKING:
    from cybulde.config.schema import Config


def fetch(cfg: Config) -> Path:
    """Download and verify `cfg.data.dataset`/`cfg.data.version` into `cfg.data.fetched_dir`; return it."""
    from cybulde.config.paths import fetched_path, resolve_location

    destination = fetched_path(cfg)
    registry = Registry(resolve_location(cfg.data.registry))
    registry.manifest(cfg.data.dataset, cfg.data.version)  # unknown dataset/version: fail before any writes
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.fetching-", dir=destination.parent))
    honour_umask(staging)  # mkdtemp makes it private; the fetched copy is ordinary project data
    try:
        manifest = registry.download(cfg.data.dataset, cfg.data.version, staging)
        verify_files(staging, manifest)  # the folder as it will be used: exactly the manifest's files
        replace_folder(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
