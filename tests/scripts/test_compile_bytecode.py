"""scripts/compile_bytecode.py and scripts/bytecode-dirs.txt: the install byte-compiles the folders
the pipeline imports from, and only those; a full pass compiles the rest, less test suites."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers.script_module import REPO, load_script

SCRIPT = REPO / "scripts" / "compile_bytecode.py"
LISTING = REPO / "scripts" / "bytecode-dirs.txt"
listed_dirs = load_script("scripts/compile_bytecode.py").listed_dirs


def fake_environment(tmp_path: Path) -> tuple[Path, Path]:
    """A virtual environment (no pip) with a few packages: returns its python and site-packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for module in ("used/__init__.py", "used/core.py", "used/sub/deep.py", "used/tests/test_core.py",
                   "unused/__init__.py", "top_level.py"):
        (site / module).parent.mkdir(parents=True, exist_ok=True)
        (site / module).write_text("VALUE = 1\n")
    (site / "used" / "newer_python.py").write_text("def broken(:\n")  # does not compile: left as is
    return python, site


def compiled(site: Path, module: str) -> bool:
    path = site / module
    return any((path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"))


def run(python: Path, *args: str) -> str:
    return subprocess.run([str(python), str(SCRIPT), *args], check=True, capture_output=True,
                          text=True).stdout


def test_listed_folders_only_and_not_their_subfolders(tmp_path: Path) -> None:
    python, site = fake_environment(tmp_path)
    listing = tmp_path / "dirs.txt"
    listing.write_text("# a comment\nused\n.\n\nmissing/package  # not installed: skipped\n")
    output = run(python, "--dirs", str(listing))
    assert compiled(site, "used/__init__.py") and compiled(site, "used/core.py")
    assert compiled(site, "top_level.py")  # "." is site-packages itself
    assert not compiled(site, "used/sub/deep.py")
    assert not compiled(site, "unused/__init__.py")
    assert not compiled(site, "used/newer_python.py")
    assert "byte-compiled 3 of 4 modules in 3 listed folders" in output


def test_a_full_pass_compiles_the_rest_but_not_test_suites(tmp_path: Path) -> None:
    python, site = fake_environment(tmp_path)
    listing = tmp_path / "dirs.txt"
    listing.write_text("used\n")
    run(python, "--dirs", str(listing))
    before = next((site / "used" / "__pycache__").glob("core.*.pyc")).stat().st_mtime_ns
    run(python)
    for module in ("used/sub/deep.py", "unused/__init__.py", "top_level.py"):
        assert compiled(site, module), module
    assert not compiled(site, "used/tests/test_core.py")
    # current bytecode is left as it is
    assert next((site / "used" / "__pycache__").glob("core.*.pyc")).stat().st_mtime_ns == before


def test_every_listed_folder_is_installed() -> None:
    """A folder the lock no longer installs means the listing is stale: rerun the recorder."""
    site = Path(sysconfig.get_path("purelib"))
    missing = [folder for folder in listed_dirs(LISTING) if not (site / folder).is_dir()]
    assert not missing, f"not installed (rerun scripts/record_bytecode_dirs.sh): {missing[:10]}"


@pytest.mark.slow
def test_the_stages_imports_are_listed() -> None:
    """What the stages' code imports, observed in a fresh process, lies in the listed folders."""
    probe = ("import os, sys, sysconfig\n"
             "import cybulde.registry.fetch, cybulde.training.train, cybulde.training.launcher\n"
             "import cybulde.evaluation.evaluate, cybulde.evaluation.baseline, cybulde.tracking.run\n"
             "site = sysconfig.get_path('purelib')\n"
             "files = {getattr(m, '__file__', None) or '' for m in list(sys.modules.values())}\n"
             "print(*sorted({os.path.relpath(os.path.dirname(f), site) for f in files"
             " if f.startswith(site + os.sep) and f.endswith('.py')}), sep='\\n')\n")
    imported = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                              text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout.split()
    unlisted = sorted(set(imported) - set(listed_dirs(LISTING)))
    assert imported and not unlisted, f"imported but not listed: {unlisted[:20]}"
