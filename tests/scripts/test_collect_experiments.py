"""scripts/collect_experiments.py: DVC experiments' committed metrics copied into results/."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.script_module import load_script

REPO_PARAMS = Path(__file__).parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def collect() -> ModuleType:
    return load_script("scripts/collect_experiments.py")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def commit_run(repo: Path, lr: str, seed: int, test_f1: float, dataset: str = "tweeteval_offensive",
               registry: str = "registry") -> str:
    params = re.sub(r"(?m)^  lr: .*$", f"  lr: {lr}", REPO_PARAMS.read_text(encoding="utf-8"))
    params = re.sub(r"(?m)^  seed: .*$", f"  seed: {seed}", params)
    params = re.sub(r"(?m)^  dataset: .*$", f"  dataset: {dataset}", params)
    params = re.sub(r"(?m)^  registry: .*$", f"  registry: {registry}", params)
    (repo / "params.yaml").write_text(params, encoding="utf-8")
    files = {"train.json": {"best_val_macro_f1": 0.7},
             "validation.json": {"macro_f1": 0.7}, "validation_per_class.json": {"a": {"f1": 0.5}},
             "test.json": {"macro_f1": test_f1}, "test_per_class.json": {"a": {"f1": test_f1 - 0.1}},
             "baseline/validation.json": {"macro_f1": 0.65}, "baseline/test.json": {"macro_f1": 0.6},
             "baseline/details.json": {"C": 2.0, "per_class": {"validation": {}, "test": {"a": {"f1": 0.4}}}}}
    for name, content in files.items():
        (repo / "metrics" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "metrics" / name).write_text(json.dumps(content), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"run lr={lr}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "config", "user.name", "test")
    base = commit_run(repo, "5.0e-05", 1234, 0.80)
    experiment = commit_run(repo, "1.0e-04", 7, 0.82)
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/high-lr", experiment)
    other_data = commit_run(repo, "5.0e-05", 1234, 0.5, dataset="tweeteval_hate")
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/hate", other_data)
    git(repo, "reset", "-q", "--hard", base)
    return repo


def test_sweep_and_seed_records_come_from_the_experiment_commit(collect: ModuleType, repo: Path) -> None:
    assert collect.main(["sweep", "high-lr", "default=HEAD", "--note", "lr", "--root", str(repo)]) == 0
    high = json.loads((repo / "results" / "sweep" / "high-lr.json").read_text())
    default = json.loads((repo / "results" / "sweep" / "default.json").read_text())
    assert high["params"]["train.lr"] == pytest.approx(1e-4) and default["params"]["train.lr"] == pytest.approx(5e-5)
    assert high["params"]["train.freeze_embeddings"] is not None  # complete: schema defaults filled in
    assert high["validation"] == {"macro_f1": 0.7, "per_class": {"a": {"f1": 0.5}}}
    assert high["note"] == "lr" and high["test"] == {"macro_f1": 0.82, "per_class": {"a": {"f1": pytest.approx(0.72)}}}

    assert collect.main(["seeds", "high-lr", "--root", str(repo)]) == 0
    seed = json.loads((repo / "results" / "seeds" / "tweeteval_offensive-seed7.json").read_text())
    assert seed["seed"] == 7 and seed["test"] == {"macro_f1": 0.82, "per_class": {"a": {"f1": pytest.approx(0.72)}}}
    assert not (repo / "results" / "baselines").exists()  # the default dataset's is metrics/baseline/

    assert collect.main(["seeds", "hate", "--root", str(repo)]) == 0
    assert json.loads((repo / "results" / "seeds" / "tweeteval_hate-seed1234.json").read_text())["test"][
        "macro_f1"] == 0.5
    baseline = json.loads((repo / "results" / "baselines" / "tweeteval_hate.json").read_text())
    assert baseline["test"] == {"macro_f1": 0.6, "per_class": {"a": {"f1": 0.4}}} and baseline["C"] == 2.0
    assert baseline["validation"] == {"macro_f1": 0.65, "per_class": {}} and baseline["test_set"] == "tweeteval_hate"
    assert baseline["extra_training"] == []


def test_unknown_names_fail_before_writing(collect: ModuleType, repo: Path, capsys) -> None:
    assert collect.main(["sweep", "high-lr", "nosuch", "--root", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "nosuch" in err and "(experiments: hate, high-lr)" in err
    assert not (repo / "results").exists()


def test_a_multi_source_dataset_is_scored_on_its_own_source(collect: ModuleType, repo: Path, tmp_path: Path) -> None:
    from cybulde.preparation.publish import publish
    from cybulde.preparation.sources import ExtraTraining
    from tests.helpers.raw_data import write_davidson, write_tweeteval

    registry = tmp_path / "registry"
    extra = ExtraTraining("davidson2017", write_davidson(tmp_path / "raw" / "davidson2017"),
                          {"hate_speech": "offensive", "offensive_language": "offensive", "neither": "not-offensive"})
    version = re.search(r"(?m)^  version: (\S+)", REPO_PARAMS.read_text(encoding="utf-8")).group(1)  # the runs'
    publish("tweeteval_offensive", write_tweeteval(tmp_path / "raw" / "tweeteval_offensive"), str(registry), version,
            dataset="offensive_plus_davidson", extra_training=[extra], echo=None)
    base = git(repo, "rev-parse", "HEAD")
    mixed = commit_run(repo, "1.0e-04", 1234, 0.81, dataset="offensive_plus_davidson", registry=str(registry))
    git(repo, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/mixed", mixed)
    git(repo, "reset", "-q", "--hard", base)

    assert collect.main(["seeds", "mixed", "--root", str(repo)]) == 0
    seed = json.loads((repo / "results" / "seeds" / "offensive_plus_davidson-seed1234.json").read_text())
    assert seed["test_set"] == "tweeteval_offensive" and seed["extra_training"] == [extra.describe()]
    baseline = json.loads((repo / "results" / "baselines" / "offensive_plus_davidson.json").read_text())
    assert baseline["test_set"] == "tweeteval_offensive" and baseline["dataset"] == "offensive_plus_davidson"


def test_an_ensemble_averages_the_members_probabilities(collect: ModuleType, repo: Path, monkeypatch) -> None:
    import pandas as pd

    # Two runs over the same 4 rows; by hand, the mean probabilities of `b` are 0.55, 0.4, 0.6, 0.35, so the
    # ensemble predicts b, a, b, a (labels b, a, a, a): 3 of 4 right; F1 of `a` 2*2/(2*2+0+1) = 0.8, of `b`
    # 2*1/(2*1+1+0) = 0.667, macro 0.733. Alone, run 1 predicts b, a, b, b (F1 0.4 and 0.5) and run 2 a, a, a, a.
    tables = {"r1": [0.9, 0.3, 0.7, 0.6], "r2": [0.2, 0.5, 0.5, 0.1]}

    def predictions(root, commit, split):
        positive = tables[commit]
        return pd.DataFrame({"id": ["1", "2", "3", "4"], "label": ["b", "a", "a", "a"],
                             "prob_a": [1 - p for p in positive], "prob_b": positive})

    monkeypatch.setattr(collect, "run_predictions", predictions)
    member = {"dataset": "d", "version": "v1", "test_set": "d", "params": {"model.head": "softmax"}}
    record = collect.ensemble_record(repo, {"one": "r1", "two": "r2"}, [member, member])
    assert record["members"] == ["one", "two"] and record["dataset"] == "d"
    assert record["test"]["accuracy"] == 0.75
    assert record["test"]["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2, abs=1e-6)
    assert record["test"]["per_class"]["b"]["f1"] == pytest.approx(2 / 3, abs=1e-6)
    with pytest.raises(SystemExit, match="softmax heads"):
        collect.ensemble_record(repo, {"one": "r1"}, [{**member, "params": {"model.head": "sigmoid"}}])
