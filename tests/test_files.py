"""Files and folders that appear whole (cybulde.files)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cybulde.files import TEMP_MARKER, remove_temporary_files, replace_folder, write_file_atomically


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "file"
    write_file_atomically(target, lambda temporary: temporary.write_bytes(b"first"))

    def fail_halfway(temporary):
        temporary.write_bytes(b"sec")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomically(target, fail_halfway)
    assert target.read_bytes() == b"first" and [path.name for path in tmp_path.iterdir()] == ["file"]


def test_a_writer_killed_outright_leaves_the_old_file_and_a_temporary_that_is_cleared(tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from cybulde.files import write_file_atomically

        def slow(temporary):
            temporary.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)

        write_file_atomically(Path({str(target)!r}), slow)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert target.read_bytes() == b"old"
    [leftover] = [path for path in tmp_path.iterdir() if path != target]
    assert TEMP_MARKER in leftover.name and leftover.name.startswith(".file")
    remove_temporary_files(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_a_folder_is_replaced_whole_and_put_back_when_the_swap_fails(tmp_path, monkeypatch):
    destination, staging = tmp_path / "out", tmp_path / "staging"
    destination.mkdir()
    (destination / "a").write_text("old")
    staging.mkdir()
    (staging / "b").write_text("new")
    replace_folder(staging, destination)
    assert [p.name for p in destination.iterdir()] == ["b"] and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the retired folder is gone

    second = tmp_path / "second"
    second.mkdir()
    real_rename = Path.rename

    def failing_rename(self, target):
        if self == second:
            raise OSError("no")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="no"):
        replace_folder(second, destination)
    assert [p.name for p in destination.iterdir()] == ["b"]  # the old folder is back in place
