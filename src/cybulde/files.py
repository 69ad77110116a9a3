"""Local files and folders that readers see whole: the old version or the complete new one, never a part.

`write_file_atomically(path, write)` has `write(temporary)` write the new content into a temporary
file beside `path` (the same folder, so the final rename is atomic), fsyncs it and renames it over
`path`. `replace_folder(staging, destination)` puts a complete staging folder in the place of
`destination`: an existing one is renamed aside first and removed after, and put back if the swap
fails. A write that raises (a full disk, SIGTERM turned into an exception) removes its temporary
file; one killed outright leaves it behind, named `.<name>.tmp-<pid>`, for `remove_temporary_files`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_MARKER = ".tmp-"


def temporary_path(path: Path) -> Path:
    """Where this process writes the next version of `path`."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")


def write_file_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Run `write(temporary)`, then make the file it wrote `path` (see the module docstring)."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        write(temporary)
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def replace_folder(staging: Path, destination: Path) -> None:
    """Put the complete folder `staging` at `destination` (on the same filesystem)."""
    if not (destination.exists() or destination.is_symlink()):
        staging.rename(destination)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
    retired.rmdir()
    destination.rename(retired)
    try:
        staging.rename(destination)
    except BaseException:
        retired.rename(destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder below `folder`, and `folder` itself."""
    for path in [*folder.rglob("*"), folder]:
        fsync_path(path)


def remove_temporary_files(folder: Path) -> None:
    """The temporary files that writers killed outright left in `folder` (see the module docstring)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file() and TEMP_MARKER in entry.name:
            entry.unlink(missing_ok=True)
