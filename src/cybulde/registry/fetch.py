"""The pipeline's `fetch` stage: copy one dataset version from the registry into the workspace.

The version's manifest must be the one `data.manifest_sha256` pins (empty: any, with a warning that
names the digest to pin), so a version changed in the registry is an error, not a silent retrain.
The copy is downloaded into a temporary folder beside `data.fetched_dir` (every manifest key must
stay inside it), every file is checked against the manifest (no file missing or extra, each sha256
equal, tokenizer.json equal to the manifest's `tokenizer.sha256`), and only then does it replace
`data.fetched_dir` (by renames on the same filesystem). On any failure the temporary folder is
removed and `data.fetched_dir` is left as it was. The files are the registry's bytes, so fetching
a version twice gives byte-identical output (the same hash in `dvc.lock`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cybulde.files import honour_umask, replace_folder
from cybulde.registry.errors import ManifestDigestError
from cybulde.registry.manifest import verify_files, verify_tokenizer
from cybulde.registry.store import Registry

if TYPE_CHECKING:
    from cybulde.config.schema import Config

PIN_KEY = "data.manifest_sha256"
log = logging.getLogger(__name__)


def fetch(cfg: Config) -> Path:
    """Download and verify `cfg.data.dataset`/`cfg.data.version` into `cfg.data.fetched_dir`; return it."""
    # config.paths loads the config stack (OmegaConf), which `cybulde --help` need not
    from cybulde.config.paths import fetched_path, resolve_location

    destination = fetched_path(cfg)
    registry = Registry(resolve_location(cfg.data.registry))
    manifest = registry.manifest(cfg.data.dataset, cfg.data.version)  # unknown version: fail before any writes
    check_pin(f"{cfg.data.dataset}/{cfg.data.version} in registry {registry.url}", manifest.sha256,
              cfg.data.manifest_sha256)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.fetching-", dir=destination.parent))
    honour_umask(staging)  # mkdtemp makes it private; the fetched copy is ordinary project data
    try:
        registry.download(cfg.data.dataset, cfg.data.version, staging, expected_sha256=manifest.sha256)
        verify_files(staging, manifest)  # the folder as it will be used: exactly the manifest's files
        verify_tokenizer(staging, manifest)
        replace_folder(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def check_pin(version: str, digest: str, pinned: str) -> None:
    """Refuse a manifest `digest` other than the `pinned` one; without a pin, warn with the digest to pin."""
    if not pinned:
        log.warning("%s is not pinned (%s is empty: whatever is published under this name is accepted); "
                    "pin its manifest with %s=%s", version, PIN_KEY, PIN_KEY, digest)
        return
    if digest != pinned:
        raise ManifestDigestError(
            f"{PIN_KEY} pins manifest sha256 {pinned}, but {version} has manifest sha256 {digest}: "
            f"the version changed in the registry (check it, then update {PIN_KEY})")
