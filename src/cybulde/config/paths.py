"""Where the project lives (also when DVC runs an experiment in a temporary copy of it), and where
its MLflow store is.

`dvc exp run --queue` / `--temp` run the pipeline in `<workspace>/.dvc/tmp/exps/<tmp>/...`, a copy
holding only the tracked files. Relative locations of shared state (the local data registry, the
MLflow store) are therefore resolved against the *workspace* root, so an experiment run in a
temporary copy reads the same registry and logs into the same store as one run in place.

Path params are checked when the config is loaded (`check_path_params`): `fetch` replaces the whole
`data.fetched_dir` folder, so it must be a folder of its own. A relative path must stay inside the
project and may not be the project itself nor lie in one of the project's own folders (`src/`,
`.git/`, `model/`...). A path outside the project must be written as an absolute path, the explicit
choice of a scratch location (e.g. `/scratch/cybulde/fetched`); it may not be a parent of the
project, the filesystem root or the home folder. The local data registry may live anywhere
(`../registry`, `/shared/registry`) except at the project folder or one of its parents, and it may
not overlap `data.fetched_dir`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cybulde.config.loader import PARAMS_FILE, ConfigError

DEFAULT_STORE = "mlflow.db"  # the SQLite MLflow store in the workspace root, when nothing else is set
MODEL_DIR = "model"  # the model `train` exports and the later stages read, relative to the project root

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


# Folders the project itself owns (code, git/DVC state, scratch state, other stages' outputs).
PROJECT_OWNED = (".git", ".dvc", ".cybulde", "src", "stages", "tests", "model", "metrics", "plots",
                 "predictions")


def check_path_params(config: Config, root: Path) -> None:
    """Raise `ConfigError` naming the key when a path param points where writing would harm the project."""
    root = Path(os.path.normpath(Path(root).resolve()))
    fetched = _checked_fetched_dir(config.data.fetched_dir, root)
    _check_registry(config.data.registry, root, fetched)


def _path_error(key: str, value: str, message: str) -> ConfigError:
    return ConfigError(f"invalid parameter '{key}': {value!r} {message}")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _checked_fetched_dir(value: str, root: Path) -> Path:
    key = "data.fetched_dir"
    if not value.strip():
        raise _path_error(key, value, "must name a folder inside the project, e.g. data/fetched")
    given = Path(value).expanduser()
    if not given.is_absolute():
        relative = Path(os.path.normpath(given))
        if relative == Path("."):
            raise _path_error(key, value, "is the project folder itself; fetch replaces this folder, "
                                          "so it must be a folder of its own, e.g. data/fetched")
        if relative.parts[0] == "..":
            raise _path_error(key, value, "leaves the project; a relative path must stay inside it (a folder "
                                          "outside the project must be given as an absolute path)")
        return _checked_inside(key, value, root / relative, root)
    path = Path(os.path.normpath(given))
    if _is_within(root, path):
        raise _path_error(key, value, f"is the project folder {root} or one of its parents; fetch replaces "
                                      "this folder, so it must be a folder of its own")
    if _is_within(path, root):
        return _checked_inside(key, value, path, root)
    home = Path(os.path.normpath(Path.home()))
    if _is_within(home, path):
        raise _path_error(key, value, "is the home folder or one of its parents; fetch replaces this folder, "
                                      "so it must be a folder of its own")
    return path


def _checked_inside(key: str, value: str, path: Path, root: Path) -> Path:
    top = path.relative_to(root).parts[0]
    if top in PROJECT_OWNED:
        raise _path_error(key, value, f"lies in the project's own folder '{top}/'; use a folder of its own "
                                      "such as data/fetched")
    return path


def _check_registry(value: str, root: Path, fetched: Path) -> None:
    key = "data.registry"
    location = resolve_location(value, root)
    if location.startswith("file://"):
        location = location[len("file://"):]
    elif "://" in location:
        return  # a bucket or a remote filesystem
    path = Path(os.path.normpath(Path(location).expanduser()))
    for project in {root, workspace_root(root)}:
        if _is_within(project, path):
            raise _path_error(key, value, f"is the project folder {project} or one of its parents; the "
                                          "registry needs a folder of its own, e.g. registry")
    if _is_within(path, fetched) or _is_within(fetched, path):
        raise _path_error(key, value, f"overlaps data.fetched_dir ({fetched}), which fetch replaces")
def tracking_uri(config: Config) -> str:
    """`mlflow.tracking_uri`, else $MLFLOW_TRACKING_URI, else a SQLite store in the workspace root."""
    uri = config.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    return f"sqlite:///{workspace_root() / DEFAULT_STORE}"


# A query parameter named like a secret (`?password=`, `&sslkey=`, `;token=`) and its value, which
# runs to the next parameter (a raw & or ; followed by no = is part of it).
SECRET_PARAMETER = re.compile(r"([?&;][^=?&;#]*(?:pass|pwd|secret|token|key|credential|auth)[^=?&;#]*=)"
                              r"[^&;#]*(?:[&;][^=&;#]*(?=[&;#]|$))*", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """A URI without its secrets, for messages and logs: the password of `user:password@host` (or a
    lone user part, which may be a token), whatever characters it holds, and the values of query
    parameters named like a secret. infra/tracking-server/start.sh redacts the same way."""
    scheme, separator, rest = uri.partition("://")
    if separator and "@" in rest and not rest.startswith("/"):
        credentials, host = rest.rsplit("@", 1)  # the last @: a raw password may hold @, :, / or %
        user, colon, _ = credentials.partition(":")
        uri = f"{scheme}://{user}:***@{host}" if colon else f"{scheme}://***@{host}"
    return SECRET_PARAMETER.sub(r"\1***", uri)
