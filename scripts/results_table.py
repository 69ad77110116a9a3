"""Regenerate the results tables of docs/results.md from the committed metrics files.

    python scripts/results_table.py            # rewrite docs/results.md between the markers
    python scripts/results_table.py --check    # exit 1 if docs/results.md is out of date

The section between `<!-- results:start -->` and `<!-- results:end -->` is replaced; nothing else
on the page changes. Inputs (paths relative to the project root; all but params.yaml optional):

- params.yaml: `data.dataset` / `data.version`, the dataset of the default pipeline's metrics;
- metrics/validation.json, metrics/test.json (+ metrics/<split>_per_class.json): the default
  pipeline's model (`dvc repro`);
- metrics/baseline/{validation,test,details}.json: the TF-IDF + logistic regression baseline (stage
  `baseline`);
- results/baselines/*.json: the baseline on other datasets (metrics/baseline/ joined into one object
  by `cybulde.evaluation.baseline.join_report`);
- results/seeds/*.json: `{"dataset", "version", "seed", "validation": {...}, "test": {...}}`, the
  two inner objects being metrics/<split>.json of one seed's run with its per-class detail under
  `per_class`; shown as mean ± std per dataset;
- results/sweep/*.json: `{"name", "dataset", "params": {...}, "validation": {...}, "test": {...}, "note"}`,
  one experiment of a sweep, ranked per dataset by validation macro-F1 (the test split plays no part in choosing;
  it is shown beside it); the table shows the params whose values differ between the experiments;
- results/ensembles/*.json: `{"dataset", "members", "validation": {...}, "test": {...}}`, the seeds of
  the default recipe with their class probabilities averaged (`collect_experiments.py ensemble`);
- results/time_to_quality.json: the output of `benchmarks/time_to_quality.py --json`;
- results/cross/*.json: the output of `cybulde evaluate-cross --save`.

A multi-source (multi-label) record lists its sources under `test_sets`: its columns in the main
table are each source's test split scored in the source's own labels (`own_labels_macro_f1/<source>`),
and a table of its own sets it beside the single-source models and baselines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
RESULTS_PAGE = "docs/results.md"
DATASET_ORDER = ("tweeteval_offensive", "tweeteval_hate", "davidson2017")
MISSING = "—"


@dataclass(frozen=True)
class Published:
    system: str
    scores: Mapping[str, float]  # dataset -> test macro-F1
    source: str
    note: str = ""


PUBLISHED = (
    Published("SVM", {"tweeteval_offensive": 0.523},
              "Barbieri et al. 2020, TweetEval (Findings of EMNLP)"),
    Published("LSTM", {"tweeteval_offensive": 0.717},
              "Barbieri et al. 2020, TweetEval (Findings of EMNLP)"),
    Published("RoBERTa-base", {"tweeteval_offensive": 0.795, "tweeteval_hate": 0.466},
              "Barbieri et al. 2020, TweetEval (Findings of EMNLP)"),
    Published("BERTweet", {"tweeteval_offensive": 0.795, "tweeteval_hate": 0.564},
              "Nguyen et al. 2020, BERTweet (EMNLP demos); TweetEval leaderboard"),
    Published("TimeLMs", {"tweeteval_offensive": 0.822},
              "Loureiro et al. 2022, TimeLMs (ACL demos); TweetEval leaderboard"),
    Published("OffensEval-2019 winner", {"tweeteval_offensive": 0.829},
              "Zampieri et al. 2019, SemEval-2019 Task 6 (OLID subtask A test set)"),
    Published("Logistic regression", {"davidson2017": 0.77},
              "Davidson et al. 2017 (ICWSM)", "≈, on the authors' own holdout, not this split"),
)


@dataclass
class ResultRow:
    system: str
    scores: dict[str, str] = field(default_factory=dict)  # dataset -> formatted test macro-F1


@dataclass
class Inputs:
    dataset: str
    version: str
    validation: dict[str, Any] | None
    test: dict[str, Any] | None
    baselines: list[dict[str, Any]]
    seeds: list[dict[str, Any]]
    sweep: list[dict[str, Any]]
    cross: list[dict[str, Any]]
    ensembles: list[dict[str, Any]] = field(default_factory=list)
    time_to_quality: dict[str, Any] | None = None


class ResultsTableError(RuntimeError):
    """The results page or a metrics file cannot be used as the results table needs."""


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ResultsTableError(f"{path} is not valid JSON: {error}") from error


def read_folder(folder: Path) -> list[dict[str, Any]]:
    return [data for path in sorted(folder.glob("*.json")) if (data := read_json(path)) is not None]


def read_params(root: Path) -> tuple[str, str]:
    import yaml

    path = root / "params.yaml"
    if not path.is_file():
        raise ResultsTableError(f"{path} not found: run this script in the project root (or pass --root)")
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}
    return str(data.get("dataset", "")), str(data.get("version", ""))


def read_split_metrics(root: Path, split: str) -> dict[str, Any] | None:
    """metrics/<split>.json with its per-class detail under `per_class` (None before the first run)."""
    from cybulde.evaluation.evaluate import metrics_file, per_class_file, with_per_class

    headline = read_json(root / metrics_file(split))
    return None if headline is None else with_per_class(headline, read_json(root / per_class_file(split)))


def read_baseline(root: Path) -> dict[str, Any] | None:
    """The default pipeline's baseline (metrics/baseline/) as one object, None if it has not run."""
    from cybulde.evaluation.baseline import DETAILS_FILE, METRICS_DIR, SPLITS, join_report

    files = {name: read_json(root / METRICS_DIR / name) for name in (*(f"{s}.json" for s in SPLITS), DETAILS_FILE)}
    if any(content is None for content in files.values()):
        return None
    return join_report(files)  # type: ignore[arg-type]


