"""Copy finished DVC experiments' results into results/ (committed files the README table reads).

    python scripts/collect_experiments.py sweep off-e2-lr1e-4 off-e2-lr5e-5 --note "..."
    python scripts/collect_experiments.py seeds off-seed-1 off-seed-2

Each name is a `dvc exp run --name` (see scripts/sweep.sh). An experiment is a Git commit under
refs/exps; its params.yaml and metrics/*.json are read from that commit, so nothing is re-run.

- `sweep` writes results/sweep/<name>.json: the params that differ from HEAD's params.yaml, the
  dataset and validation metrics (the sweep is ranked on validation only).
- `seeds` writes results/seeds/<dataset>-seed<seed>.json: validation and test metrics of one seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def experiment_commits() -> dict[str, str]:
    """Experiment name -> commit, for every experiment ref in this repository."""
    listing = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
    commits = {}
    for line in listing.splitlines():
        ref, commit = line.split()
        if ref.count("/") >= 4:  # refs/exps/<xx>/<rest of baseline sha>/<name>
            commits[ref.rsplit("/", 1)[1]] = commit
    return commits


def file_at(commit: str, path: str) -> str:
    shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"{path} is not in experiment commit {commit[:7]}: did the experiment finish?")
    return shown.stdout


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        flat.update(flatten(value, name + ".") if isinstance(value, Mapping) else {name: value})
    return flat


def changed_params(params: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    ours, theirs = flatten(params), flatten(reference)
    return {key: value for key, value in sorted(ours.items()) if theirs.get(key) != value}


def experiment_record(name: str, commit: str) -> dict[str, Any]:
    params = yaml.safe_load(file_at(commit, "params.yaml"))
    head_params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    return {"name": name, "commit": commit, "dataset": params["data"]["dataset"],
            "version": params["data"]["version"], "seed": params["train"]["seed"],
            "params": changed_params(params, head_params),
            "validation": json.loads(file_at(commit, "metrics/validation.json")),
            "test": json.loads(file_at(commit, "metrics/test.json")),
            "train": json.loads(file_at(commit, "metrics/train.json"))}


def write(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["sweep", "seeds"])
    parser.add_argument("names", nargs="+", help="experiment names (dvc exp show)")
    parser.add_argument("--note", default="", help="sweep: what this experiment tests")
    args = parser.parse_args(argv)
    commits = experiment_commits()
    missing = [name for name in args.names if name not in commits]
    if missing:
        print(f"no such experiment: {', '.join(missing)} (known: {', '.join(sorted(commits)) or 'none'})",
              file=sys.stderr)
        return 1
    for name in args.names:
        record = experiment_record(name, commits[name])
        if args.kind == "sweep":
            sweep = {key: record[key] for key in ("name", "dataset", "params", "validation")}
            write(ROOT / "results" / "sweep" / f"{name}.json", {**sweep, "note": args.note})
        else:
            seed = {key: record[key] for key in ("dataset", "version", "seed", "params", "validation", "test")}
            write(ROOT / "results" / "seeds" / f"{record['dataset']}-seed{record['seed']}.json", seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
