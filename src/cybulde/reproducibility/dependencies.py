"""The dependency check: does each DVC stage declare everything that can change its outputs?

`dvc.lock` is only as honest as `dvc.yaml`: a stage reruns when a declared dep or param changes, and
only then. For every stage this check compares

- the project modules its entry point imports, transitively and statically (`ast`; imports inside
  functions count, `if TYPE_CHECKING:` blocks do not), with its declared `deps`: a dep covers a
  module when it is the module's file or a folder above it;
- the param keys it reads, recorded while the pipeline runs with `$CYBULDE_RECORD_PARAMS` set (see
  `cybulde.config.access`), with its declared `params`: a declared `model` covers `model.*`.

A module listed in `HARMLESS_MODULES` need not be declared, and the params it reads do not count;
its own imports are still followed. A package `__init__.py` holding nothing but a docstring, imports
and dunder constants (`__all__`, `__version__`) runs no code of its own and needs no dep either.

    python -m cybulde.reproducibility.dependencies [--root .] [--records FOLDER]

exits 1 and prints one line per problem, each naming the stage, the module or key, and the fix.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cybulde.config.access import read_records
from cybulde.config.loader import PARAMS_FILE
from cybulde.errors import CybuldeError

# Project modules that cannot change any stage's outputs, so no stage needs them in its `deps`, and
# the params they read are not counted. A package name covers its submodules. Extend it with care:
# each entry must be code whose changes can never alter a file that a stage writes.
HARMLESS_MODULES: dict[str, str] = {
    "cybulde.errors": "exception classes and their one-line message only: an error stops a stage, it never "
                      "changes what it writes",
    "cybulde.registry.errors": "exception classes only, like cybulde.errors",
    "cybulde.entrypoint": "logging setup, the load_config call and one-line error printing around each stage",
    "cybulde.tracking": "MLflow logging (params, metrics, artifacts): it writes only to the tracking store, "
                        "never to a DVC output",
    "cybulde.publishing": "logging and registering the servable model: it writes only to the tracking store, "
                          "never to a DVC output",
}

THIS_FILE = "src/cybulde/reproducibility/dependencies.py"
SEARCH_ROOTS = ("src", ".")  # where project modules live, relative to the project root


class DependencyError(CybuldeError, RuntimeError):
    """A stage imports a module or reads a param that its `deps`/`params` in dvc.yaml do not declare."""


@dataclass(frozen=True)
class StageSpec:
    """What dvc.yaml declares for one stage, `${...}` already resolved by DVC."""

    name: str
    cmd: str
    deps: tuple[str, ...]  # paths relative to the project root
    params: tuple[str, ...]  # keys of params.yaml; "" stands for the whole file


@dataclass(frozen=True)
class ImportedModule:
    name: str  # "cybulde.config.paths"; an entry script is named by its path
    path: str  # relative to the project root, "/"-separated
    chain: tuple[str, ...]  # how the entry point reaches it: (entry, module, ..., this module)


@dataclass
class DependencyReport:
    problems: list[str] = field(default_factory=list)
    params_unchecked: list[str] = field(default_factory=list)  # stages without recorded reads

    def raise_if_any(self) -> None:
        if self.problems:
            raise DependencyError(f"{len(self.problems)} undeclared dependencies in dvc.yaml:\n  "
                                  + "\n  ".join(self.problems))


def read_stages(root: Path) -> list[StageSpec]:
    """The stages of `root`'s dvc.yaml as DVC itself resolves them."""
    # DVC loads only when dvc.yaml is read
    from dvc.repo import Repo

    specs = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):
                continue  # a .dvc file, not a pipeline stage
            deps, params = [], []
            for dep in stage.deps:
                where = os.path.relpath(os.path.join(stage.wdir, dep.def_path), root)
                if hasattr(dep, "params"):
                    if Path(where).name == PARAMS_FILE:
                        params.extend(dep.params or [""])
                else:
                    deps.append(Path(where).as_posix())
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            specs.append(StageSpec(stage.name, cmd, tuple(deps), tuple(params)))
    return specs


def entry_scripts(cmd: str, root: Path) -> list[str]:
    """The project's Python files a stage command runs: `*.py` arguments and `-m module` targets."""
    tokens = shlex.split(cmd.replace("&&", " "))
    graph = ImportGraph(root)
    scripts = []
    for index, token in enumerate(tokens):
        if token.endswith(".py") and (root / token).is_file():
            scripts.append(Path(token).as_posix())
        elif token == "-m" and index + 1 < len(tokens):
            module_path = graph.resolve(tokens[index + 1])
            if module_path is not None:
                scripts.append(module_path)
    return scripts


