"""The resume state's key and folder (cybulde.training.resume)."""

import json
import shutil
from pathlib import Path

import pytest

from cybulde.config.schema import Config
from cybulde.training.resume import (
    RESUME_DIR,
    ResumeState,
    agreed_step,
    code_digest,
    open_resume_state,
    result_params,
    resume_key,
)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cybulde"


@pytest.mark.parametrize("key, value", [("train.checkpoint_every_n_steps", 7), ("train.log_every_n_steps", 3),
                                        ("launch.max_restarts", 0), ("launch.rdzv_endpoint", "10.0.0.1:1"),
                                        ("mlflow.run_id", "abc"), ("evaluation.batch_size", 8),
                                        ("data.fetched_dir", "elsewhere")])
def test_settings_that_do_not_change_the_weights_keep_the_key(key, value):
    changed = Config()
    section, name = key.split(".")
    setattr(getattr(changed, section), name, value)
    assert resume_key(changed, "data", "code") == resume_key(Config(), "data", "code")


@pytest.mark.parametrize("key, value", [("train.lr", 0.5), ("train.seed", 1), ("model.dropout", 0.2),
                                        ("launch.nproc_per_node", 4), ("launch.threads_per_rank", 3),
                                        ("train.batch_size", 8)])
def test_what_changes_the_weights_changes_the_key(key, value):
    changed = Config()
    section, name = key.split(".")
    setattr(getattr(changed, section), name, value)
    assert resume_key(changed, "data", "code") != resume_key(Config(), "data", "code")
    assert key in result_params(Config())


def test_data_and_code_are_in_the_key():
    base = resume_key(Config(), "data-a", "code-a")
    assert resume_key(Config(), "data-b", "code-a") != base
    assert resume_key(Config(), "data-a", "code-b") != base


def test_code_digest_covers_the_training_code(tmp_path):
    copy = tmp_path / "cybulde"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(copy) == code_digest(PACKAGE)
    (copy / "training" / "module.py").write_text((copy / "training" / "module.py").read_text() + "\n# edit\n")
    edited = code_digest(copy)
    assert edited != code_digest(PACKAGE)
    (copy / "evaluation" / "metrics.py").write_text("# not training code\n")
    assert code_digest(copy) == edited


def test_other_keys_and_stray_temporary_files_go(tmp_path):
    base = tmp_path / RESUME_DIR
    (base / "stale-key").mkdir(parents=True)
    (base / "stale-key" / "last.ckpt").write_bytes(b"old")
    (base / "mine").mkdir()
    (base / "mine" / "last.ckpt").write_bytes(b"current")
    (base / "mine" / "last.ckpt.tmp-123").write_bytes(b"half")
    follower = open_resume_state(tmp_path, "mine", node_leader=False)
    assert (base / "stale-key").exists()  # only the first rank of a node cleans up
    state = open_resume_state(tmp_path, "mine", node_leader=True)
    assert state == follower and sorted(path.name for path in base.iterdir()) == ["mine"]
    assert sorted(path.name for path in state.folder.iterdir()) == ["last.ckpt"]


def test_the_run_id_is_kept_with_the_state(tmp_path):
    state = ResumeState(tmp_path / "key")
    assert state.run_id() == "" and state.saved_step() is None
    state.record_run("0123abcd")
    assert state.run_id() == "0123abcd"
    assert json.loads((state.folder / "run.json").read_text()) == {"run_id": "0123abcd"}
    state.remove()
    assert not state.folder.exists()


def test_a_broken_checkpoint_counts_as_none(tmp_path):
    state = ResumeState(tmp_path)
    state.last_checkpoint.write_bytes(b"not a checkpoint")
    assert state.saved_step() is None


def test_one_process_agrees_with_itself():
    assert agreed_step(12, 1) == 12 and agreed_step(None, 1) is None
