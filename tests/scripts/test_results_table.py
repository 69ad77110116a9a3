"""scripts/results_table.py: the results tables of docs/results.md generated from metrics files."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.script_module import load_script

PAGE = "# Results\n\n## Tables\n\n<!-- results:start -->\nSTALE-CONTENT\n<!-- results:end -->\n\n## After\n"


def results_page(root: Path) -> Path:
    return root / "docs" / "results.md"


def write_page(root: Path, text: str) -> None:
    results_page(root).parent.mkdir(parents=True, exist_ok=True)
    results_page(root).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def results_table() -> ModuleType:
    return load_script("scripts/results_table.py")


def split_metrics(macro_f1: float) -> dict:
    return {"macro_f1": macro_f1, "accuracy": 0.9, "per_class": {"hate_speech": {"f1": 0.31}}}


def write_split(root: Path, prefix: str, split: str, macro_f1: float) -> None:
    """A split as the stages write it: headline numbers, and the per-class detail beside them."""
    record = split_metrics(macro_f1)
    per_class = record.pop("per_class")
    write(root / "metrics" / f"{prefix}{split}.json", record)
    if not prefix:
        write(root / "metrics" / f"{split}_per_class.json", per_class)


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_page(tmp_path, PAGE)
    (tmp_path / "params.yaml").write_text("data:\n  dataset: tweeteval_offensive\n  version: v1\n")
    write_split(tmp_path, "", "validation", 0.81)
    write_split(tmp_path, "", "test", 0.8312)
    write_split(tmp_path, "baseline/", "validation", 0.7)
    write_split(tmp_path, "baseline/", "test", 0.727)
    write(tmp_path / "metrics" / "baseline" / "details.json", {
        "dataset": "tweeteval_offensive", "C": 8.0, "class_weight": "balanced",
        "per_class": {"validation": {"hate_speech": {"f1": 0.3}}, "test": {"hate_speech": {"f1": 0.46}}}})
    for seed, score in ((1, 0.83), (2, 0.84), (3, 0.85)):
        write(tmp_path / "results" / "seeds" / f"davidson-{seed}.json",
              {"dataset": "davidson2017", "seed": seed, "validation": split_metrics(0.8),
               "test": split_metrics(score)})
    write(tmp_path / "results" / "cross" / "offensive-on-davidson.json", {
        "model": {"dataset": "tweeteval_offensive"}, "data": {"dataset": "davidson2017", "version": "v1"},
        "split": "test", "label_map": {"hate_speech": "offensive"}, "macro_f1": 0.6})
    return tmp_path


def run(results_table: ModuleType, project: Path, *extra: str) -> int:
    return results_table.main(["--root", str(project), *extra])


def test_generates_the_section(results_table: ModuleType, project: Path) -> None:
    assert run(results_table, project) == 0
    page = results_page(project).read_text(encoding="utf-8")
    assert page.startswith("# Results\n\n## Tables\n\n<!-- results:start -->\n")
    assert page.endswith("<!-- results:end -->\n\n## After\n")
    assert "STALE-CONTENT" not in page
    assert "| **cybulde MiniLM-L6** (default pipeline, `metrics/test.json`) | 0.831 | — | — |" in page
    assert "0.840 ± 0.010 (n=3)" in page
    assert "hate_speech 0.310 ± 0.000" in page  # per-class F1 of the seeds, mean ± std
    assert "| **cybulde TF-IDF + logistic regression** (baseline) | 0.727 |" in page
    assert "| TF-IDF + LR (C=8.0, class_weight=balanced) | tweeteval_offensive | 0.700 | 0.727 | 0.900 | " \
           "hate_speech 0.460 |" in page  # details.json joined in: C, class weights, per-class F1
    assert "Barbieri et al. 2020" in page and "0.829" in page
    assert "hate_speech 0.310" in page
    assert "| tweeteval_offensive | 0.600 |" in page
    assert "validation split only" in page


def test_check_passes_when_current_and_fails_when_stale(results_table: ModuleType, project: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(results_table, project, "--check") == 1
    assert "out of date" in capsys.readouterr().err
    assert run(results_table, project) == 0
    before = results_page(project).read_bytes()
    assert run(results_table, project, "--check") == 0
    assert run(results_table, project) == 0
    assert results_page(project).read_bytes() == before
    write_split(project, "", "test", 0.85)
    assert run(results_table, project, "--check") == 1


def test_a_run_without_per_class_detail_or_baseline_details_shows_what_it_has(
        results_table: ModuleType, project: Path) -> None:
    (project / "metrics" / "test_per_class.json").unlink()
    (project / "metrics" / "baseline" / "details.json").unlink()
    assert run(results_table, project) == 0
    page = results_page(project).read_text(encoding="utf-8")
    assert "| MiniLM-L6 (default pipeline) | tweeteval_offensive | 0.810 | 0.831 | 0.900 | — |" in page
    assert "(baseline) | 0.727 |" not in page  # an incomplete baseline output is not a result


def test_missing_markers_is_an_error(results_table: ModuleType, project: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_page(project, "# no markers\n")
    assert run(results_table, project) == 2
    assert "results:start" in capsys.readouterr().err


def test_works_without_any_metrics(results_table: ModuleType, tmp_path: Path) -> None:
    write_page(tmp_path, PAGE)
    (tmp_path / "params.yaml").write_text("data:\n  dataset: tweeteval_offensive\n")
    assert run(results_table, tmp_path) == 0
    assert "OffensEval-2019 winner" in results_page(tmp_path).read_text(encoding="utf-8")


def test_sweep_table_shows_the_params_the_sweep_varies(results_table: ModuleType, project: Path) -> None:
    for name, dataset, lr, score in (("low-lr", "tweeteval_offensive", 5e-5, 0.76),
                                     ("high-lr", "tweeteval_offensive", 1e-4, 0.78),
                                     ("davidson", "davidson2017", 1e-4, 0.79)):
        write(project / "results" / "sweep" / f"{name}.json", {
            "name": name, "dataset": dataset, "note": f"{name} note",
            "params": {"train.lr": lr, "train.epochs": 1}, "validation": split_metrics(score),
            "test": split_metrics(1.6 - score)})
    assert run(results_table, project) == 0
    page = results_page(project).read_text(encoding="utf-8")
    assert ("| Experiment | Dataset | `train.lr` | Validation macro-F1 | Test macro-F1 (not used to choose) | Note |"
            in page)  # epochs never varies
    assert page.index("| high-lr | tweeteval_offensive | 0.0001 | 0.780 | 0.820 | high-lr note |") < page.index(
        "| low-lr | tweeteval_offensive | 5e-05 | 0.760 | 0.840 | low-lr note |")  # ranked on validation only
    # Per dataset (the default one first): a higher score on another dataset ranks nothing.
    assert page.index("| low-lr |") < page.index("| davidson | davidson2017 | 0.0001 | 0.790 | 0.810 |")


def test_ensembles_and_time_to_quality_are_shown(results_table: ModuleType, project: Path) -> None:
    write(project / "results" / "ensembles" / "tweeteval_offensive.json", {
        "dataset": "tweeteval_offensive", "test_set": "tweeteval_offensive", "members": ["a", "b", "c"],
        "validation": split_metrics(0.79), "test": split_metrics(0.8123)})
    runs = [{"system": system, "seed": seed, "train_s": train_s, "samples_per_s": 100.0 + seed,
             "val_macro_f1": 0.78, "test_macro_f1": test}
            for system, train_s, scores in (("ours", 200.0, (0.80, 0.82)), ("hf", 300.0, (0.81, 0.81)))
            for seed, test in enumerate(scores)]
    write(project / "results" / "time_to_quality.json", {
        "machine": {"device": "Test CPU", "native_bf16": True, "accelerator": "cpu", "budget_s": 600, "seeds": [0, 1],
                    "batch_size": 32}, "runs": runs})
    assert run(results_table, project) == 0
    page = results_page(project).read_text(encoding="utf-8")
    assert "| **cybulde MiniLM-L6** (ensemble of the 3 seeds: mean class probabilities) | 0.812 | — | — |" in page
    assert "| MiniLM-L6 (ensemble of 3 seeds) | tweeteval_offensive | 0.790 | 0.812 | 0.900 |" in page
    assert "Test CPU (native bf16: yes), CPU; a budget of 600 s of training per run; seeds 0, 1; global batch 32." in page
    # By hand: ours test (0.80, 0.82) -> 0.810 ± 0.014; samples/s (100, 101) -> 100.5 ± 0.7.
    assert "| cybulde (default params) | 2 | 200 ± 0 | 100.5 ± 0.7 | 0.780 ± 0.000 | 0.810 ± 0.014 |" in page


def test_a_multi_source_model_is_scored_under_its_test_set(results_table: ModuleType, project: Path) -> None:
    extra = [{"source": "tweeteval_offensive", "label_map": {"offensive": "hate", "not-offensive": "not-hate"}}]
    write(project / "results" / "seeds" / "hate_plus-seed1.json", {
        "dataset": "hate_plus", "test_set": "tweeteval_hate", "extra_training": extra, "seed": 1,
        "validation": split_metrics(0.7), "test": split_metrics(0.56)})
    write(project / "results" / "baselines" / "hate_plus.json", {
        "dataset": "hate_plus", "test_set": "tweeteval_hate", "extra_training": extra, "C": 1.0,
        "validation": split_metrics(0.7), "test": split_metrics(0.41)})
    assert run(results_table, project) == 0
    page = results_page(project).read_text(encoding="utf-8")
    assert "| System | tweeteval_offensive | tweeteval_hate | davidson2017 |" in page  # no hate_plus column
    assert ("| **cybulde MiniLM-L6** + tweeteval_offensive train (default recipe, mean ± std over n seeds) "
            "| — | 0.560 (n=1) | — |") in page
    assert "| **cybulde TF-IDF + logistic regression** + tweeteval_offensive train (baseline) | — | 0.410 | — |" in page


def multi_source_split(own: dict[str, float], hate_speech_f1: float, ece: float | None = None) -> dict:
    """A multi-label model's metrics as the stages write them: each source in its own labels."""
    record = {"macro_f1": 0.7, **{f"own_labels_macro_f1/{source}": value for source, value in own.items()},
              "per_class": {"own_labels": {"davidson2017": {"f1": {"hate_speech": hate_speech_f1}}}}}
    return {**record, "ece/hate": ece} if ece is not None else record


