"""One of several real publisher processes racing for the same version (tests/faults).

    python race_publish.py BARRIER_DIR NAME PARTIES -- <cybulde publish arguments>

It runs `cybulde publish` unchanged, except that just before creating manifest.json (after the
"version exists" check passed and every file was uploaded) it waits until all PARTIES publishers
have reached that point: the window in which a second publisher used to overwrite or delete the
first one's version is then open for all of them at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cybulde.registry.store as registry
from cybulde.cli import main

BARRIER_TIMEOUT_S = 240.0


def wait_for_everyone(barrier: Path, name: str, parties: int) -> None:
    (barrier / f"{name}.ready").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(barrier.glob("*.ready"))) < parties:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: the other publishers never reached the barrier")
        time.sleep(0.02)


if __name__ == "__main__":
    barrier, name, parties = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    assert sys.argv[4] == "--"
    create = registry.create_exclusive

    def create_after_everyone(fs, remote, data):  # noqa: ANN001, ANN202
        if remote.endswith("/manifest.json"):
            wait_for_everyone(barrier, name, parties)
        return create(fs, remote, data)

    registry.create_exclusive = create_after_everyone
    sys.exit(main(sys.argv[5:]))
