"""An exported model is ordinary project data: another user can read it, and one that cannot is told why."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cybulde.config.schema import ModelConfig, ScratchBackboneConfig
from cybulde.models.classifier import build_classifier
from cybulde.models.export import save_model
from tests.helpers import tiny_data

NOBODY = 65534  # the owner of the files in the cross-user test
LOAD = "import sys; from cybulde.models.export import load_model; load_model(sys.argv[1]); print('loaded')"


def export_tiny_model(folder: Path) -> Path:
    data_dir = tiny_data.make_data_dir(folder / "data")
    config = ModelConfig(backbone="scratch", scratch=ScratchBackboneConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    torch.manual_seed(0)
    model = build_classifier(config, tiny_data.read_manifest(data_dir), data_dir / "tokenizer")
    return save_model(model, folder / "model", {}, data_dir / "tokenizer")


def modes(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mode & 0o777 for path in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_files_get_the_modes_open_and_mkdir_give_under_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        model_dir = export_tiny_model(tmp_path)
        (tmp_path / "plain-folder").mkdir()
        (tmp_path / "plain-file").write_bytes(b"")  # what an ordinary writer gets under this umask
    finally:
        os.umask(previous)
    folder_mode = (tmp_path / "plain-folder").stat().st_mode & 0o777
    file_mode = (tmp_path / "plain-file").stat().st_mode & 0o777
    expected = {name: folder_mode if (model_dir / name).is_dir() else file_mode for name in modes(model_dir)}
    assert modes(model_dir) == expected


def load_as_another_user(model_dir: Path) -> subprocess.CompletedProcess:
    """Load `model_dir` in a process that file permissions apply to: as root, one without the capabilities
    that bypass them (the files belong to another uid, see the test)."""
    command = [sys.executable, "-c", LOAD, str(model_dir)]
    if os.getuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.getuid() == 0 and shutil.which("setpriv") is None,
                    reason="as root, needs setpriv (util-linux) to run a reader that permissions apply to")
def test_another_user_loads_an_exported_model_and_an_unreadable_one_is_named(tmp_path):
    tmp_path.chmod(0o755)  # a folder others may enter (pytest makes it private)
    model_dir = export_tiny_model(tmp_path)
    if os.getuid() == 0:  # the model now belongs to someone else, as one exported by a teammate or a CI job
        for path in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        readable = load_as_another_user(model_dir)
        assert readable.returncode == 0 and "loaded" in readable.stdout, readable.stderr

    (model_dir / "model.safetensors").chmod(0o600 if os.getuid() == 0 else 0o000)
    refused = load_as_another_user(model_dir)
    assert refused.returncode != 0
    last_line = refused.stderr.strip().splitlines()[-1]
    assert f"cannot read {model_dir / 'model.safetensors'}: permission denied" in last_line
    assert "No such file" not in refused.stderr
