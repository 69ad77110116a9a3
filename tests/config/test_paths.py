from pathlib import Path

import pytest

from cybulde.config.loader import ConfigError, load_config
from cybulde.config.paths import project_root, redact_uri, resolve_location, workspace_root


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text("{}\n")
    return folder


def test_project_root_walks_up(tmp_path: Path) -> None:
    root = _project(tmp_path / "repo")
    (root / "stages").mkdir()
    assert project_root(root / "stages") == root


def test_temp_experiment_copy_resolves_to_workspace(tmp_path: Path) -> None:
    workspace = _project(tmp_path / "repo")
    copy = _project(workspace / ".dvc" / "tmp" / "exps" / "tmpab12")
    assert workspace_root(copy) == workspace
    assert resolve_location("registry", copy) == str(workspace / "registry")


def test_urls_are_left_alone(tmp_path: Path) -> None:
    assert resolve_location("gs://bucket/registry", tmp_path) == "gs://bucket/registry"
    assert resolve_location("/abs/registry", tmp_path) == "/abs/registry"


# -- path params -----------------------------------------------------------------------------------

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _load(root: Path, *overrides: str):
    (root / "params.yaml").write_text(REPO_PARAMS.read_text())
    return load_config(root / "params.yaml", list(overrides))


@pytest.mark.parametrize("value", [".", "./", "data/..", ""])
def test_fetched_dir_may_not_be_the_project_itself(tmp_path: Path, value: str) -> None:
    root = _project(tmp_path / "repo")
    with pytest.raises(ConfigError, match="invalid parameter 'data.fetched_dir'"):
        _load(root, f"data.fetched_dir={value}")


@pytest.mark.parametrize("value", ["..", "../fetched", "data/../../fetched"])
def test_relative_fetched_dir_must_stay_inside(tmp_path: Path, value: str) -> None:
    root = _project(tmp_path / "repo")
    with pytest.raises(ConfigError, match="'data.fetched_dir'.*leaves the project"):
        _load(root, f"data.fetched_dir={value}")


@pytest.mark.parametrize("value", ["src", "src/data", ".git/x", ".dvc", "model", ".cybulde/fetched"])
def test_fetched_dir_may_not_lie_in_the_projects_own_folders(tmp_path: Path, value: str) -> None:
    root = _project(tmp_path / "repo")
    top = value.split("/")[0]
    with pytest.raises(ConfigError, match=f"'data.fetched_dir'.*own folder '{top}/'"):
        _load(root, f"data.fetched_dir={value}")


def test_absolute_fetched_dir_may_not_contain_the_project(tmp_path: Path) -> None:
    root = _project(tmp_path / "repo")
    for value in (str(root), str(tmp_path), "/"):
        with pytest.raises(ConfigError, match="'data.fetched_dir'.*one of its parents"):
            _load(root, f"data.fetched_dir={value}")
    with pytest.raises(ConfigError, match="home folder"):
        _load(root, f"data.fetched_dir={Path.home()}")


def test_accepted_fetched_dirs(tmp_path: Path) -> None:
    root = _project(tmp_path / "repo")
    assert _load(root, "data.fetched_dir=data/fetched").data.fetched_dir == "data/fetched"
    assert _load(root, "data.fetched_dir=./fetched/v1").data.fetched_dir == "./fetched/v1"
    outside = tmp_path / "scratch" / "fetched"  # absolute and outside: the explicit choice
    assert _load(root, f"data.fetched_dir={outside}").data.fetched_dir == str(outside)
    inside = root / "data" / "fetched"
    assert _load(root, f"data.fetched_dir={inside}").data.fetched_dir == str(inside)


def test_registry_may_not_be_the_project_or_overlap_the_fetched_data(tmp_path: Path) -> None:
    root = _project(tmp_path / "repo")
    for value in (".", "..", str(root), f"file://{tmp_path}"):
        with pytest.raises(ConfigError, match="'data.registry'.*one of its parents"):
            _load(root, f"data.registry={value}")
    for value in ("data/fetched", "data", "data/fetched/registry"):
        with pytest.raises(ConfigError, match="'data.registry'.*overlaps data.fetched_dir"):
            _load(root, f"data.registry={value}")
    assert _load(root, "data.registry=../registry").data.registry == "../registry"
    assert _load(root, "data.registry=gs://bucket/registry").data.registry == "gs://bucket/registry"


@pytest.mark.parametrize("uri, redacted", [
    ("postgresql://bob:secret@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),
    ("postgresql://bob:p@ss:w/rd%2@db/mlflow", "postgresql://bob:***@db/mlflow"),
    ("https://t0ken@mlflow.example.com", "https://***@mlflow.example.com"),
    ("postgresql://bob@db/mlflow?sslmode=require&Password=s3&sslkey=/k.pem",
     "postgresql://***@db/mlflow?sslmode=require&Password=***&sslkey=***"),
    ("postgresql://db/mlflow?password=a&b;c&application_name=x", "postgresql://db/mlflow?password=***&application_name=x"),
    ("https://mlflow.example.com/?token=abc#top", "https://mlflow.example.com/?token=***#top"),
    ("sqlite:////srv/a@b/mlflow.db", "sqlite:////srv/a@b/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("mlruns", "mlruns"),
])
def test_redact_uri_hides_every_password_and_secret_parameter(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted
