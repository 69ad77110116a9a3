import argparse
import os
import shlex
import stat
from pathlib import Path

import pytest

from cybulde.cloud.gcp import (
    ClusterSpec,
    GcloudNotFound,
    GcpError,
    add_gcp_arguments,
    down_commands,
    execute,
    run_gcp,
    startup_script,
    up_commands,
)

UP_ARGS = ["up", "--project", "acme-ml", "--zone", "us-central1-a", "--image",
           "us-docker.pkg.dev/acme-ml/cybulde/cybulde:cuda", "--nodes", "3", "--machine-type", "g2-standard-8",
           "--accelerator", "type=nvidia-l4,count=1", "--repo", "https://github.com/acme/cybulde.git",
           "--revision", "abc123", "--tracking-uri", "http://mlflow.internal:5000", "--run-id", "r0123"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cybulde gcp")
    add_gcp_arguments(parser)
    return parser.parse_args(argv)


def _spec(**changes) -> ClusterSpec:
    values = dict(project="acme-ml", zone="us-central1-a", image="us-docker.pkg.dev/acme-ml/cybulde/cybulde:cuda",
                  nodes=2, repo="https://github.com/acme/cybulde.git", revision="abc123",
                  tracking_uri="http://mlflow.internal:5000", run_id="r0123")
    return ClusterSpec(**{**values, **changes})


def test_dry_run_up_prints_template_group_and_named_instances(tmp_path: Path, capsys) -> None:
    assert run_gcp(_parse([*UP_ARGS, "--dry-run", "--workdir", str(tmp_path)])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    script = tmp_path / "cybulde-train-startup.sh"
    assert [shlex.split(line) for line in lines] == [
        ["gcloud", "compute", "firewall-rules", "create", "cybulde-train-internal", "--project", "acme-ml",
         "--network", "default", "--direction", "INGRESS", "--allow", "tcp,udp",
         "--source-tags", "cybulde-train", "--target-tags", "cybulde-train"],
        ["gcloud", "compute", "instance-templates", "create", "cybulde-train-template", "--project", "acme-ml",
         "--machine-type", "g2-standard-8", "--accelerator", "type=nvidia-l4,count=1",
         "--maintenance-policy", "TERMINATE", "--image-family", "common-cu128-ubuntu-2204-nvidia-570",
         "--image-project", "deeplearning-platform-release", "--boot-disk-size", "200GB",
         "--scopes", "cloud-platform", "--metadata", "install-nvidia-driver=True",
         "--metadata-from-file", f"startup-script={script.resolve()}", "--network", "default",
         "--tags", "cybulde-train"],
        ["gcloud", "compute", "instance-groups", "managed", "create", "cybulde-train", "--project", "acme-ml",
         "--zone", "us-central1-a", "--template", "cybulde-train-template", "--size", "0"],
        *[["gcloud", "compute", "instance-groups", "managed", "create-instance", "cybulde-train",
           "--project", "acme-ml", "--zone", "us-central1-a", "--instance", f"cybulde-train-{i}"]
          for i in range(3)],
    ]
    assert script.is_file()


def test_dry_run_down_deletes_group_template_and_rule(capsys) -> None:
    assert run_gcp(_parse(["down", "--project", "acme-ml", "--zone", "us-central1-a", "--dry-run"])) == 0
    assert capsys.readouterr().out.splitlines() == [
        "gcloud compute instance-groups managed delete cybulde-train --project acme-ml --zone us-central1-a --quiet",
        "gcloud compute instance-templates delete cybulde-train-template --project acme-ml --quiet",
        "gcloud compute firewall-rules delete cybulde-train-internal --project acme-ml --quiet",
    ]
    assert down_commands("p", "z", "x")[1][4] == "x-template"


def test_startup_script_runs_one_node_of_the_job() -> None:
    script = startup_script(_spec(nodes=4, accelerator="type=nvidia-l4,count=2",
                                  overrides=("train.epochs=5",)))
    assert "git -C \"$workdir\" checkout --quiet --force abc123" in script
    assert "getent hosts cybulde-train-0" in script
    assert 'RDZV_ENDPOINT="$RDZV_ADDR:29400"' in script
    assert "gcloud auth configure-docker us-docker.pkg.dev --quiet" in script
    assert "docker run --rm --gpus all --network host" in script
    assert "-e MLFLOW_TRACKING_URI=http://mlflow.internal:5000" in script
    node = "--nnodes 4 --nproc-per-node 2 --node-addr \"$NODE_ADDR\" --rdzv-endpoint \"$RDZV_ENDPOINT\" --run-id r0123"
    assert node in script
    assert "-- launch.accelerator=gpu train.epochs=5" in script
    assert "python stages/fetch.py && bash infra/multinode/launch-node.sh" in script


@pytest.mark.parametrize("change, message", [
    ({"accelerator": "nvidia-l4"}, "type=nvidia-l4,count=1"),
    ({"nodes": 0}, "--nodes must be at least 1"),
    ({"name": "Bad_Name"}, "--name"),
    ({"tracking_uri": "https://user:secret@mlflow.example.com"}, "must not carry credentials"),
])
def test_invalid_specs_are_refused(change: dict, message: str) -> None:
    from cybulde.cloud.gcp import validate

    with pytest.raises(GcpError, match=message):
        validate(_spec(**change))


def test_cli_reports_invalid_accelerator_without_writing(tmp_path: Path, capsys) -> None:
    from cybulde.cli import main

    argv = [*UP_ARGS, "--accelerator", "l4", "--dry-run", "--workdir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:  # a usage error: usage line, message, status 2
        main(["gcp", *argv])
    assert exit_info.value.code == 2
    assert "type=nvidia-l4,count=1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_gcloud_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GcloudNotFound, match="gcloud is not on PATH"):
        execute(down_commands("p", "z", "n"), dry_run=False)


def test_commands_run_in_order_through_gcloud(tmp_path: Path, monkeypatch, capsys) -> None:
    record = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    spec = _spec()
    execute(up_commands(spec, tmp_path / "startup.sh"), dry_run=False)
    calls = record.read_text().splitlines()
    assert len(calls) == 3 + spec.nodes
    assert calls[0].startswith("compute firewall-rules create cybulde-train-internal")
    assert calls[1].startswith("compute instance-templates create cybulde-train-template")
    assert calls[-1].endswith("--instance cybulde-train-1")


def test_a_failing_command_stops_the_sequence(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "gcloud"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(GcpError, match="status 3"):
        execute(down_commands("p", "z", "n"), dry_run=False)


def test_startup_script_is_valid_bash(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "startup.sh"
    path.write_text(startup_script(_spec(overrides=("model.head=sigmoid",))))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
