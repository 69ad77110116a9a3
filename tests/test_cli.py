"""`cybulde`: one error contract for every subcommand, in `cybulde.cli.main`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cybulde import cli
from cybulde.errors import CybuldeError, UsageError


def with_subcommand(monkeypatch, handler):
    """The real table plus `boom`, whose handler is `handler`."""
    real = cli.subcommands

    def table():
        return [*real(), cli.Subcommand("boom", "a test command", lambda parser: parser.add_argument("--x"), handler)]

    monkeypatch.setattr(cli, "subcommands", table)


def test_a_cybulde_error_is_one_line_and_exit_1(monkeypatch, capsys):
    def handler(args):
        raise CybuldeError("the input is wrong:\n  line 2 has   no text")

    with_subcommand(monkeypatch, handler)
    assert cli.main(["boom"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "cybulde boom: error: the input is wrong: line 2 has no text\n"
    assert captured.out == ""


def test_usage_errors_exit_2_with_the_usage(monkeypatch, capsys):
    def handler(args):
        raise UsageError("--x needs --y")

    with_subcommand(monkeypatch, handler)
    for argv in (["boom"], ["boom", "--unknown"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: cybulde")
    with pytest.raises(SystemExit):
        cli.main(["boom"])
    assert capsys.readouterr().err.strip().endswith("cybulde boom: error: --x needs --y")


def test_anything_else_is_a_bug_and_keeps_its_traceback(monkeypatch):
    def handler(args):
        raise KeyError("unexpected")

    with_subcommand(monkeypatch, handler)
    with pytest.raises(KeyError, match="unexpected"):
        cli.main(["boom"])


def test_every_subcommand_is_in_the_table():
    assert [command.name for command in cli.subcommands()] == ["publish", "predict", "evaluate-cross",
                                                               "evaluate-behaviour", "gcp"]


def test_the_installed_command_follows_the_contract(tmp_path):
    cybulde = Path(sys.executable).parent / "cybulde"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    finished = subprocess.run([str(cybulde), "evaluate-cross", "--model", str(tmp_path / "none"), "--data",
                               str(tmp_path / "no-data")], capture_output=True, text=True, env=env, timeout=120)
    assert finished.returncode == 1
    assert finished.stderr.startswith("cybulde evaluate-cross: error: ") and finished.stderr.count("\n") == 1
    finished = subprocess.run([str(cybulde), "predict"], capture_output=True, text=True, env=env, timeout=120)
    assert finished.returncode == 2 and "the following arguments are required: -m/--model" in finished.stderr


def test_the_executable_exits_with_the_status_of_main_and_skips_the_shutdown_collection(monkeypatch):
    """Whether the shutdown is then quick is checked on a real process in tests/serving/test_bounds.py."""
    frozen = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(cli, "main", lambda: 3)
    with pytest.raises(SystemExit) as exit_info:
        cli.run()
    assert exit_info.value.code == 3
    assert frozen == [True]
