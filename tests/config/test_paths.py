from pathlib import Path

from cybulde.config.paths import project_root, resolve_location, workspace_root


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
