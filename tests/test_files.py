"""Files and folders that appear whole, the JSON layout and the file digests (cybulde.files)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cybulde.files import (
    TEMP_MARKER,
    files_sha256,
    json_text,
    remove_temporary_files,
    replace_folder,
    sha256_file,
    tree_sha256,
    write_file_atomically,
    write_json,
)


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


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_file_written_private_through_a_temporary_gets_the_umasks_mode(tmp_path, umask):
    """A writer that creates its file 0600 (as safetensors and mkstemp do) still leaves an ordinary file."""

    def private(temporary):
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    previous = os.umask(umask)
    try:
        write_file_atomically(tmp_path / "written", private)
        (tmp_path / "plain").write_bytes(b"")  # what an ordinary writer gets under this umask
    finally:
        os.umask(previous)
    assert (tmp_path / "written").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 \
        == 0o666 & ~umask


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


def test_json_is_written_whole_indented_with_sorted_keys(tmp_path, monkeypatch):
    target = tmp_path / "metrics" / "test.json"
    assert write_json({"b": 1, "a": [0.5, None]}, target) == target
    assert target.read_text(encoding="utf-8") == '{\n  "a": [\n    0.5,\n    null\n  ],\n  "b": 1\n}\n'
    assert json_text({"b": 1, "a": [0.5, None]}) == target.read_text(encoding="utf-8")

    monkeypatch.setattr(json, "dumps", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_json({"c": 2}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": [0.5, None], "b": 1}
    assert [path.name for path in target.parent.iterdir()] == ["test.json"]


def test_json_of_other_types_needs_a_default(tmp_path):
    with pytest.raises(TypeError):
        write_json({"path": Path("x")}, tmp_path / "a.json")
    assert json.loads(write_json({"path": Path("x")}, tmp_path / "a.json", default=str).read_text()) == {"path": "x"}


def test_digests_of_a_file_and_of_a_tree(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_bytes(b"a" * (3 << 20))  # more than one read chunk
    (tmp_path / "pkg" / "sub" / "b.py").write_bytes(b"b")
    assert sha256_file(tmp_path / "pkg" / "a.py") == hashlib.sha256(b"a" * (3 << 20)).hexdigest()

    folder = tmp_path / "pkg"
    expected = hashlib.sha256(f"a.py\0{sha256_file(folder / 'a.py')}\nsub/b.py\0{hashlib.sha256(b'b').hexdigest()}\n"
                              .encode()).hexdigest()
    assert tree_sha256(folder) == expected == files_sha256([folder / "a.py", folder / "sub" / "b.py"], folder)
    (folder / "sub" / "b.py").rename(folder / "b.py")
    assert tree_sha256(folder) != expected  # a moved file changes the tree's digest