def test_a_multi_source_model_gets_a_column_per_source_and_a_table_beside_the_single_ones(
        results_table: ModuleType, project: Path) -> None:
    sources = ["tweeteval_offensive", "tweeteval_hate", "davidson2017"]
    for seed, (offensive, hate, davidson, hate_speech) in ((1, (0.80, 0.52, 0.76, 0.40)),
                                                           (2, (0.82, 0.54, 0.78, 0.44))):
        write(project / "results" / "seeds" / f"harm-seed{seed}.json", {
            "dataset": "harm", "test_set": "harm", "test_sets": sources, "seed": seed,
            "validation": multi_source_split({}, 0.0),
            "test": multi_source_split({"tweeteval_offensive": offensive, "tweeteval_hate": hate,
                                        "davidson2017": davidson}, hate_speech, ece=0.05 * seed)})
    write(project / "results" / "baselines" / "harm.json", {
        "dataset": "harm", "test_set": "harm", "test_sets": sources, "C": 1.0, "validation": {},
        "test": multi_source_split({"tweeteval_offensive": 0.74, "tweeteval_hate": 0.40, "davidson2017": 0.70}, 0.35)})
    assert run(results_table, project) == 0
    page = results_page(project).read_text(encoding="utf-8")
    assert "| System | tweeteval_offensive | tweeteval_hate | davidson2017 |" in page  # no `harm` column
    # By hand: (0.80, 0.82) -> 0.810 ± 0.014; (0.52, 0.54) -> 0.530 ± 0.014; (0.76, 0.78) -> 0.770 ± 0.014.
    assert ("| **cybulde MiniLM-L6** multi-source (`harm`: one model, all its sources; mean ± std over n seeds) "
            "| 0.810 ± 0.014 (n=2) | 0.530 ± 0.014 (n=2) | 0.770 ± 0.014 (n=2) |") in page
    assert "| **cybulde TF-IDF + logistic regression** multi-source (`harm`, baseline) | 0.740 | 0.400 | 0.700 |" in page
    # Beside the single-source Davidson seeds of the fixture (test 0.83, 0.84, 0.85; hate_speech F1 0.31).
    assert "| davidson2017: macro-F1 | 0.840 ± 0.010 (n=3) | 0.770 ± 0.014 (n=2) | — | 0.700 |" in page
    assert "| davidson2017: `hate_speech` F1 | 0.310 ± 0.000 (n=3) | 0.420 ± 0.028 (n=2) | — | 0.350 |" in page
    assert "`hate` 0.075 ± 0.035" in page  # ECE (0.05, 0.10)
