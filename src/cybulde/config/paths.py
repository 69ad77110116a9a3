"""Where the project lives (also when DVC runs an experiment in a temporary copy of it), and where
its MLflow store is.

`dvc exp run --queue` / `--temp` run the pipeline in `<workspace>/.dvc/tmp/exps/<tmp>/...`, a copy
holding only the tracked files. Relative locations of shared state (the local data registry, the
MLflow store) are therefore resolved against the *workspace* root, so an experiment run in a
temporary copy reads the same registry and logs into the same store as one run in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cybulde.config.loader import PARAMS_FILE

DEFAULT_STORE = "mlflow.db"  # the SQLite MLflow store in the workspace root, when nothing else is set

if TYPE_CHECKING:
    from cybulde.config.schema import Config


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) that holds `params.yaml`."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PARAMS_FILE).is_file():
            return folder
    return here


def fetched_path(cfg: Config, root: Path | None = None) -> Path:
    """`cfg.data.fetched_dir` as an absolute path; a relative one is taken from `root` (default: the
    project root)."""
    path = Path(cfg.data.fetched_dir).expanduser()
    return path if path.is_absolute() else (root or project_root()) / path


def workspace_root(start: str | Path | None = None) -> Path:
    """The DVC workspace this project copy belongs to (itself, unless it is a DVC temp copy)."""
    root = project_root(start)
    parts = root.parts
    for index in range(len(parts) - 3):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return root


def resolve_location(location: str, start: str | Path | None = None) -> str:
    """A URL (`gs://`, `file://`...) as it is; a relative local path against the workspace root."""
    if "://" in location:
        return location
    path = Path(location).expanduser()
    if not path.is_absolute():
        path = workspace_root(start) / path
    return str(path)


def tracking_uri(config: Config) -> str:
    """`mlflow.tracking_uri`, else $MLFLOW_TRACKING_URI, else a SQLite store in the workspace root."""
    uri = config.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    return f"sqlite:///{workspace_root() / DEFAULT_STORE}"


def redact_uri(uri: str) -> str:
    """A URI without the password part of `user:password@host`, for messages and logs."""
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
