"""What `predict` writes: one row per input text, in input order.

Columns: the input's `id` (when it has one), `text`, `label` (the predicted label name) and
`prob_<label name>` per label. The format follows the output file's extension (.csv, .parquet,
.jsonl/.ndjson); without an output file, JSON lines go to standard output. A file is written
under a temporary name beside its destination and renamed when complete, so a failed run never
leaves a half-written file behind. The destination is checked before anything is read or scored:
an existing file is replaced only with `--overwrite`, never when it is the input, and a folder or a
place this process cannot write to is refused.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.files import write_file_atomically
from cybulde.serving.errors import OutputError, UnsupportedFormatError
from cybulde.serving.readers import ID_COLUMN, STDIN, TEXT_COLUMN, InputTexts

if TYPE_CHECKING:
    import pandas as pd

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl"}


def output_format_of(output: str | None) -> str:
    """The format `output` will be written in; raises before any work for a bad destination."""
    if output is None or output == STDIN:
        return "jsonl"
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UnsupportedFormatError(f"cannot write {output}: unknown extension {suffix!r}; "
                                     f"expected one of {sorted(OUTPUT_FORMATS)}")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    return OUTPUT_FORMATS[suffix]


def check_destination(output: str | None, input_path: str, overwrite: bool) -> None:
    """Refuse, with one line, a destination that cannot or must not be written (see the module docstring)."""
    if output is None or output == STDIN:
        return
    path = Path(output)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; name a file (e.g. {path / 'scored.jsonl'})")
    if path.exists() and input_path != STDIN and Path(input_path).exists() and os.path.samefile(path, input_path):
        raise OutputError(f"cannot write {path}: it is the input file; choose another output file")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it, or choose another output file")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {path.parent} does not exist")
    try:  # the file is written beside its destination, then renamed: the folder must take a new file
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error} in {path.parent}") from error


def output_table(inputs: InputTexts, scored: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    columns: dict[str, Any] = {}
    if inputs.ids is not None:
        columns[ID_COLUMN] = inputs.ids
    columns[TEXT_COLUMN] = inputs.texts
    return pd.concat([pd.DataFrame(columns), scored.reset_index(drop=True)], axis=1)


def write_output(table: pd.DataFrame, output: str | None, output_format: str, stdout: Any = None) -> None:
    if output is None or output == STDIN:
        stream = stdout if stdout is not None else sys.stdout
        _write_jsonl(table, stream)
        stream.flush()
        return

    def write(temporary: Path) -> None:
        if output_format == "csv":
            table.to_csv(temporary, index=False)
        elif output_format == "parquet":
            table.to_parquet(temporary, index=False)
        else:
            with open(temporary, "w", encoding="utf-8") as stream:
                _write_jsonl(table, stream)

    write_file_atomically(output, write)


def _write_jsonl(table: pd.DataFrame, stream: Any) -> None:
    for record in _records(table):
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (numpy scalars to Python numbers)."""
    return json.loads(table.to_json(orient="records", force_ascii=False, double_precision=15))
