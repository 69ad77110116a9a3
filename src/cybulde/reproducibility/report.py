"""The pull-request report: what a change does to the pipeline's params, metrics and plots.

    python -m cybulde.reproducibility.report --base main [--head HEAD] [--out report]
    make report BASE=main

writes `<out>/report.md` (Markdown: `dvc params diff` and `dvc metrics diff` between the two
revisions, the per-class F1 of both, the list of figures) and one PNG per plot that dvc.yaml
declares: curves (ROC, PR) of base and head on one figure, confusion matrices side by side. The
plots are read from each revision's committed plot files (`cache: false` outputs) and drawn with
matplotlib, so no browser and no network is needed. `--head workspace` (the default) compares
against the working tree. The GitHub workflow writes report.md to the job summary and uploads the
PNGs as an artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cybulde.errors import CybuldeError

WORKSPACE = "workspace"
REPORT_FILE = "report.md"
PER_CLASS_GLOB = "metrics/*_per_class.json"
CONFUSION_TEMPLATES = ("confusion", "confusion_normalized")


class ReportError(CybuldeError, RuntimeError):
    """A revision does not exist, or DVC cannot compare the two."""


@dataclass(frozen=True)
class PlotSpec:
    path: str
    template: str
    x: str | None
    y: str | None


@dataclass(frozen=True)
class Revisions:
    base: str
    head: str  # a Git revision or WORKSPACE

    def label(self, revision: str) -> str:
        """A short name for headers: the 7-digit commit, or 'workspace'."""
        return revision if revision == WORKSPACE else revision[:7]

    def legends(self) -> dict[str, str]:
        """{"base 1a2b3c4": base revision, "head 5d6e7f8": head revision} (figure legends and titles)."""
        return {f"base {self.label(self.base)}": self.base, f"head {self.label(self.head)}": self.head}


def run(command: Sequence[str], root: Path) -> str:
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(list(command), cwd=root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReportError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def resolve(root: Path, revision: str) -> str:
    if revision == WORKSPACE:
        return WORKSPACE
    try:
        return run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], root).strip()
    except ReportError:
        raise ReportError(f"no such Git revision: {revision!r} (fetch it first, e.g. git fetch origin "
                          f"{revision})") from None


def read_at(root: Path, revision: str, path: str) -> str | None:
    """The file's text at `revision` (or in the working tree), None where it does not exist."""
    if revision == WORKSPACE:
        file = root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=root, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def dvc_diff(root: Path, kind: str, revisions: Revisions) -> str:
    """`dvc params|metrics diff --md` between the revisions, stripped; "" when nothing changed."""
    command = ["dvc", kind, "diff", revisions.label(revisions.base)]  # short names: narrower tables
    if revisions.head != WORKSPACE:
        command.append(revisions.label(revisions.head))
    table = run([*command, "--md"], root).strip()
    return table if len(table.splitlines()) > 2 else ""  # a header and its rule only: nothing changed


def plot_specs(dvc_yaml: str | None) -> list[PlotSpec]:
    """The plot files declared in a dvc.yaml (stage `plots:` and top-level `plots:`), in order."""
    document = yaml.safe_load(dvc_yaml or "") or {}
    entries = [entry for stage in (document.get("stages") or {}).values() for entry in stage.get("plots") or []]
    entries += document.get("plots") or []
    specs = []
    for entry in entries:
        path, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        props = props or {}
        x, y = props.get("x"), props.get("y")
        template = str(props.get("template", "linear"))
        if isinstance(x, str | None) and isinstance(y, dict):
            # A top-level plot of one field in several files (the model's curve and the baseline's): each file.
            specs += [PlotSpec(str(file), template, x, str(field)) for file, field in y.items()]
        elif isinstance(x, str | None) and isinstance(y, str | None):
            specs.append(PlotSpec(str(path), template, x, y))
    return specs


def plot_rows(text: str | None) -> list[dict[str, Any]] | None:
    """The data rows of a DVC plot file: a JSON list, or the first list under a top-level key."""
    if text is None:
        return None
    data = json.loads(text)
    if isinstance(data, dict):
        data = next((value for value in data.values() if isinstance(value, list)), [])
    return [row for row in data if isinstance(row, dict)]


def figure_name(path: str) -> str:
    """plots/validation/roc.json -> validation-roc.png"""
    parts = Path(path).with_suffix("").parts
    return "-".join(parts[1:] if parts[0] == "plots" and len(parts) > 1 else parts) + ".png"


