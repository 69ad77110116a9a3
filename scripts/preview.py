"""Which stages an experiment would run, without touching the workspace.

Usage: python scripts/preview.py key=value [key=value ...]   (make preview S="model.head=sigmoid")

`dvc exp run --dry -S ...` cannot be used for this: it rewrites params.yaml, dvc.lock, metrics and
plots in place and then fails in its temporary copy (treeverse/dvc#9818); nor can `dvc repro --dry`
in a copy without data/fetched and model/ (it hashes a changed stage's missing dependencies). This
checks the overrides as the stages do (`load_config`), writes them into params.yaml in a scratch
copy of the project (tracked and unignored files only), prints `dvc params diff` there and asks DVC
which stages changed against dvc.lock (code, params, committed files; a missing output or dataset
does not count). A stage also runs when a stage it depends on runs, as in `dvc repro`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cybulde.config import ConfigError, load_config
from cybulde.reproducibility.check import copy_project, set_params, tool_env

ROOT = Path(__file__).resolve().parents[1]


def stages_to_run(project: Path) -> list[tuple[str, str, str]]:
    """(stage, command, why) of each stage that `dvc repro` would run in `project`, in pipeline order."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    planned: list[tuple[str, str, str]] = []
    with Repo(str(project)) as repo, repo.lock:
        graph = repo.index.graph
        running: set[str] = set()
        for stage in plan_repro(graph):
            upstream = sorted(up.name for up in graph.successors(stage) if up.name in running)
            if stage.changed(allow_missing=True):
                why = "changed against dvc.lock"
            elif upstream:
                why = f"after {', '.join(upstream)}"
            else:
                continue
            running.add(stage.name)
            planned.append((stage.name, str(stage.cmd), why))
    return planned


def preview(root: Path, overrides: Sequence[str]) -> list[tuple[str, str, str]]:
    load_config(root / "params.yaml", overrides)  # unknown keys and invalid values fail here, as in a stage
    with tempfile.TemporaryDirectory(prefix="cybulde-preview-") as scratch:
        project = copy_project(root, Path(scratch) / "project")
        set_params(project / "params.yaml", overrides)
        changed = subprocess.run(["dvc", "params", "diff"], cwd=project, env=tool_env(), check=True,
                                 capture_output=True, text=True).stdout.strip()
        print(f"params.yaml now (HEAD) and with the overrides (workspace):\n{changed}" if changed
              else "params.yaml: the overrides equal the current values")
        planned = stages_to_run(project)
    for name, command, why in planned:
        print(f"would run {name}: {command}   ({why})")
    if not planned:
        print("no stage would run")
    return planned


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if not overrides or not all("=" in override for override in overrides):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        preview(ROOT, overrides)
        return 0
    except ConfigError as error:
        print(f"preview: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
