"""How the evaluation commands (`evaluate-cross`, `evaluate-behaviour`) hand over their result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cybulde.files import write_file_atomically


def emit(result: Mapping[str, Any], output: str, save: str | None, summary: Callable[[Mapping[str, Any]], str]) -> None:
    """Print `summary(result)` (output "text") or the whole result as JSON (output "json"); with `save`,
    also write the JSON there."""
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if save:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    sys.stdout.write(text if output == "json" else summary(result) + "\n")