def draw_curves(spec: PlotSpec, rows: Mapping[str, list[dict[str, Any]] | None], out: Path) -> None:
    # matplotlib only when a chart is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for (label, data), style in zip(rows.items(), ("--", "-"), strict=False):
        if data:
            axes.plot([row[spec.x] for row in data], [row[spec.y] for row in data], style, label=label)
    axes.set_xlabel(str(spec.x))
    axes.set_ylabel(str(spec.y))
    axes.set_title(spec.path)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def confusion_counts(data: list[dict[str, Any]], x: str, y: str, labels: list[str]) -> list[list[int]]:
    """counts[actual][predicted] over `labels` (y: actual, x: predicted, as dvc.yaml declares)."""
    index = {label: position for position, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for row in data:
        counts[index[str(row[y])]][index[str(row[x])]] += 1
    return counts


def draw_confusions(spec: PlotSpec, rows: Mapping[str, list[dict[str, Any]] | None], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = spec.x or "predicted", spec.y or "actual"
    labels = sorted({str(row[key]) for data in rows.values() if data for row in data for key in (x, y)})
    figure, all_axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 4.2), squeeze=False)
    for axes, (label, data) in zip(all_axes[0], rows.items(), strict=True):
        axes.set_title(f"{label}: {spec.path}", fontsize=9)
        if not data:
            axes.text(0.5, 0.5, "no data at this revision", ha="center", va="center")
            axes.set_axis_off()
            continue
        counts = confusion_counts(data, x, y, labels)
        axes.imshow(counts, cmap="Blues")
        largest = max(max(row) for row in counts) or 1
        for row_index, row in enumerate(counts):
            for column_index, count in enumerate(row):
                axes.text(column_index, row_index, str(count), ha="center", va="center",
                          color="white" if count > largest / 2 else "black")
        axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axes.set_yticks(range(len(labels)), labels)
        axes.set_xlabel(x)
        axes.set_ylabel(y)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def draw_plots(root: Path, revisions: Revisions, out_dir: Path) -> list[tuple[str, PlotSpec, list[str]]]:
    """One PNG per plot the head's dvc.yaml declares; returns (file name, spec, revisions lacking it)."""
    drawn = []
    for spec in plot_specs(read_at(root, revisions.head, "dvc.yaml")):
        rows = {label: plot_rows(read_at(root, revision, spec.path)) for label, revision in revisions.legends().items()}
        missing = [label for label, data in rows.items() if not data]
        if len(missing) == len(rows):
            continue
        name = figure_name(spec.path)
        if spec.template in CONFUSION_TEMPLATES:
            draw_confusions(spec, rows, out_dir / name)
        elif spec.x and spec.y:
            draw_curves(spec, rows, out_dir / name)
        else:
            continue  # no axes declared: nothing to draw from
        drawn.append((name, spec, missing))
    return drawn


def per_class_f1(root: Path, revision: str) -> dict[tuple[str, str], float]:
    """{(split, label): f1} from the metrics/<split>_per_class.json files at `revision`."""
    if revision == WORKSPACE:
        paths = sorted(str(path.relative_to(root)) for path in root.glob(PER_CLASS_GLOB))
    else:
        listed = subprocess.run(["git", "ls-tree", "--name-only", revision, "metrics/"], cwd=root,
                                capture_output=True, text=True).stdout.split()
        paths = sorted(path for path in listed if path.endswith("_per_class.json"))
    scores = {}
    for path in paths:
        split = Path(path).name.removesuffix("_per_class.json")
        for label, values in json.loads(read_at(root, revision, path) or "{}").items():
            if isinstance(values, dict) and "f1" in values:
                scores[(split, str(label))] = float(values["f1"])
    return scores


def per_class_table(root: Path, revisions: Revisions) -> str:
    base, head = per_class_f1(root, revisions.base), per_class_f1(root, revisions.head)
    if not base and not head:
        return ""
    base_label, head_label = revisions.label(revisions.base), revisions.label(revisions.head)
    lines = [f"| Split | Class | F1 {base_label} | F1 {head_label} | Change |", "|---|---|---|---|---|"]
    for key in sorted(base.keys() | head.keys()):
        before, after = base.get(key), head.get(key)
        change = f"{after - before:+.4f}" if before is not None and after is not None else "-"
        lines.append(f"| {key[0]} | {key[1]} | {_number(before)} | {_number(after)} | {change} |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def build_report(root: Path, base: str, head: str = WORKSPACE, out_dir: Path | None = None) -> Path:
    """Write report.md and the PNGs into `out_dir` (default `<root>/report`); returns report.md's path."""
    root = root.resolve()
    revisions = Revisions(resolve(root, base), resolve(root, head))
    out_dir = (out_dir or root / "report").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    base_label, head_label = revisions.label(revisions.base), revisions.label(revisions.head)
    params = dvc_diff(root, "params", revisions)
    metrics = dvc_diff(root, "metrics", revisions)
    per_class = per_class_table(root, revisions)
    figures = draw_plots(root, revisions, out_dir)
    sections = [
        f"# Pipeline report: `{base}` ({base_label}) → `{head}` ({head_label})",
        "## Params\n\n" + (params or "No params changed."),
        "## Metrics\n\n" + (metrics or "No metrics changed."),
    ]
    if per_class:
        sections.append("## Per-class F1\n\n" + per_class)
    if figures:
        lines = [f"Base {base_label} (dashed, left) and head {head_label} (solid, right); the PNGs are the "
                 f"workflow's `pr-report` artifact, or in `{out_dir.name}/` locally:", ""]
        for name, spec, missing in figures:
            note = f" (no data at {', '.join(missing)})" if missing else ""
            lines.append(f"- `{name}`: `{spec.path}`{note}")
        sections.append("## Plots\n\n" + "\n".join(lines))
    report = out_dir / REPORT_FILE
    report.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision the change is compared with (e.g. main)")
    parser.add_argument("--head", default=WORKSPACE, help="a Git revision, or 'workspace' (default)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        report = build_report(args.root, args.base, args.head, args.out)
    except ReportError as error:
        print(f"report: error: {error}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
