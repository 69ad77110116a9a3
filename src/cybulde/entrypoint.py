"""What every stage script does around its work: logging, the validated config, clear errors.

    python stages/<stage>.py [key=value ...]

loads `params.yaml` with the Hydra-style overrides, runs the stage, and turns a `CybuldeError`
(bad params, a missing dataset version, a tampered file, an unreachable tracking server...) into
one line on stderr and exit status 1. Anything else is a bug and keeps its traceback.

SIGTERM (what `kill`, a container stop or torchrun's agent sends) becomes an exception, like
SIGINT (Ctrl-C) does, so every `finally` and cleanup handler of the stage runs: temporary folders
are removed, the MLflow run is marked KILLED. The stage then exits with 128 + the signal number.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from cybulde.config.loader import load_config
from cybulde.config.schema import Config
from cybulde.errors import CybuldeError, interrupting_signal


def run_stage(name: str, action: Callable[[Config], str | None], argv: Sequence[str] | None = None) -> int:
    """Run `action(config)` for stage `name`; it may return a one-line summary to print."""
    exit_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    try:
        summary = action(load_config(overrides=overrides))
    except CybuldeError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as stop:
        signum = interrupting_signal(stop)
        if signum is None:
            raise
        print(f"{name}: stopped by {signal.Signals(signum).name}; its partial work was cleaned up, "
              "run it again to continue", file=sys.stderr)
        return 128 + signum
    finally:
        default_sigterm()  # the work is over: a SIGTERM during interpreter exit just ends the process
    if summary:
        print(f"{name}: {summary}")
    return 0


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit(128 + SIGTERM) in the main thread, so cleanup code runs."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)


def default_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
