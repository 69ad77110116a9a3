"""The pull-request report on two real commits of a small DVC repo, and on this repository's history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cybulde.reproducibility.report import (
    ReportError,
    build_report,
    confusion_counts,
    figure_name,
    main,
    plot_specs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DVC_YAML = {"stages": {"evaluate": {
    "cmd": "python evaluate.py",
    "params": ["train.lr"],
    "outs": [{"metrics/test_per_class.json": {"cache": False}}],
    "metrics": [{"metrics/test.json": {"cache": False}}],
    "plots": [{"plots/test/roc.json": {"cache": False, "template": "simple", "x": "fpr", "y": "tpr"}},
              {"plots/test/confusion.json": {"cache": False, "template": "confusion", "x": "predicted",
                                             "y": "actual"}}],
}}}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def write_run(root: Path, lr: float, macro_f1: float, f1_a: float, predicted_b: list[str]) -> None:
    files = {
        "params.yaml": yaml.safe_dump({"train": {"lr": lr, "seed": 1}}),
        "dvc.yaml": yaml.safe_dump(DVC_YAML, sort_keys=False),
        "metrics/test.json": json.dumps({"macro_f1": macro_f1, "accuracy": 0.8}),
        "metrics/test_per_class.json": json.dumps({"a": {"f1": f1_a, "support": 2}, "b": {"f1": 0.8, "support": 2}}),
        "plots/test/roc.json": json.dumps({"roc": [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.2, "tpr": macro_f1},
                                                   {"fpr": 1.0, "tpr": 1.0}]}),
        "plots/test/confusion.json": json.dumps(
            [{"actual": "a", "predicted": "a"}, {"actual": "a", "predicted": "b"}]
            + [{"actual": "b", "predicted": label} for label in predicted_b]),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Path, str, str]:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.invalid")
    git(root, "config", "user.name", "test")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    write_run(root, lr=0.01, macro_f1=0.7, f1_a=0.6, predicted_b=["b", "b"])
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    base = git(root, "rev-parse", "HEAD")
    write_run(root, lr=0.02, macro_f1=0.75, f1_a=0.7, predicted_b=["a", "b"])
    git(root, "commit", "-qam", "head")
    return root, base, git(root, "rev-parse", "HEAD")


def test_report_shows_what_changed_between_two_commits(two_commits: tuple[Path, str, str], tmp_path: Path) -> None:
    root, base, head = two_commits
    report = build_report(root, base, head, tmp_path / "out")
    text = report.read_text()
    short_base, short_head = base[:7], head[:7]
    assert text.startswith(f"# Pipeline report: `{base}` ({short_base}) → `{head}` ({short_head})")
    # dvc params diff / dvc metrics diff as Markdown tables: only what changed (accuracy did not).
    assert f"| Path        | Param    | {short_base}   | {short_head}   |" in text
    assert "| params.yaml | train.lr | 0.01      | 0.02      |" in text
    metric_rows = [line for line in text.splitlines() if line.startswith("| metrics/test.json")]
    assert len(metric_rows) == 1 and "macro_f1" in metric_rows[0] and "0.05" in metric_rows[0]
    assert "| test | a | 0.6000 | 0.7000 | +0.1000 |" in text
    assert "| test | b | 0.8000 | 0.8000 | +0.0000 |" in text
    assert "- `test-roc.png`: `plots/test/roc.json`" in text
    assert "- `test-confusion.png`: `plots/test/confusion.json`" in text
    for name in ("test-roc.png", "test-confusion.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG_SIGNATURE)


def test_head_defaults_to_the_working_tree(two_commits: tuple[Path, str, str], tmp_path: Path) -> None:
    root, _, head = two_commits
    write_run(root, lr=0.05, macro_f1=0.75, f1_a=0.7, predicted_b=["a", "b"])
    text = build_report(root, "HEAD", out_dir=tmp_path / "out").read_text()
    assert "| params.yaml | train.lr | 0.02      | 0.05        |" in text
    assert "No metrics changed." in text
    assert f"({head[:7]}) → `workspace` (workspace)" in text


def test_an_unknown_revision_is_one_clear_error(two_commits: tuple[Path, str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = two_commits
    with pytest.raises(ReportError, match="no such Git revision: 'nosuch'"):
        build_report(root, "nosuch", "HEAD", tmp_path / "out")
    assert main(["--base", "nosuch", "--root", str(root), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip().startswith("report: error: no such Git revision")
    assert not (tmp_path / "out" / "report.md").exists()


def test_confusion_counts_and_plot_specs_by_hand() -> None:
    rows = [{"actual": "a", "predicted": "a"}, {"actual": "a", "predicted": "b"},
            {"actual": "b", "predicted": "a"}, {"actual": "b", "predicted": "a"}]
    assert confusion_counts(rows, "predicted", "actual", ["a", "b"]) == [[1, 1], [2, 0]]
    specs = plot_specs(yaml.safe_dump(DVC_YAML) + "plots:\n- extra.json\n- several:\n    x: {a.json: x}\n")
    assert [(spec.path, spec.template, spec.x, spec.y) for spec in specs] == [
        ("plots/test/roc.json", "simple", "fpr", "tpr"), ("plots/test/confusion.json", "confusion", "predicted",
                                                          "actual"), ("extra.json", "linear", None, None)]
    assert figure_name("plots/validation/roc.json") == "validation-roc.png"


@pytest.mark.slow
def test_report_on_two_commits_of_this_repository(tmp_path: Path) -> None:
    """0c4bb72 -> 1fe9f55: the first real run and the sweep's new default recipe (lr 5e-5 -> 1e-4)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    base, head = "0c4bb72", "1fe9f55"
    if subprocess.run(["git", "cat-file", "-e", f"{head}^{{commit}}"], cwd=clone).returncode != 0:
        pytest.skip("a shallow clone without the history of the default recipe")
    text = build_report(clone, base, head, tmp_path / "out").read_text()
    assert "| params.yaml | train.lr                | 5e-05     | 0.0001    |" in text
    test_f1 = next(line for line in text.splitlines() if line.startswith("| metrics/test.json") and "| macro_f1 " in line)
    # The committed metrics/test.json of both commits (git show 0c4bb72:metrics/test.json, ...):
    assert "0.80775" in test_f1 and "0.80272" in test_f1
    # docs/reproducibility.md shows these tables: each of its rows is a row of the report.
    page = (REPO_ROOT / "docs" / "reproducibility.md").read_text(encoding="utf-8").split("## Reviewing a change", 1)[1]
    shown = [line for line in page.split("\n## ", 1)[0].splitlines() if line.startswith("| ")]
    assert len(shown) >= 8 and set(shown) <= set(text.splitlines())
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == [
        "test-confusion.png", "test-pr.png", "test-roc.png",
        "validation-confusion.png", "validation-pr.png", "validation-roc.png"]
