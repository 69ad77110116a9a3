"""DVC stage `fetch`: copy and verify the dataset version named by params.yaml (`data.*`).

Usage: python stages/fetch.py [key=value ...]   (overrides, e.g. data.version=v2)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cybulde.config.schema import Config
from cybulde.entrypoint import run_stage


def fetch_version(cfg: Config) -> str:
    # fsspec (the registry) loads only once the params are valid
    from cybulde.registry.fetch import PIN_KEY, fetch
    from cybulde.registry.manifest import manifest_digest
    from cybulde.registry.storage import quiet_storage_logs

    quiet_storage_logs()
    destination = fetch(cfg)
    return (f"{cfg.data.dataset}/{cfg.data.version} from {cfg.data.registry} verified into {destination} "
            f"({PIN_KEY}={manifest_digest(destination)})")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("fetch", fetch_version, argv)


if __name__ == "__main__":
    sys.exit(main())
