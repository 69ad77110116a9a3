"""How the evaluation commands (`evaluate-cross`, `evaluate-behaviour`) hand over their result."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from cybulde.files import json_text, write_json


def emit(result: Mapping[str, Any], output: str, save: str | None, summary: Callable[[Mapping[str, Any]], str]) -> None:
    """Print `summary(result)` (output "text") or the whole result as JSON (output "json"); with `save`,
    also write the JSON there."""
    if save:
        write_json(result, save)
    sys.stdout.write(json_text(result) if output == "json" else summary(result) + "\n")
