"""What every stage script does around its work: logging, the validated config, clear errors.

    python stages/<stage>.py [key=value ...]

loads `params.yaml` with the Hydra-style overrides, runs the stage, and turns a `CybuldeError`
(bad params, a missing dataset version, a tampered file, an unreachable tracking server...) into
one line on stderr and exit status 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from cybulde.config.schema import Config
from cybulde.errors import CybuldeError


def run_stage(name: str, action: Callable[[Config], str | None], argv: Sequence[str] | None = None) -> int:
    """Run `action(config)` for stage `name`; it may return a one-line summary to print."""
    from cybulde.config.loader import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    try:
        summary = action(load_config(overrides=overrides))
    except CybuldeError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 1
    if summary:
        print(f"{name}: {summary}")
    return 0
