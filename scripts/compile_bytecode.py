"""Byte-compile a virtual environment's installed packages, a worker per core.

    python scripts/compile_bytecode.py [--dirs FILE]

Run with the environment's own interpreter. Without `--dirs`: every package, less the packages' own
test suites, which nothing imports. With `--dirs FILE`: only the modules directly in the folders
FILE lists (one per line, relative to site-packages; `#` starts a comment), the folders the default
pipeline imports from (`scripts/bytecode-dirs.txt`, recorded by `scripts/record_bytecode_dirs.sh`).
A listed folder the environment lacks is skipped. Modules whose bytecode is current are left as
they are, so a full pass after a partial one compiles only the rest.

Where PYTHONDONTWRITEBYTECODE is set, an import cannot write the bytecode it compiles, so every
process would compile what it imports again: this script is why it need not. A file that does not
compile (a template, code for a newer Python) is left to the interpreter, as pip leaves it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import sysconfig
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

TEST_SUITES = re.compile(r"[/\\]tests?[/\\]")


def site_dirs() -> list[Path]:
    """This interpreter's package folders (purelib and platlib, once each)."""
    return [Path(place) for place in sorted({sysconfig.get_path(name) for name in ("purelib", "platlib")})]


def listed_dirs(listing: Path) -> list[str]:
    """The folders a `--dirs` file names: one per line, blank lines and `#` comments left out."""
    lines = (line.split("#", 1)[0].strip() for line in listing.read_text().splitlines())
    return [line for line in lines if line]


def every_module(site: Path) -> Iterator[Path]:
    """Every module under `site`, less test suites."""
    for folder, _, names in os.walk(site):
        for name in sorted(names):
            if name.endswith(".py") and not TEST_SUITES.search(os.path.join(folder, "")):
                yield Path(folder) / name


def modules_in(site: Path, relative_dirs: list[str]) -> Iterator[Path]:
    """The modules directly in each listed folder of `site` (not in its subfolders)."""
    for relative in relative_dirs:
        folder = site / relative
        if folder.is_dir():
            yield from sorted(path for path in folder.iterdir() if path.suffix == ".py" and path.is_file())


def compile_all(modules: list[Path]) -> int:
    """Compile `modules` with a worker per core; the number of them that did not compile."""
    if not modules:
        return 0
    with ProcessPoolExecutor() as pool:
        results = pool.map(partial(compileall.compile_file, quiet=2), modules, chunksize=64)
        return sum(not ok for ok in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dirs", type=Path, help="compile only the modules directly in these folders")
    args = parser.parse_args(argv)
    wanted = listed_dirs(args.dirs) if args.dirs else None
    modules = list(dict.fromkeys(module for site in site_dirs()
                                 for module in (every_module(site) if wanted is None else modules_in(site, wanted))))
    failed = compile_all(modules)
    print(f"byte-compiled {len(modules) - failed} of {len(modules)} modules"
          + (f" in {len(wanted)} listed folders" if wanted is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
