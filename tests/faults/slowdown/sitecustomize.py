"""Test-only slowdowns, so that a fault test can hit a process in the middle of its work.

Put this folder first on PYTHONPATH and set CYBULDE_TEST_DELAYS in the environment of the processes
to slow down, e.g.

    CYBULDE_TEST_DELAYS="cybulde.training.module:ClassifierModule.training_step=0.5,cybulde.models.export:write_model_files=30"

Each `module:attribute=seconds` wraps that function: after each call it prints
`slowdown: <module:attribute> returned` to stderr (the first time in a process) and sleeps. Python
imports `sitecustomize` at start-up; the wrapping happens when the module is first imported, so
nothing loads early, and without the variable this file does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time


def _parse(spec: str) -> dict[str, list[tuple[str, float]]]:
    delays: dict[str, list[tuple[str, float]]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        target, seconds = item.rsplit("=", 1)
        module, attribute = target.split(":", 1)
        delays.setdefault(module, []).append((attribute, float(seconds)))
    return delays


DELAYS = _parse(os.environ.get("CYBULDE_TEST_DELAYS", ""))


def _slowed(name: str, function, seconds: float):
    announced = []

    def slowed(*args, **kwargs):
        result = function(*args, **kwargs)
        if not announced:
            announced.append(True)
            print(f"slowdown: {name} returned", file=sys.stderr, flush=True)
        time.sleep(seconds)
        return result

    return slowed


def _patch(module) -> None:
    for attribute, seconds in DELAYS[module.__name__]:
        *path, leaf = attribute.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, leaf, _slowed(f"{module.__name__}:{attribute}", getattr(owner, leaf), seconds))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in DELAYS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if DELAYS:
    sys.meta_path.insert(0, _PatchOnImport())
