"""Record which params a process reads, for the dependency check (`cybulde.reproducibility`).

With `$CYBULDE_RECORD_PARAMS` set to a folder, `load_config` hands out a `Config` whose sections
note every key that is read (`train.lr`, `model.scratch.hidden_size`) together with the project
module that read it, and append one JSON line per new (key, module) pair to `<folder>/<pid>.jsonl`:

    {"entry": "stages/train.py", "key": "train.lr", "module": "cybulde.training.train"}

`entry` is the script the process runs (`sys.argv[0]`), which is how the check finds the DVC stage.
Lines are appended as the reads happen, so a process that is killed keeps what it read so far.

The reading module is the first caller outside `cybulde.config` on the stack: a helper such as
`config.paths.fetched_path(cfg)` or `loader.to_dict(cfg)` reads on behalf of its caller. The check
ignores reads made by modules that cannot change a stage's outputs (e.g. `cybulde.tracking`, which
logs every param to MLflow); see `cybulde.reproducibility.dependencies.HARMLESS_MODULES`.

Without the variable nothing changes: the sections stay plain dataclasses.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

RECORD_ENV = "CYBULDE_RECORD_PARAMS"
_PREFIX = "_cybulde_prefix"
_OWN_PACKAGE = "cybulde.config"
UNKNOWN_MODULE = "?"

T = TypeVar("T")


def recording_folder() -> Path | None:
    folder = os.environ.get(RECORD_ENV, "")
    return Path(folder) if folder else None


def record_reads_if_asked(config: T) -> T:
    """`config` with recording sections when `$CYBULDE_RECORD_PARAMS` is set, else unchanged."""
    folder = recording_folder()
    if folder is None:
        return config
    _Recorder.start(folder)
    return record_reads(config)


def record_reads(config: T, prefix: str = "") -> T:
    """Switch `config` and its nested sections (in place) to recording subclasses; returns it."""
    for item in fields(config):  # type: ignore[arg-type]
        value = object.__getattribute__(config, item.name)
        if is_dataclass(value) and not isinstance(value, type):
            record_reads(value, f"{prefix}{item.name}.")
    object.__setattr__(config, _PREFIX, prefix)
    config.__class__ = _recording_class(type(config))  # type: ignore[assignment]
    return config


def _recording_getattribute(self: Any, name: str) -> Any:
    value = object.__getattribute__(self, name)
    if name.startswith("_") or is_dataclass(value):
        return value  # dunders, private state, and whole sections are not reads of a key
    prefix = object.__getattribute__(self, _PREFIX)
    if prefix is not None and name in object.__getattribute__(self, "__dataclass_fields__"):
        _Recorder.note(prefix + name, reading_module())
    return value


def _recording_class(cls: type) -> type:
    if getattr(cls, "_cybulde_records", False):
        return cls
    name = f"Recording{cls.__name__}"
    existing = globals().get(name)
    if existing is not None:
        return existing
    # A module-level name keeps instances picklable; the prefix defaults to None on copies that
    # OmegaConf or pickle create, which then record nothing.
    recording = type(name, (cls,), {"__getattribute__": _recording_getattribute, "__module__": __name__,
                                    "__qualname__": name, "_cybulde_records": True, _PREFIX: None})
    globals()[name] = recording
    return recording


def reading_module() -> str:
    """The first module on the stack outside `cybulde.config` that belongs to the project (or a script)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if (module == "__main__" or module.startswith("cybulde.")) and not (
                module == _OWN_PACKAGE or module.startswith(_OWN_PACKAGE + ".")):
            return module
        frame = frame.f_back
    return UNKNOWN_MODULE


class _Recorder:
    """The process-wide record: which (key, module) pairs were already written, and where to."""

    path: Path | None = None
    seen: set[tuple[str, str]] = set()

    @classmethod
    def start(cls, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        cls.path = folder / f"{os.getpid()}.jsonl"

    @classmethod
    def note(cls, key: str, module: str) -> None:
        if cls.path is None or (key, module) in cls.seen:
            return
        cls.seen.add((key, module))
        line = json.dumps({"entry": sys.argv[0] if sys.argv else "", "key": key, "module": module})
        with cls.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def read_records(folder: Path) -> list[dict[str, str]]:
    """Every record under `folder` (all processes), in file order."""
    records = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records
