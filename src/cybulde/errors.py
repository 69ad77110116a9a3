"""The root of the project's own errors: a problem the user can fix from the message alone.

Stage entry points and the CLI print such errors as one line and exit 1; anything else is a bug
and keeps its traceback.
"""

import signal


class CybuldeError(Exception):
    """Bad input, a missing or tampered file, a mismatch, an unreachable service."""


class UsageError(CybuldeError):
    """The command line itself is wrong (a missing or contradictory option): `cybulde` shows the
    usage and exits 2, as for the errors argparse finds."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def interrupting_signal(stop: BaseException) -> int | None:
    """The signal behind a KeyboardInterrupt or a SystemExit(128 + n), or None for an ordinary exit.

    Lightning turns a KeyboardInterrupt during `fit` into `sys.exit(1)`; the interrupt is its context.
    """
    if isinstance(stop, KeyboardInterrupt) or isinstance(stop.__context__, KeyboardInterrupt):
        return int(signal.SIGINT)
    code = getattr(stop, "code", None)
    if isinstance(code, int) and 128 < code < 128 + signal.NSIG:
        return code - 128
    return None
