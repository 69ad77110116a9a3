"""Recording which params a process reads: real processes, one JSON line per (key, reading module)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

from cybulde.config.access import RECORD_ENV, _Recorder, read_records
from cybulde.config.loader import load_config, to_dict
from cybulde.config.schema import Config, TrainConfig

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"

SCRIPT = """
import pickle, sys
from cybulde.config.loader import load_config, to_dict, to_flat_dict
from cybulde.config.paths import fetched_path
from cybulde.training.distributed import LaunchEnv, threads_per_rank

cfg = load_config(sys.argv[1])
cfg.train.lr, cfg.train.lr, cfg.model.scratch.hidden_size   # a key read twice is one record
fetched_path(cfg)                                              # read by a config helper for this script
threads_per_rank(cfg, LaunchEnv(1, 0, 0, 1, False))           # read inside another project module
section = cfg.evaluation                                        # taking a section reads no key
print(type(cfg).__name__, type(pickle.loads(pickle.dumps(cfg))).__name__)
"""


def run_script(tmp_path: Path, record: bool) -> subprocess.CompletedProcess:
    script = tmp_path / "reader.py"
    script.write_text(SCRIPT)
    env = {"PATH": "/usr/bin:/bin", **({RECORD_ENV: str(tmp_path / "reads")} if record else {})}
    return subprocess.run([sys.executable, str(script), str(REPO_PARAMS)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=True)


def test_a_process_records_each_key_it_reads_once_with_the_module_that_read_it(tmp_path: Path) -> None:
    result = run_script(tmp_path, record=True)
    records = read_records(tmp_path / "reads")
    entry = str(tmp_path / "reader.py")
    assert records == [
        {"entry": entry, "key": "train.lr", "module": "__main__"},
        {"entry": entry, "key": "model.scratch.hidden_size", "module": "__main__"},
        {"entry": entry, "key": "data.fetched_dir", "module": "__main__"},
        {"entry": entry, "key": "launch.threads_per_rank", "module": "cybulde.training.distributed"},
    ]
    assert result.stdout.split() == ["RecordingConfig", "RecordingConfig"]  # picklable


def test_without_the_variable_nothing_is_recorded_and_the_config_is_plain(tmp_path: Path) -> None:
    result = run_script(tmp_path, record=False)
    assert not (tmp_path / "reads").exists()
    assert result.stdout.split() == ["Config", "Config"]


def test_serialising_the_config_reads_every_key_for_its_caller(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_Recorder, "path", None)  # this process's recorder is restored afterwards
    monkeypatch.setattr(_Recorder, "seen", set())
    monkeypatch.setenv(RECORD_ENV, str(tmp_path / "reads"))
    config = load_config(REPO_PARAMS)
    plain = to_dict(Config())
    assert to_dict(config) == plain  # recording changes no value
    assert isinstance(config.train, TrainConfig) and config.train == config.train
    keys = {record["key"] for record in read_records(tmp_path / "reads")}
    assert "train.lr" in keys and "mlflow.run_id" in keys and "model.scratch.num_hidden_layers" in keys
    copy = pickle.loads(pickle.dumps(config))
    assert to_dict(copy) == plain
