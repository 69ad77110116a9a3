"""The reproducibility check: is the committed pipeline state true, and does the pipeline reproduce?

    python -m cybulde.reproducibility.check lock      the committed dvc.lock matches code, params and deps
    python -m cybulde.reproducibility.check metrics   the committed metrics and plots files are the ones dvc.lock pins
    python -m cybulde.reproducibility.check deps      each stage's deps cover the project modules it imports
    python -m cybulde.reproducibility.check rerun     a small pipeline run twice gives identical weights/metrics,
                                                      and each stage's params cover the params it read
    python -m cybulde.reproducibility.check all       all four

`scripts/repro_check.sh` installs the pinned dependencies first; CI and the GitHub workflow run it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from cybulde.config.access import RECORD_ENV
from cybulde.config.presets import TINY, as_overrides
from cybulde.errors import CybuldeError
from cybulde.reproducibility.dependencies import check_dependencies as find_problems

WEIGHTS = "model/model.safetensors"

# The project's one tiny config (a from-scratch BERT under 2 DDP ranks) on the SMALL_ROWS-per-split
# version of TweetEval offensive published for the check.
SMALL_ROWS = 256
SMALL_OVERRIDES = tuple(as_overrides(TINY))


class ReproError(CybuldeError, RuntimeError):
    """The committed state is stale, or two runs of the pipeline differ."""


def run(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReproError(f"`{' '.join(command)}` failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def tool_env() -> dict[str, str]:
    """The environment with this interpreter's `python`, `dvc` and `torchrun` first on PATH."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def committed_outputs(root: Path) -> list[str]:
    """The outputs dvc.yaml keeps out of the DVC cache (`cache: false`): metrics, plots and other small
    files that Git commits, in dvc.yaml order."""
    # DVC and the publish code load only in the checks that use them
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [os.path.relpath(os.path.join(stage.wdir, out.def_path), root)
                for stage in repo.index.stages for out in stage.outs if not out.use_cache]