def load_inputs(root: Path) -> Inputs:
    dataset, version = read_params(root)
    baseline = read_baseline(root)
    baselines = ([baseline] if baseline else []) + read_folder(root / "results" / "baselines")
    return Inputs(dataset=dataset, version=version,
                  validation=read_split_metrics(root, "validation"),
                  test=read_split_metrics(root, "test"),
                  baselines=baselines,
                  seeds=read_folder(root / "results" / "seeds"),
                  sweep=read_folder(root / "results" / "sweep"),
                  cross=read_folder(root / "results" / "cross"),
                  ensembles=read_folder(root / "results" / "ensembles"),
                  time_to_quality=read_json(root / "results" / "time_to_quality.json"))


def fmt(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.3f}"


def fmt_mean_std(values: Sequence[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{float(values[0]):.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def macro_f1(metrics: Mapping[str, Any] | None) -> float | None:
    return None if not metrics else metrics.get("macro_f1")


OWN_LABELS_PREFIX = "own_labels_macro_f1/"


def is_multi_source(record: Mapping[str, Any]) -> bool:
    return bool(record.get("test_sets"))


def own_label_scores(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """A multi-source model's macro-F1 on each source's test split, in that source's own labels."""
    return {key.removeprefix(OWN_LABELS_PREFIX): float(value) for key, value in (metrics or {}).items()
            if key.startswith(OWN_LABELS_PREFIX) and value is not None}


def own_label_f1(metrics: Mapping[str, Any] | None, source: str, label: str) -> float | None:
    """One label's test F1 in a multi-source model's reading of `source`'s own labels."""
    own = (((metrics or {}).get("per_class") or {}).get("own_labels") or {}).get(source) or {}
    value = (own.get("f1") or {}).get(label)
    return None if value is None else float(value)


def single_source(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [record for record in records if not is_multi_source(record)]


def multi_source(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [record for record in records if is_multi_source(record)]


def ordered_datasets(names: Iterable[str]) -> list[str]:
    present = set(names)
    known = [name for name in DATASET_ORDER if name in present]
    return known + sorted(present - set(DATASET_ORDER))


def group_by(records: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], str]
             ) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return dict(sorted(groups.items()))


def seed_groups(seeds: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    return group_by(seeds, lambda run: str(run.get("dataset", "")))


def test_set(record: Mapping[str, Any], default: str = "") -> str:
    """The dataset whose test split scored this record (a multi-source dataset: its own source's)."""
    return str(record.get("test_set") or record.get("dataset") or default)


def extra_training(record: Mapping[str, Any]) -> str:
    """`""`, or `" + tweeteval_offensive train"` for a model also trained on other sources."""
    sources = [str(extra["source"]) for extra in record.get("extra_training") or []]
    return f" + {', '.join(sources)} train" if sources else ""


def group_by_training(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    return group_by(records, extra_training)


def our_rows(inputs: Inputs) -> list[ResultRow]:
    rows = []
    for dataset, runs in group_by(multi_source(inputs.seeds), lambda run: str(run["dataset"])).items():
        scores = [own_label_scores(run["test"]) for run in runs]
        rows.append(ResultRow(f"**cybulde MiniLM-L6** multi-source (`{dataset}`: one model, all its sources; "
                              "mean ± std over n seeds)", {
            source: fmt_mean_std([score[source] for score in scores]) + f" (n={len(scores)})"
            for source in scores[0]}))
    for extra, runs in group_by_training(single_source(inputs.seeds)).items():
        by_test_set: dict[str, list[float]] = {}
        for run in runs:
            by_test_set.setdefault(test_set(run), []).append(float(run["test"]["macro_f1"]))
        rows.append(ResultRow(f"**cybulde MiniLM-L6**{extra} (default recipe, mean ± std over n seeds)", {
            name: fmt_mean_std(scores) + f" (n={len(scores)})" for name, scores in by_test_set.items()}))
    for ensemble in inputs.ensembles:
        rows.append(ResultRow(f"**cybulde MiniLM-L6**{extra_training(ensemble)} (ensemble of the "
                              f"{len(ensemble['members'])} seeds: mean class probabilities)",
                              {test_set(ensemble): fmt(macro_f1(ensemble.get("test")))}))
    if inputs.test:
        rows.append(ResultRow("**cybulde MiniLM-L6** (default pipeline, `metrics/test.json`)",
                              {inputs.dataset: fmt(macro_f1(inputs.test))}))
    for extra, reports in group_by_training(single_source(inputs.baselines)).items():
        rows.append(ResultRow(f"**cybulde TF-IDF + logistic regression**{extra} (baseline)", {
            test_set(report, inputs.dataset): fmt(macro_f1(report.get("test"))) for report in reports}))
    for report in multi_source(inputs.baselines):
        rows.append(ResultRow(f"**cybulde TF-IDF + logistic regression** multi-source (`{report['dataset']}`, "
                              "baseline)", {source: fmt(score) for source, score in
                                            own_label_scores(report.get("test")).items()}))
    return rows


def published_rows() -> list[ResultRow]:
    return [ResultRow(f"{entry.system} — {entry.source}" + (f" ({entry.note})" if entry.note else ""),
                      {dataset: ("≈ " if entry.note.startswith("≈") else "") + fmt(score)
                       for dataset, score in entry.scores.items()})
            for entry in PUBLISHED]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main_table(inputs: Inputs) -> list[str]:
    rows = our_rows(inputs) + published_rows()
    datasets = ordered_datasets([*DATASET_ORDER, *(d for row in rows for d in row.scores)])
    return markdown_table(["System", *datasets],
                          [[row.system, *(row.scores.get(d, MISSING) for d in datasets)] for row in rows])


def per_class_f1(metrics: Mapping[str, Any] | None) -> str:
    per_class = (metrics or {}).get("per_class") or {}
    return ", ".join(f"{name} {fmt(values.get('f1'))}" for name, values in per_class.items()) or MISSING


def mean_per_class_f1(runs: Sequence[Mapping[str, Any]]) -> str:
    """Each class's test F1 as mean ± std over the runs (classes of the first run)."""
    classes = (runs[0].get("test") or {}).get("per_class") or {}
    return ", ".join(
        f"{name} " + fmt_mean_std([float(run["test"]["per_class"][name]["f1"]) for run in runs])
        for name in classes) or MISSING


def details_table(inputs: Inputs) -> list[str]:
    rows = []
    if inputs.test or inputs.validation:
        rows.append(["MiniLM-L6 (default pipeline)", inputs.dataset, fmt(macro_f1(inputs.validation)),
                     fmt(macro_f1(inputs.test)), fmt((inputs.test or {}).get("accuracy")),
                     per_class_f1(inputs.test)])
    for report in single_source(inputs.baselines):
        weights = f", class_weight={report['class_weight']}" if report.get("class_weight") else ""
        rows.append([f"TF-IDF + LR (C={report.get('C')}{weights})", str(report.get("dataset") or inputs.dataset),
                     fmt(macro_f1(report.get("validation"))), fmt(macro_f1(report.get("test"))),
                     fmt((report.get("test") or {}).get("accuracy")), per_class_f1(report.get("test"))])
    for ensemble in inputs.ensembles:
        rows.append([f"MiniLM-L6 (ensemble of {len(ensemble['members'])} seeds)", str(ensemble["dataset"]),
                     fmt(macro_f1(ensemble.get("validation"))), fmt(macro_f1(ensemble.get("test"))),
                     fmt((ensemble.get("test") or {}).get("accuracy")), per_class_f1(ensemble.get("test"))])
    for dataset, runs in seed_groups(single_source(inputs.seeds)).items():
        rows.append([f"MiniLM-L6 ({len(runs)} seed{'' if len(runs) == 1 else 's'})", dataset,
                     fmt_mean_std([float(run["validation"]["macro_f1"]) for run in runs]),
                     fmt_mean_std([float(run["test"]["macro_f1"]) for run in runs]),
                     fmt_mean_std([float(run["test"]["accuracy"]) for run in runs]), mean_per_class_f1(runs)])
    if not rows:
        return []
    return markdown_table(["Model", "Dataset", "Validation macro-F1", "Test macro-F1", "Test accuracy",
                           "Test F1 per class"], rows)


def multi_source_table(inputs: Inputs) -> list[str]:
    """Per source: the multi-source model and baseline beside the single-source ones, each on the
    source's own test split in its own labels; Davidson's rare `hate_speech` class on a row of its own."""
    models = multi_source(inputs.seeds)
    if not models:
        return []
    baselines = multi_source(inputs.baselines)
    single_models = group_by(single_source(inputs.seeds), lambda run: test_set(run))
    single_baselines = {test_set(report, inputs.dataset): report for report in single_source(inputs.baselines)
                        if not report.get("extra_training")}

    def spread(values: Sequence[float | None]) -> str:
        present = [value for value in values if value is not None]
        return fmt_mean_std(present) + f" (n={len(present)})" if present else MISSING

    rows = []
    for source in models[0]["test_sets"]:
        alone = [run for run in single_models.get(source, []) if not run.get("extra_training")]
        rows.append([f"{source}: macro-F1", spread([float(run["test"]["macro_f1"]) for run in alone]),
                     spread([own_label_scores(run["test"]).get(source) for run in models]),
                     fmt(macro_f1((single_baselines.get(source) or {}).get("test"))),
                     fmt(own_label_scores(baselines[0].get("test")).get(source) if baselines else None)])
        if source == "davidson2017":
            label = "hate_speech"
            rows.append([f"{source}: `{label}` F1",
                         spread([((run["test"].get("per_class") or {}).get(label) or {}).get("f1") for run in alone]),
                         spread([own_label_f1(run["test"], source, label) for run in models]),
                         fmt((((single_baselines.get(source) or {}).get("test") or {}).get("per_class") or {})
                             .get(label, {}).get("f1")),
                         fmt(own_label_f1(baselines[0].get("test"), source, label) if baselines else None)])
    ece = {key.removeprefix("ece/"): [float(run["test"][key]) for run in models if run["test"].get(key) is not None]
           for key in models[0]["test"] if key.startswith("ece/")}
    lines = markdown_table(["Test split, scored in the source's own labels", "Trained on that source alone",
                            f"Multi-source (`{models[0]['dataset']}`)", "TF-IDF, that source alone",
                            "TF-IDF, multi-source"], rows)
    if ece:
        lines += ["", "Expected calibration error of the multi-source model on test (15 bins, answered cells): "
                  + ", ".join(f"`{question}` {fmt_mean_std(values)}" for question, values in ece.items()) + "."]
    return lines


def varying_params(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The param keys whose values are not the same in every run (the ones the sweep explores)."""
    keys = sorted({key for run in runs for key in (run.get("params") or {})})
    return [key for key in keys if len({repr((run.get("params") or {}).get(key)) for run in runs}) > 1]


def sweep_table(sweep: Sequence[Mapping[str, Any]]) -> list[str]:
    if not sweep:
        return []
    datasets = ordered_datasets(str(run.get("dataset", "")) for run in sweep)
    ranked = sorted(sweep, key=lambda run: (datasets.index(str(run.get("dataset", ""))),
                                            -float(macro_f1(run.get("validation")) or 0.0)))
    keys = varying_params(sweep)
    return markdown_table(["Experiment", "Dataset", *(f"`{key}`" for key in keys), "Validation macro-F1",
                           "Test macro-F1 (not used to choose)", "Note"], [
        [str(run.get("name", "")), str(run.get("dataset", "")),
         *(str((run.get("params") or {}).get(key, MISSING)) for key in keys),
         fmt(macro_f1(run.get("validation"))), fmt(macro_f1(run.get("test"))), str(run.get("note", ""))]
        for run in ranked])


def time_to_quality_table(report: Mapping[str, Any] | None) -> list[str]:
    """Per system, mean ± std over the seeds of `benchmarks/time_to_quality.py --json`."""
    if not report:
        return []
    machine = report["machine"]
    names = {"ours": "cybulde (default params)", "hf": "Hugging Face `Trainer` (lr 5e-5, 2 epochs, linear decay)"}
    rows = []
    for system in dict.fromkeys(run["system"] for run in report["runs"]):
        runs = [run for run in report["runs"] if run["system"] == system]
        rows.append([names.get(system, system), str(len(runs)),
                     *(fmt_mean_std([float(run[key]) for run in runs], digits)
                       for key, digits in (("train_s", 0), ("samples_per_s", 1), ("val_macro_f1", 3),
                                           ("test_macro_f1", 3)))])
    lines = [f"{machine['device']} (native bf16: {'yes' if machine.get('native_bf16') else 'no'}), "
             f"{machine.get('accelerator', 'cpu').upper()}; a budget of {float(machine['budget_s']):g} s of "
             f"training per run; seeds {', '.join(map(str, machine['seeds']))}; global batch {machine['batch_size']}.",
             ""]
    return lines + markdown_table(["System", "Seeds", "Training s", "Samples/s", "Validation macro-F1",
                                   "Test macro-F1"], rows)


def cross_table(cross: Sequence[Mapping[str, Any]]) -> list[str]:
    if not cross:
        return []
    models = ordered_datasets(str(run["model"].get("dataset")) for run in cross)
    targets = ordered_datasets(str(run["data"].get("dataset")) for run in cross)
    cells = {(str(run["model"].get("dataset")), str(run["data"].get("dataset"))): fmt(run.get("macro_f1"))
             for run in cross}
    lines = markdown_table(["Model trained on ↓ / evaluated on →", *targets],
                           [[model, *(cells.get((model, target), MISSING) for target in targets)]
                            for model in models])
    lines.append("")
    lines += [f"- {run['model'].get('dataset')} → {run['data'].get('dataset')}/{run['data'].get('version')} "
              f"{run.get('split')}: " + ", ".join(f"`{src}`→`{dst}`" for src, dst in run["label_map"].items())
              for run in sorted(cross, key=lambda r: (str(r["model"].get("dataset")),
                                                      str(r["data"].get("dataset"))))]
    return lines


def render_section(inputs: Inputs) -> str:
    lines = [
        "",
        "Test macro-F1. Every model choice (hyperparameters, C of the baseline, the sigmoid "
        "threshold) is made on the validation split only; the test split is read once, at the end.",
        "Published numbers are copied from the cited papers, on the same test sets unless noted.",
        "",
        *main_table(inputs),
    ]
    for title, table in (("Details", details_table(inputs)),
                         ("One model for several sources against a model per source", multi_source_table(inputs)),
                         ("Sweep (per dataset, ranked by validation macro-F1)", sweep_table(inputs.sweep)),
                         ("Time to quality: the same budget, data, backbone, batch size and seeds",
                          time_to_quality_table(inputs.time_to_quality)),
                         ("Cross-dataset test macro-F1 (labels mapped explicitly)", cross_table(inputs.cross))):
        if table:
            lines += ["", f"**{title}**", "", *table]
    lines += [
        "",
        "Reproduce: `dvc repro` (the default pipeline: `metrics/validation.json`, `metrics/test.json`, "
        "baseline `metrics/baseline/`); `scripts/sweep.sh offensive|seeds|davidson|hate|multisource` (queued DVC "
        "experiments) then `python scripts/collect_experiments.py sweep|seeds|ensemble NAME...` (`results/sweep`, "
        "`results/seeds`, `results/baselines`, `results/ensembles`); `python benchmarks/time_to_quality.py "
        "--data-dir data/fetched --seeds 3 --budget-s 900 --json results/time_to_quality.json`; "
        "`cybulde evaluate-cross --model model --data "
        "<registry>/<dataset>/<version> --map DATA_LABEL=MODEL_LABEL ... --save results/cross/<name>.json` "
        "for a cross-dataset cell, then `python scripts/results_table.py`.",
        "",
    ]
    return "\n".join(lines)


def replace_section(page: str, section: str) -> str:
    start = page.find(START_MARKER)
    end = page.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise ResultsTableError(f"the results page needs the markers {START_MARKER} and {END_MARKER} "
                                f"(in that order) around the results section")
    return page[:start + len(START_MARKER)] + "\n" + section + page[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="project root holding params.yaml, metrics/ and results/")
    parser.add_argument("--page", type=Path, default=None, help=f"default: <root>/{RESULTS_PAGE}")
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    page_path = args.page or args.root / RESULTS_PAGE
    try:
        current = page_path.read_text(encoding="utf-8")
        updated = replace_section(current, render_section(load_inputs(args.root)))
    except (OSError, ResultsTableError) as error:
        print(f"results_table: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if updated != current:
            print(f"results_table: {page_path} is out of date: run python scripts/results_table.py",
                  file=sys.stderr)
            return 1
        return 0
    if updated != current:
        page_path.write_text(updated, encoding="utf-8")
    print(f"results_table: {page_path} {'updated' if updated != current else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
