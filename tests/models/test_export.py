import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cybulde.config.schema import Adapter, Head, ModelConfig, Pooling, ScratchBackboneConfig
from cybulde.models.classifier import build_classifier
from cybulde.models.export import ModelFormatError, load_model, save_model
from tests.helpers import tiny_data
from tests.helpers.cpus import WITH_BF16, WITHOUT_BF16, fake_cpu


def tiny_model(data_dir, head="softmax", adapter="mlp", pooling="cls", hidden_states="float32"):
    config = ModelConfig(backbone="scratch", head=Head(head), adapter=Adapter(adapter), pooling=Pooling(pooling),
                         adapter_hidden_size=8, scratch=ScratchBackboneConfig(
                             hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=64))
    return build_classifier(config, tiny_data.read_manifest(data_dir), data_dir / "tokenizer",
                            hidden_states=hidden_states)


@pytest.mark.parametrize("head,adapter,pooling", [("softmax", "mlp", "cls"), ("sigmoid", "none", "mean"),
                                                  ("softmax", "none", "pooler")])
def test_exported_model_loads_safely_and_gives_identical_logits(tmp_path, monkeypatch, head, adapter, pooling):
    data_dir = tiny_data.make_data_dir(tmp_path / "data")
    torch.manual_seed(0)
    model = tiny_model(data_dir, head, adapter, pooling).eval()
    out = save_model(model, tmp_path / "model", {"dataset": "tiny", "version": "v1"}, data_dir / "tokenizer")
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # no pickle

    monkeypatch.chdir(tmp_path)  # no params.yaml anywhere: the model describes itself
    loaded = load_model(out)
    assert not loaded.model.training
    assert loaded.config["head"] == head and loaded.config["label_names"] == ["none", "offensive"]
    assert loaded.config["metadata"] == {"dataset": "tiny", "version": "v1"}
    assert loaded.model.head.num_outputs == (1 if head == "sigmoid" else 2)
    encoded = loaded.tokenizer(["the cat idiot", "a day"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(encoded["input_ids"], encoded["attention_mask"])
        after = loaded.model(encoded["input_ids"], encoded["attention_mask"])
    assert torch.equal(before, after)


SINGLE_LABEL_KEYS = {"format_version", "backbone", "backbone_config", "pooling", "adapter", "adapter_hidden_size",
                     "dropout", "head", "num_labels", "num_outputs", "label_names", "max_length", "metadata"}


def test_a_single_label_export_keeps_exactly_its_keys(tmp_path):
    data_dir = tiny_data.make_data_dir(tmp_path / "data")
    out = save_model(tiny_model(data_dir), tmp_path / "model", {}, data_dir / "tokenizer")
    assert set(json.loads((out / "config.json").read_text())) == SINGLE_LABEL_KEYS  # no task, no source_names


def test_a_multilabel_export_records_its_task_questions_and_sources(tmp_path, monkeypatch):
    data_dir = tiny_data.make_multilabel_data_dir(tmp_path / "data")
    torch.manual_seed(0)
    model = tiny_model(data_dir, "multilabel", "none", "mean").eval()
    out = save_model(model, tmp_path / "model", {"dataset": "tiny-multi"}, data_dir / "tokenizer")
    config = json.loads((out / "config.json").read_text())
    assert set(config) == SINGLE_LABEL_KEYS | {"task", "source_names"}
    assert config["task"] == "multilabel" and config["head"] == "multilabel"
    assert config["label_names"] == ["abusive", "hate"] and config["num_outputs"] == 2
    assert config["source_names"] == ["alpha", "beta", "gamma"]

    monkeypatch.chdir(tmp_path)
    loaded = load_model(out)
    assert loaded.model.source_names == ["alpha", "beta", "gamma"] and loaded.model.task == "multilabel"
    encoded = loaded.tokenizer(["the cat idiot", "a day vermin"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(encoded["input_ids"], encoded["attention_mask"]),
                           loaded.model(encoded["input_ids"], encoded["attention_mask"]))


def test_a_bf16_hidden_states_export_records_it_and_is_scored_as_it_was_validated(tmp_path, monkeypatch):
    data_dir = tiny_data.make_data_dir(tmp_path / "data")
    torch.manual_seed(0)
    model = tiny_model(data_dir, hidden_states="bf16").eval()
    out = save_model(model, tmp_path / "model", {}, data_dir / "tokenizer")
    config = json.loads((out / "config.json").read_text())
    assert set(config) == SINGLE_LABEL_KEYS | {"hidden_states"} and config["hidden_states"] == "bf16"

    monkeypatch.chdir(tmp_path)
    loaded = load_model(out)
    float32_states = tiny_model(data_dir).eval()  # the same weights, as a config without the key rebuilds them
    float32_states.load_state_dict(loaded.model.state_dict())
    encoded = loaded.tokenizer(["the cat idiot", "a day"], padding=True, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        validated = model(encoded["input_ids"], encoded["attention_mask"])
        scored = loaded.model(encoded["input_ids"], encoded["attention_mask"])
        without_the_key = float32_states(encoded["input_ids"], encoded["attention_mask"])
    assert torch.equal(scored, validated)
    assert not torch.equal(without_the_key, validated)  # so the key is what makes the scores equal


@pytest.mark.parametrize("head,maker,message", [
    ("softmax", "make_multilabel_data_dir", r"model.head=softmax cannot learn tiny-multi/v1: its task is 'multilabel'"),
    ("sigmoid", "make_multilabel_data_dir", r"model.head=sigmoid .*set model.head=multilabel"),
    ("multilabel", "make_data_dir", r"model.head=multilabel needs a multi-label dataset version, but tiny/v1 has "
                                    r"task 'multiclass'"),
])
def test_a_head_that_cannot_learn_the_datasets_task_is_refused(tmp_path, head, maker, message):
    from cybulde.models.classifier import HeadTaskMismatchError

    data_dir = getattr(tiny_data, maker)(tmp_path / "data")
    with pytest.raises(HeadTaskMismatchError, match=message):
        tiny_model(data_dir, head)


def test_loading_a_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="not an exported model directory"):
        load_model(tmp_path)


def test_unknown_format_version_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ModelFormatError, match="format_version=99"):
        load_model(tmp_path)




@pytest.mark.parametrize(("trained_with", "cpuinfo", "expected"), [
    ("auto", WITH_BF16, "bf16-mixed"), ("auto", WITHOUT_BF16, "32-true"),
    ("32-true", WITH_BF16, "32-true"), ("bf16-mixed", WITHOUT_BF16, "bf16-mixed"), (None, WITH_BF16, "32-true")])
def test_inference_precision_resolves_the_trained_setting_on_this_machine(tmp_path, monkeypatch, trained_with,
                                                                          cpuinfo, expected):
    from cybulde.models.export import inference_precision

    fake_cpu(tmp_path, monkeypatch, cpuinfo)
    train_params = {} if trained_with is None else {"train": {"precision": trained_with}}
    config = {"metadata": {"train_params": train_params}}
    assert inference_precision(config, "cpu").precision == expected


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs mounted for the test (needs root); skips where mounting is not allowed."""
    import shutil
    import subprocess

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() if mounted else 'no mount command'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(disk, leave_bytes):
    """Fill `disk` with one file until `leave_bytes` are free."""
    import os

    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as filler:
        filler.write(b"\0" * max(0, free - leave_bytes))


def test_a_full_disk_leaves_the_previous_model_whole(tmp_path, tiny_disk):
    from cybulde.models.export import ModelExportError

    data_dir = tiny_data.make_data_dir(tmp_path / "data")
    model = tiny_model(data_dir)
    exported = save_model(model, tiny_disk / "model", {"run": 1}, data_dir / "tokenizer")
    before = {path.relative_to(exported): path.read_bytes() for path in exported.rglob("*") if path.is_file()}
    weights_size = (exported / "model.safetensors").stat().st_size

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    fill(tiny_disk, leave_bytes=weights_size // 2)  # room for half of the new weights
    with pytest.raises(ModelExportError, match="No space left on device.*left as it was"):
        save_model(model, tiny_disk / "model", {"run": 2}, data_dir / "tokenizer")

    after = {path.relative_to(exported): path.read_bytes() for path in exported.rglob("*") if path.is_file()}
    assert after == before  # the previous export, whole
    assert sorted(path.name for path in tiny_disk.iterdir()) == ["filler", "model"]  # no staging folder left
    assert load_model(exported).config["metadata"] == {"run": 1}


def test_leftovers_of_a_killed_export_are_removed_by_the_next(tmp_path):
    data_dir = tiny_data.make_data_dir(tmp_path / "data")
    for leftover in (".model.partial-x1", ".model.old-x2"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "model.safetensors").write_bytes(b"half")
    save_model(tiny_model(data_dir), tmp_path / "model", {}, data_dir / "tokenizer")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "model"]

# -- file modes: an exported model is ordinary project data -------------------------------------------
NOBODY = 65534  # the owner of the files in the cross-user test
LOAD = "import sys; from cybulde.models.export import load_model; load_model(sys.argv[1]); print('loaded')"


def export_tiny_model(folder):
    data_dir = tiny_data.make_data_dir(folder / "data")
    return save_model(tiny_model(data_dir), folder / "model", {}, data_dir / "tokenizer")


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


def test_a_config_asking_for_huge_tensors_is_refused_before_allocating(tmp_path):
    """config.json says vocab_size 10^9 (64 GB of embeddings); the weights hold a tiny model. Under
    `ulimit -v` a regression fails the load instead of exhausting the machine."""
    from tests.helpers.bounded import quiet_environment, under_memory_limit

    exported = export_tiny_model(tmp_path)
    config_path = exported / "config.json"
    config = json.loads(config_path.read_text())
    config["backbone_config"]["vocab_size"] = 10**9
    config_path.write_text(json.dumps(config))
    result = subprocess.run(under_memory_limit([sys.executable, "-c", LOAD, str(exported)], 4096),
                            capture_output=True, text=True, timeout=120, env=quiet_environment())
    assert result.returncode == 1
    assert "ModelFormatError" in result.stderr and "MemoryError" not in result.stderr
    assert (f"{config_path} does not match {exported / 'model.safetensors'}: tensor "
            f"backbone.embeddings.word_embeddings.weight is [1,000,000,000, 16] in the config's architecture "
            f"and [") in result.stderr