def check_lock(root: Path) -> None:
    """Fail if any stage would run: the committed dvc.lock is stale against code, params or deps."""
    command = ["dvc", "repro", "--dry", "--allow-missing"]
    result = subprocess.run(command, cwd=root, env=tool_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    # A dry run lists each stage that would run; it stops with an error at the first stage whose
    # inputs a stale stage before it would have produced (e.g. data/fetched in a fresh clone).
    stale = [line for line in output.splitlines() if line.startswith("Running stage")]
    if stale:
        raise ReproError("dvc.lock is stale; these stages would run:\n  " + "\n  ".join(stale)
                         + "\nRun the pipeline (make pipeline) and commit dvc.lock and metrics/.")
    if result.returncode != 0:
        raise ReproError(f"`{' '.join(command)}` failed in {root}:\n{output}")
    print("lock: dvc.lock is up to date with code, params and dependencies")


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def locked_md5s(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", [])}


def check_metrics(root: Path) -> None:
    """Fail unless each committed output (metrics, plots) has the md5 that dvc.lock records for it."""
    locked = locked_md5s(root)
    for name in committed_outputs(root):
        path = root / name
        if name not in locked:
            raise ReproError(f"{name} is not an output in dvc.lock")
        if not path.is_file():
            raise ReproError(f"{name} is in dvc.lock but not committed")
        if file_md5(path) != locked[name]:
            raise ReproError(f"{name} does not match dvc.lock (md5 {file_md5(path)} != "
                             f"{locked[name]}): commit the metrics of the run that wrote dvc.lock")
    print("metrics: committed metrics and plots files match dvc.lock")


def check_dependencies(root: Path, records: Path | None = None) -> None:
    """Fail if a stage imports a project module (or, given recorded reads, reads a param) it does not declare."""
    report = find_problems(root, records)
    if report.problems:
        raise ReproError("undeclared stage dependencies in dvc.yaml:\n  " + "\n  ".join(report.problems))
    if records is not None and report.params_unchecked:
        raise ReproError(f"no param reads were recorded for stage(s) {', '.join(report.params_unchecked)}: "
                         f"did they run with ${RECORD_ENV} set?")
    print("deps: every stage declares the project modules it imports"
          + (" and the params it read" if records is not None else ""))


def copy_project(root: Path, destination: Path) -> Path:
    """The project's tracked and unignored files in a fresh git repo (DVC needs one)."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], root)
    for name in listed.splitlines():
        source = root / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # A local identity: `dvc exp run` commits, and a fresh machine may have no global one.
    for command in (["git", "init", "-q"], ["git", "config", "user.name", "cybulde"],
                    ["git", "config", "user.email", "cybulde@localhost"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "snapshot"]):
        run(command, destination)
    return destination


def set_params(params_path: Path, overrides: Sequence[str]) -> None:
    """Write `key=value` overrides into params.yaml (as `dvc exp run -S` would)."""
    params = yaml.safe_load(params_path.read_text())
    for override in overrides:
        key, value = override.split("=", 1)
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value) if value else ""
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def fingerprint(project: Path) -> dict[str, str]:
    names = (WEIGHTS, *committed_outputs(project))
    return {name: hashlib.sha256((project / name).read_bytes()).hexdigest() for name in names}


def check_rerun(root: Path, raw_data: Path) -> None:
    """Run a small pipeline twice from scratch; weights, metrics and plots must be bit-identical. The first
    run records the params each stage reads, which its declared params must cover (`check_dependencies`)."""
    with tempfile.TemporaryDirectory(prefix="cybulde-repro-") as scratch:
        scratch_dir = Path(scratch)
        project = copy_project(root, scratch_dir / "project")
        registry = scratch_dir / "registry"
        env = {**tool_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{scratch_dir / 'mlflow.db'}"}
        published = run([os.path.abspath(sys.executable), "-m", "cybulde.cli", "publish", "--source",
                         "tweeteval_offensive", "--raw-dir", str(raw_data / "tweeteval_offensive"), "--registry",
                         str(registry), "--version", "repro-check", "--max-rows-per-split", str(SMALL_ROWS),
                         "--print-pin"], project, env)
        # The small version is not the one params.yaml pins: pin the one just published.
        pin = next(line for line in published.splitlines() if line.startswith("data.manifest_sha256="))
        set_params(project / "params.yaml",
                   [f"data.registry={registry}", "data.version=repro-check", pin, *SMALL_OVERRIDES])
        records = scratch_dir / "param-reads"
        prints = []
        for attempt in (1, 2):
            run(["dvc", "repro", "--force"], project, {**env, RECORD_ENV: str(records)} if attempt == 1 else env)
            prints.append(fingerprint(project))
            print(f"rerun: pipeline run {attempt} done")
        differing = [name for name in prints[0] if prints[0][name] != prints[1][name]]
        if differing:
            raise ReproError(f"two runs with the same params and data differ in: {differing}")
        metrics = json.loads((project / "metrics/test.json").read_text())
        print(f"rerun: identical weights and metrics across two runs "
              f"(test macro_f1 {metrics['macro_f1']:.4f} on the small config)")
        check_dependencies(project, records)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["lock", "metrics", "deps", "rerun", "all"])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--raw-data", type=Path, default=None,
                        help="folder of the raw datasets (default: $CYBULDE_DATASETS_DIR or "
                             "../shared/datasets)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.check in ("lock", "all"):
            check_lock(root)
        if args.check in ("metrics", "all"):
            check_metrics(root)
        if args.check in ("deps", "all"):
            check_dependencies(root)
        if args.check in ("rerun", "all"):
            from cybulde.preparation.publish import default_datasets_dir

            check_rerun(root, (args.raw_data or default_datasets_dir()).resolve())
    except ReproError as error:
        print(f"reproducibility check failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