class ImportGraph:
    """Static imports between the project's own modules (those under `SEARCH_ROOTS`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, name: str) -> str | None:
        """`cybulde.config.paths` -> `src/cybulde/config/paths.py`, or None outside the project."""
        parts = name.split(".")
        for search_root in SEARCH_ROOTS:
            base = (self.root / search_root).joinpath(*parts)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file() and (self.root / search_root / parts[0]).exists():
                    return candidate.relative_to(self.root).as_posix()
        return None

    def imported_names(self, path: str, module: str | None) -> list[str]:
        """Every project module `path` imports, with the packages whose `__init__` that runs."""
        tree = ast.parse((self.root / path).read_text(encoding="utf-8"), filename=path)
        package = None
        if module is not None:
            package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        names = []
        for candidate in _ImportCollector(package).collect(tree):
            parts = candidate.split(".")
            for length in range(1, len(parts) + 1):
                prefix = ".".join(parts[:length])
                if prefix not in names and self.resolve(prefix) is not None:
                    names.append(prefix)
        return names

    def closure(self, entry: str) -> list[ImportedModule]:
        """The entry script and every project module it reaches, breadth first (shortest chains)."""
        found = {entry: ImportedModule(entry, entry, (entry,))}
        queue = [entry]
        while queue:
            current = found[queue.pop(0)]
            module = None if current.name == entry else current.name
            for name in self.imported_names(current.path, module):
                if name not in found:
                    found[name] = ImportedModule(name, str(self.resolve(name)), (*current.chain, name))
                    queue.append(name)
        return list(found.values())

    def is_inert(self, path: str) -> bool:
        """Only a docstring, imports and dunder constants: importing it runs no code of its own."""
        tree = ast.parse((self.root / path).read_text(encoding="utf-8"))
        return all(_is_inert_statement(statement) for statement in tree.body)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, package: str | None) -> None:
        self.package = package
        self.names: list[str] = []

    def collect(self, tree: ast.AST) -> list[str]:
        self.visit(tree)
        return self.names

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for statement in node.orelse:  # the body runs only under a type checker
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.extend(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            if self.package is None:
                return
            anchor = self.package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        self.names.append(base)
        self.names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_inert_statement(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return True
    if isinstance(statement, ast.Expr):
        return isinstance(statement.value, ast.Constant)
    if isinstance(statement, ast.Assign):
        targets_dunder = all(isinstance(target, ast.Name) and target.id.startswith("__") and target.id.endswith("__")
                             for target in statement.targets)
        return targets_dunder and isinstance(statement.value, ast.Constant | ast.List | ast.Tuple)
    return False


def is_harmless(module: str, harmless: Iterable[str] = HARMLESS_MODULES) -> bool:
    return any(module == entry or module.startswith(entry + ".") for entry in harmless)


def covered_by(deps: Iterable[str], path: str) -> bool:
    """A dep covers `path` when it is that file or a folder above it."""
    for dep in deps:
        dep = dep.rstrip("/")
        if path == dep or path.startswith(dep + "/") or dep in ("", "."):
            return True
    return False


def declares(params: Iterable[str], key: str) -> bool:
    """A declared key covers itself and everything under it (`model` covers `model.head`)."""
    return any(declared == "" or key == declared or key.startswith(declared + ".") for declared in params)


def module_problems(stage: StageSpec, root: Path, harmless: Mapping[str, str] = HARMLESS_MODULES) -> list[str]:
    graph = ImportGraph(root)
    problems = []
    reported: set[str] = set()
    for entry in entry_scripts(stage.cmd, root):
        for module in graph.closure(entry):
            if module.path in reported or covered_by(stage.deps, module.path):
                continue
            if is_harmless(module.name, harmless) or (module.path.endswith("__init__.py")
                                                      and graph.is_inert(module.path)):
                continue
            reported.add(module.path)
            problems.append(
                f"stage '{stage.name}' imports {module.name} ({' -> '.join(module.chain)}) but its deps do not "
                f"cover {module.path}: add `- {module.path}` (or a folder above it) to stages.{stage.name}.deps "
                f"in dvc.yaml; only if it cannot change the stage's outputs, add '{module.name}' with the reason "
                f"to HARMLESS_MODULES in {THIS_FILE}")
    return problems


@dataclass(frozen=True)
class ParamRead:
    entry: str  # the script the reading process ran, relative to the project root where possible
    key: str
    module: str


def read_param_reads(folder: Path, root: Path) -> list[ParamRead]:
    """The records `cybulde.config.access` wrote under `folder`, entry paths made project-relative."""
    reads = []
    for record in read_records(folder):
        entry = Path(record["entry"])
        resolved = (entry if entry.is_absolute() else root / entry).resolve()
        try:
            entry_name = resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            entry_name = str(entry)
        reads.append(ParamRead(entry_name, record["key"], record["module"]))
    return reads


def param_problems(stage: StageSpec, reads: Sequence[ParamRead], root: Path,
                   harmless: Mapping[str, str] = HARMLESS_MODULES) -> list[str]:
    entries = set(entry_scripts(stage.cmd, root))
    problems: dict[str, str] = {}
    for read in reads:
        if read.entry not in entries or is_harmless(read.module, harmless) or declares(stage.params, read.key):
            continue
        section = read.key.split(".", 1)[0]
        problems.setdefault(read.key, (
            f"stage '{stage.name}' reads param {read.key} (in {read.module}) but does not declare it: add "
            f"`- {read.key}` (or its section `- {section}`) to stages.{stage.name}.params in dvc.yaml"))
    return list(problems.values())


def check_dependencies(root: Path, records: Path | None = None,
                       harmless: Mapping[str, str] = HARMLESS_MODULES) -> DependencyReport:
    """Every stage's undeclared modules and, given recorded reads, its undeclared params."""
    root = root.resolve()
    report = DependencyReport()
    reads = read_param_reads(records, root) if records is not None else None
    for stage in read_stages(root):
        report.problems += module_problems(stage, root, harmless)
        if reads is None:
            continue
        entries = set(entry_scripts(stage.cmd, root))
        if entries and not any(read.entry in entries for read in reads):
            report.params_unchecked.append(stage.name)
        report.problems += param_problems(stage, reads, root, harmless)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--records", type=Path, default=None,
                        help="folder of param reads recorded with $CYBULDE_RECORD_PARAMS (default: imports only)")
    args = parser.parse_args(argv)
    report = check_dependencies(args.root, args.records)
    for problem in report.problems:
        print(f"dependencies: {problem}", file=sys.stderr)
    if report.params_unchecked:
        print(f"dependencies: no param reads recorded for stage(s) {', '.join(report.params_unchecked)}",
              file=sys.stderr)
    if report.problems:
        return 1
    print("dependencies: every stage declares the modules it imports"
          + (" and the params it reads" if args.records else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
