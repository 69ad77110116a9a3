"""DVC stage `fetch`: copy and verify the dataset version named by params.yaml (`data.*`).

Usage: python stages/fetch.py [key=value ...]   (overrides, e.g. data.version=v2)
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from cybulde.config.loader import ConfigError, load_config
    from cybulde.data.errors import DataError
    from cybulde.data.fetch import fetch
    from cybulde.data.storage import quiet_storage_logs

    quiet_storage_logs()

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(overrides=argv)
        destination = fetch(cfg)
    except (ConfigError, DataError) as error:
        print(f"fetch: error: {error}", file=sys.stderr)
        return 1
    print(f"fetch: {cfg.data.dataset}/{cfg.data.version} from {cfg.data.registry} verified into {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
