"""Copy finished DVC experiments' results into results/ (committed files the tables of docs/results.md read).

    python scripts/collect_experiments.py sweep off-mean --note "what it tests and taught"
    python scripts/collect_experiments.py seeds default=HEAD off-seed1 off-seed2
    python scripts/collect_experiments.py ensemble default=HEAD off-seed1 off-seed2

Each name is a `dvc exp run --name` (see scripts/sweep.sh), or NAME=REV for a pipeline run committed
to Git (REV: any revision whose dvc.lock and metrics come from a real run, e.g. the default
pipeline's). An experiment is a Git commit under refs/exps; params.yaml and metrics/*.json are read
from the commit, so nothing is re-run.

- `sweep` writes results/sweep/<name>.json: the model and train params (complete: params.yaml
  merged onto the schema's defaults, as the stages read it), the dataset, and the validation and
  test metrics (the sweep is ranked on validation only; test is shown, never used to choose).
  A multi-source (multi-label) version's record also lists its sources under `test_sets`: each is
  scored on its own test split, in its own labels (`own_labels_macro_f1/<source>`).
- `seeds` writes results/seeds/<dataset>-seed<seed>.json: validation and test metrics of one seed,
  and results/baselines/<dataset>.json: that run's TF-IDF baseline (metrics/baseline/ as one object),
  for datasets other than the default one (whose baseline is the committed metrics/baseline/).

- `ensemble` writes results/ensembles/<dataset>.json: the metrics of the runs' averaged class
  probabilities (their predictions/<split>.parquet, read from the DVC cache at each run's commit), an
  ensemble of the seeds of one recipe; softmax heads only.

A split's record is metrics/<split>.json with metrics/<split>_per_class.json under `per_class`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def experiment_commits(root: Path) -> dict[str, str]:
    """Experiment name -> commit, for every experiment ref in this repository."""
    listing = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
                             cwd=root, check=True, capture_output=True, text=True).stdout
    commits = {}
    for line in listing.splitlines():
        ref, commit = line.split()
        if ref.count("/") >= 4:  # refs/exps/<xx>/<rest of baseline sha>/<name>
            commits[ref.rsplit("/", 1)[1]] = commit
    return commits


def git_commit(root: Path, revision: str) -> str | None:
    parsed = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], cwd=root,
                            capture_output=True, text=True)
    return parsed.stdout.strip() if parsed.returncode == 0 else None


def file_at(root: Path, commit: str, path: str) -> str:
    shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"{path} is not in experiment commit {commit[:7]}: did the experiment finish?")
    return shown.stdout


def recipe_params(params_text: str) -> dict[str, Any]:
    """`model.*` and `train.*` as the stages saw them: params.yaml validated onto the schema."""
    from cybulde.config.loader import load_config, to_flat_dict

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        path.write_text(params_text, encoding="utf-8")
        flat = to_flat_dict(load_config(path))
    return {key: value for key, value in flat.items() if key.startswith(("model.", "train."))}


def training_data(root: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """Whose test split scores the run (`test_set`) and which other sources it also trained on.

    A dataset named after a source is that source alone; any other is described by its manifest in
    the registry (`cybulde publish --add-train` records the extra sources there)."""
    from cybulde.config.paths import resolve_location
    from cybulde.preparation.sources import SOURCES
    from cybulde.registry.store import Registry

    dataset = str(data["dataset"])
    if dataset in SOURCES:
        return {"test_set": dataset, "extra_training": []}
    registry = Registry(resolve_location(str(data["registry"]), start=root))
    manifest = registry.manifest(dataset, str(data["version"]))
    if manifest.is_multilabel:  # every source's own test split scores it: `test_sets`
        return {"test_set": dataset, "test_sets": list(manifest.source_names or []), "extra_training": []}
    publish_params = manifest.publish_params
    source = str(publish_params["source"])
    return {"test_set": source if source in SOURCES and source not in ("csv", "parquet") else dataset,
            "extra_training": list(publish_params.get("extra_training", []))}


def experiment_record(root: Path, name: str, commit: str) -> dict[str, Any]:
    text = file_at(root, commit, "params.yaml")
    params = yaml.safe_load(text)
    return {"name": name, "commit": commit, "dataset": params["data"]["dataset"],
            "version": params["data"]["version"], "seed": params["train"]["seed"],
            **training_data(root, params["data"]),
            "params": recipe_params(text),
            "validation": split_record(root, commit, "validation"),
            "test": split_record(root, commit, "test"),
            "baseline": baseline_record(root, commit)}


def split_record(root: Path, commit: str, split: str) -> dict[str, Any]:
    from cybulde.evaluation.evaluate import metrics_file, per_class_file, with_per_class

    return with_per_class(json.loads(file_at(root, commit, metrics_file(split))),
                          json.loads(file_at(root, commit, per_class_file(split))))


def baseline_record(root: Path, commit: str) -> dict[str, Any]:
    from cybulde.evaluation.baseline import DETAILS_FILE, METRICS_DIR, SPLITS, join_report

    names = (*(f"{split}.json" for split in SPLITS), DETAILS_FILE)
    return join_report({name: json.loads(file_at(root, commit, (METRICS_DIR / name).as_posix())) for name in names})


def default_dataset(root: Path) -> str:
    return yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["data"]["dataset"]


def write(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["sweep", "seeds", "ensemble"])
    parser.add_argument("names", nargs="+", help="experiment names (dvc exp show), or NAME=REV for a run committed to Git")
    parser.add_argument("--note", default="", help="sweep: what this experiment tests")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = args.root
    experiments = experiment_commits(root)
    commits = {}
    for argument in args.names:
        name, _, revision = argument.partition("=")
        commit = git_commit(root, revision) if revision else experiments.get(name)
        if commit is None:
            known = ", ".join(sorted(experiments)) or "none"
            print(f"no such experiment or revision: {argument} (experiments: {known})", file=sys.stderr)
            return 1
        commits[name] = commit
    records = {name: experiment_record(root, name, commit) for name, commit in commits.items()}
    if args.kind == "ensemble":
        ensemble = ensemble_record(root, commits, list(records.values()))
        write(root / "results" / "ensembles" / f"{ensemble['dataset']}.json", ensemble)
        return 0
    default = default_dataset(root)
    for name, record in records.items():
        if args.kind == "sweep":
            sweep = {key: record[key] for key in ("name", "dataset", "params", "validation", "test")}
            write(root / "results" / "sweep" / f"{name}.json", {**sweep, "note": args.note})
        else:
            described = ("dataset", "version", "test_set", "test_sets", "extra_training")
            seed = {key: record[key] for key in (*described, "seed", "params", "validation", "test") if key in record}
            write(root / "results" / "seeds" / f"{record['dataset']}-seed{record['seed']}.json", seed)
            if record["dataset"] != default:
                baseline = {**record["baseline"], **{key: record[key] for key in described if key in record}}
                write(root / "results" / "baselines" / f"{record['dataset']}.json", baseline)
    return 0


def run_predictions(root: Path, commit: str, split: str) -> Any:
    """predictions/<split>.parquet of the run at `commit`, from the DVC cache."""
    import dvc.api
    import pandas as pd

    with dvc.api.open(f"predictions/{split}.parquet", repo=str(root), rev=commit, mode="rb") as stream:
        return pd.read_parquet(stream)


def ensemble_record(root: Path, commits: Mapping[str, str], members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of the members' mean class probabilities on validation and test (argmax decides)."""
    from cybulde.evaluation.metrics import compute_metrics, round_floats

    datasets = {(member["dataset"], member["version"]) for member in members}
    heads = {member["params"]["model.head"] for member in members}
    if len(datasets) != 1 or heads != {"softmax"}:
        raise SystemExit(f"an ensemble needs runs of one dataset version with softmax heads, got {sorted(datasets)} "
                         f"and heads {sorted(heads)}")
    record: dict[str, Any] = {"dataset": members[0]["dataset"], "version": members[0]["version"],
                              "test_set": members[0]["test_set"], "members": list(commits)}
    for split in ("validation", "test"):
        tables = [run_predictions(root, commit, split) for commit in commits.values()]
        if any(not table["id"].equals(tables[0]["id"]) for table in tables):
            raise SystemExit(f"the runs' {split} predictions do not list the same rows in the same order")
        label_names = [column.removeprefix("prob_") for column in tables[0].columns if column.startswith("prob_")]
        probabilities = sum(table[[f"prob_{name}" for name in label_names]].to_numpy() for table in tables) / len(tables)
        labels = [label_names.index(label) for label in tables[0]["label"]]
        metrics = compute_metrics(probabilities, probabilities.argmax(axis=1), labels,
                                  loss=float("nan"), label_names=label_names)
        record[split] = round_floats({key: metrics[key] for key in ("accuracy", "macro_f1", "roc_auc", "per_class")})
    return record


if __name__ == "__main__":
    sys.exit(main())
