"""Local files and folders that readers see whole: the old version or the complete new one, never a part.

`write_file_atomically(path, write)` has `write(temporary)` write the new content into a temporary
file beside `path` (the same folder, so the final rename is atomic), fsyncs it and renames it over
`path`. `replace_folder(staging, destination)` puts a complete staging folder in the place of
`destination`: an existing one is renamed aside first and removed after, and put back if the swap
fails. A write that raises (a full disk, SIGTERM turned into an exception) removes its temporary
file; one killed outright leaves it behind, named `.<name>.tmp-<pid>`, for `remove_temporary_files`.

Whatever wrote them, new files and folders get the mode an ordinary `open` or `mkdir` would give them
under this process's umask (`honour_umask`): `tempfile.mkdtemp` and safetensors create theirs private
(0700, 0600), which would leave an exported model unreadable by any other user.

Every JSON file the project writes goes through `write_json` (indented, keys sorted, so equal data
gives equal bytes); `sha256_file` and `tree_sha256` are the one file and folder digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cybulde.errors import CybuldeError

TEMP_MARKER = ".tmp-"
CHUNK_BYTES = 1 << 20


def temporary_path(path: Path) -> Path:
    """Where this process writes the next version of `path`."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")


def current_umask() -> int:
    # os.umask can only be read by setting it; set it straight back (no file is created in between).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path) -> None:
    """Give `path` the mode `open` (a file) or `mkdir` (a folder) would have given it under the umask."""
    full = 0o777 if path.is_dir() else 0o666
    path.chmod(full & ~current_umask())


class UnreadableFileError(CybuldeError, PermissionError):
    """A file exists but this process may not read it."""


def check_readable(path: Path) -> None:
    """Raise `UnreadableFileError` naming `path`, its mode and owner, if this process cannot open it.
    (Some readers, safetensors among them, report such a file as missing.)"""
    try:
        with open(path, "rb"):
            pass
    except PermissionError as error:
        status = path.stat()
        raise UnreadableFileError(
            f"cannot read {path}: permission denied (mode {status.st_mode & 0o777:04o}, owner uid "
            f"{status.st_uid}; this process runs as uid {os.getuid()})") from error


def write_file_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Run `write(temporary)`, then make the file it wrote `path` (see the module docstring)."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        write(temporary)
        honour_umask(temporary)
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


def json_text(data: Any, default: Callable[[Any], Any] | None = None) -> str:
    """The project's JSON layout: indented, keys sorted, one trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, default=default) + "\n"


def write_json(data: Any, path: str | Path, default: Callable[[Any], Any] | None = None) -> Path:
    """Write `json_text(data)` to `path` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json_text(data, default)
    return write_file_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_sha256(paths: Iterable[Path], root: Path) -> str:
    """sha256 over each file's path relative to `root` and its sha256, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def tree_sha256(folder: Path) -> str:
    """`files_sha256` of every file under `folder`, in sorted order."""
    return files_sha256(sorted(item for item in folder.rglob("*") if item.is_file()), folder)
