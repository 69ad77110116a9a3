"""The root of the project's own errors: a problem the user can fix from the message alone.

Stage entry points and the CLI print such errors as one line and exit 1; anything else is a bug
and keeps its traceback.
"""


class CybuldeError(Exception):
    """Bad input, a missing or tampered file, a mismatch, an unreachable service."""


class UsageError(CybuldeError):
    """The command line itself is wrong (a missing or contradictory option): `cybulde` shows the
    usage and exits 2, as for the errors argparse finds."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
