import argparse
import os
import shlex
import shutil
import stat
import subprocess
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
    validate,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"us-docker.pkg.dev/acme-ml/cybulde/cybulde@{DIGEST}"
ACCOUNT = "cybulde-train-node@acme-ml.iam.gserviceaccount.com"
UP_ARGS = ["up", "--project", "acme-ml", "--zone", "us-central1-a", "--image", IMAGE, "--nodes", "3",
           "--machine-type", "g2-standard-8", "--accelerator", "type=nvidia-l4,count=1",
           "--repo", "https://github.com/acme/cybulde.git", "--revision", COMMIT,
           "--tracking-uri", "https://mlflow.internal", "--mlflow-user", "pipeline",
           "--mlflow-secret", "cybulde-mlflow-pipeline", "--run-id", "r0123",
           "data.registry=gs://acme-data/registry"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cybulde gcp")
    add_gcp_arguments(parser)
    return parser.parse_args(argv)


def _spec(**changes) -> ClusterSpec:
    values = dict(project="acme-ml", zone="us-central1-a", image=IMAGE, nodes=2,
                  repo="https://github.com/acme/cybulde.git", revision=COMMIT,
                  tracking_uri="https://mlflow.internal", run_id="r0123", mlflow_user="pipeline",
                  mlflow_secret="cybulde-mlflow-pipeline", overrides=("data.registry=gs://acme-data/registry",))
    return ClusterSpec(**{**values, **changes})


def _dry_run_up(tmp_path: Path, capsys, *extra: str) -> list[list[str]]:
    assert run_gcp(_parse([*UP_ARGS, *extra, "--dry-run", "--workdir", str(tmp_path)])) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.strip().splitlines()]


def _commands(commands: list[list[str]], *prefix: str) -> list[list[str]]:
    return [command for command in commands if command[:len(prefix)] == list(prefix)]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_dry_run_up_prints_network_rule_account_template_group_and_named_instances(tmp_path: Path, capsys) -> None:
    lines = _dry_run_up(tmp_path, capsys)
    script = tmp_path / "cybulde-train-startup.sh"
    member = ["--member", f"serviceAccount:{ACCOUNT}"]
    assert lines == [
        ["gcloud", "compute", "networks", "create", "cybulde-train-net", "--project", "acme-ml",
         "--subnet-mode", "custom"],
        ["gcloud", "compute", "networks", "subnets", "create", "cybulde-train-subnet", "--project", "acme-ml",
         "--network", "cybulde-train-net", "--region", "us-central1", "--range", "10.64.0.0/24",
         "--enable-private-ip-google-access"],
        ["gcloud", "compute", "routers", "create", "cybulde-train-router", "--project", "acme-ml",
         "--network", "cybulde-train-net", "--region", "us-central1"],
        ["gcloud", "compute", "routers", "nats", "create", "cybulde-train-nat", "--project", "acme-ml",
         "--router", "cybulde-train-router", "--region", "us-central1", "--auto-allocate-nat-external-ips",
         "--nat-all-subnet-ip-ranges"],
        ["gcloud", "compute", "firewall-rules", "create", "cybulde-train-internal", "--project", "acme-ml",
         "--network", "cybulde-train-net", "--direction", "INGRESS", "--allow", "tcp:29400,tcp:32768-60999",
         "--source-tags", "cybulde-train", "--target-tags", "cybulde-train"],
        ["gcloud", "iam", "service-accounts", "create", "cybulde-train-node", "--project", "acme-ml",
         "--display-name", "cybulde-train training nodes"],
        ["gcloud", "projects", "add-iam-policy-binding", "acme-ml", *member, "--role", "roles/logging.logWriter",
         "--condition", "None"],
        ["gcloud", "storage", "buckets", "add-iam-policy-binding", "gs://acme-data", *member,
         "--role", "roles/storage.objectViewer"],
        ["gcloud", "secrets", "add-iam-policy-binding", "cybulde-mlflow-pipeline", "--project", "acme-ml", *member,
         "--role", "roles/secretmanager.secretAccessor"],
        ["gcloud", "artifacts", "repositories", "add-iam-policy-binding", "cybulde", "--project", "acme-ml",
         "--location", "us", *member, "--role", "roles/artifactregistry.reader"],
        ["gcloud", "compute", "instance-templates", "create", "cybulde-train-template", "--project", "acme-ml",
         "--machine-type", "g2-standard-8", "--accelerator", "type=nvidia-l4,count=1",
         "--maintenance-policy", "TERMINATE", "--image-family", "common-cu128-ubuntu-2204-nvidia-570",
         "--image-project", "deeplearning-platform-release", "--boot-disk-size", "200GB",
         "--service-account", ACCOUNT, "--scopes", "cloud-platform",
         "--metadata", "install-nvidia-driver=True",
         "--metadata-from-file", f"startup-script={script.resolve()}", "--network", "cybulde-train-net",
         "--subnet", "cybulde-train-subnet", "--region", "us-central1", "--no-address", "--tags", "cybulde-train"],
        ["gcloud", "compute", "instance-groups", "managed", "create", "cybulde-train", "--project", "acme-ml",
         "--zone", "us-central1-a", "--template", "cybulde-train-template", "--size", "0"],
        *[["gcloud", "compute", "instance-groups", "managed", "create-instance", "cybulde-train",
           "--project", "acme-ml", "--zone", "us-central1-a", "--instance", f"cybulde-train-{i}"]
          for i in range(3)],
    ]
    assert script.is_file()


def test_the_nodes_run_as_their_own_account_with_only_the_roles_they_need(tmp_path: Path, capsys) -> None:
    lines = _dry_run_up(tmp_path, capsys, "--artifact-bucket", "gs://acme-artifacts")
    printed = "\n".join(shlex.join(line) for line in lines)
    assert "-compute@developer.gserviceaccount.com" not in printed  # never the default account
    template, = _commands(lines, "gcloud", "compute", "instance-templates", "create")
    assert _option(template, "--service-account") == ACCOUNT
    # The scope is only a ceiling (Secret Manager has no narrower one); the account's roles limit it.
    assert _option(template, "--scopes") == "cloud-platform"
    grants = {(line[1], _option(line, "add-iam-policy-binding"), _option(line, "--role"))
              for line in lines if "add-iam-policy-binding" in line}
    assert all(_option(line, "--member") == f"serviceAccount:{ACCOUNT}"
               for line in lines if "add-iam-policy-binding" in line)
    assert grants == {
        ("projects", "acme-ml", "roles/logging.logWriter"),
        ("storage", "gs://acme-data", "roles/storage.objectViewer"),
        ("storage", "gs://acme-artifacts", "roles/storage.objectCreator"),
        ("secrets", "cybulde-mlflow-pipeline", "roles/secretmanager.secretAccessor"),
        ("artifacts", "cybulde", "roles/artifactregistry.reader"),
    }


def test_a_taken_service_account_gets_the_roles_and_is_not_created(tmp_path: Path, capsys) -> None:
    taken = "trainer@acme-ml.iam.gserviceaccount.com"
    lines = _dry_run_up(tmp_path, capsys, "--service-account", taken)
    assert not _commands(lines, "gcloud", "iam", "service-accounts", "create")
    template, = _commands(lines, "gcloud", "compute", "instance-templates", "create")
    assert _option(template, "--service-account") == taken
    assert {_option(line, "--member") for line in lines if "add-iam-policy-binding" in line} == \
        {f"serviceAccount:{taken}"}


def test_the_firewall_opens_only_the_cluster_ports_between_the_clusters_vms(tmp_path: Path, capsys) -> None:
    lines = _dry_run_up(tmp_path, capsys, "--rdzv-port", "29500")
    rule, = _commands(lines, "gcloud", "compute", "firewall-rules")
    assert _option(rule, "--allow") == "tcp:29500,tcp:32768-60999"
    assert _option(rule, "--source-tags") == _option(rule, "--target-tags") == "cybulde-train"
    assert "--source-ranges" not in rule
    assert "0.0.0.0/0" not in "\n".join(shlex.join(line) for line in lines)
    template, = _commands(lines, "gcloud", "compute", "instance-templates", "create")
    assert _option(template, "--tags") == "cybulde-train"
    # the ephemeral range the rule opens is the one every node pins
    assert 'sysctl -qw "net.ipv4.ip_local_port_range=32768 60999"' in startup_script(_spec())


def test_the_vms_have_no_external_address_and_reach_google_and_git_through_the_subnet(tmp_path: Path,
                                                                                     capsys) -> None:
    lines = _dry_run_up(tmp_path, capsys)
    template, = _commands(lines, "gcloud", "compute", "instance-templates", "create")
    assert "--no-address" in template and "--address" not in template
    subnet, = _commands(lines, "gcloud", "compute", "networks", "subnets", "create")
    assert "--enable-private-ip-google-access" in subnet  # GCS, Artifact Registry, Secret Manager, Logging
    assert _commands(lines, "gcloud", "compute", "routers", "nats", "create")  # outbound only: git, driver


def test_a_taken_network_is_used_as_is(tmp_path: Path, capsys) -> None:
    lines = _dry_run_up(tmp_path, capsys, "--network", "ml-net", "--subnet", "ml-train")
    assert not _commands(lines, "gcloud", "compute", "networks")
    assert not _commands(lines, "gcloud", "compute", "routers")
    rule, = _commands(lines, "gcloud", "compute", "firewall-rules")
    template, = _commands(lines, "gcloud", "compute", "instance-templates", "create")
    assert _option(rule, "--network") == _option(template, "--network") == "ml-net"
    assert _option(template, "--subnet") == "ml-train"
    assert "--no-address" in template


def test_dry_run_down_deletes_what_up_made(capsys) -> None:
    assert run_gcp(_parse(["down", "--project", "acme-ml", "--zone", "us-central1-a", "--dry-run"])) == 0
    assert capsys.readouterr().out.splitlines() == [
        "gcloud compute instance-groups managed delete cybulde-train --project acme-ml --zone us-central1-a --quiet",
        "gcloud compute instance-templates delete cybulde-train-template --project acme-ml --quiet",
        "gcloud compute firewall-rules delete cybulde-train-internal --project acme-ml --quiet",
        f"gcloud iam service-accounts delete {ACCOUNT} --project acme-ml --quiet",
        "gcloud compute routers nats delete cybulde-train-nat --project acme-ml --router cybulde-train-router "
        "--region us-central1 --quiet",
        "gcloud compute routers delete cybulde-train-router --project acme-ml --region us-central1 --quiet",
        "gcloud compute networks subnets delete cybulde-train-subnet --project acme-ml --region us-central1 --quiet",
        "gcloud compute networks delete cybulde-train-net --project acme-ml --quiet",
    ]
    assert down_commands("p", "z", "x")[1][4] == "x-template"


def test_down_leaves_a_taken_network_and_account_alone() -> None:
    commands = down_commands("p", "us-central1-a", "x", network="ml-net",
                             service_account="trainer@p.iam.gserviceaccount.com")
    assert [command[1:3] for command in commands] == [["compute", "instance-groups"],
                                                      ["compute", "instance-templates"],
                                                      ["compute", "firewall-rules"]]


def test_startup_script_runs_one_node_of_the_job() -> None:
    script = startup_script(_spec(nodes=4, accelerator="type=nvidia-l4,count=2",
                                  overrides=("data.registry=gs://acme-data/registry", "train.epochs=5")))
    assert f"git -C \"$workdir\" checkout --quiet --force {COMMIT}" in script
    assert "getent hosts cybulde-train-0" in script
    assert 'RDZV_ENDPOINT="$RDZV_ADDR:29400"' in script
    assert "gcloud auth configure-docker us-docker.pkg.dev --quiet" in script
    assert f"docker pull {IMAGE}" in script
    assert "docker run --rm --gpus all --network host" in script
    assert "-e MLFLOW_TRACKING_URI=https://mlflow.internal" in script
    node = "--nnodes 4 --nproc-per-node 2 --node-addr \"$NODE_ADDR\" --rdzv-endpoint \"$RDZV_ENDPOINT\" --run-id r0123"
    assert node in script
    assert "-- launch.accelerator=gpu data.registry=gs://acme-data/registry train.epochs=5" in script
    assert ("python stages/fetch.py data.registry=gs://acme-data/registry train.epochs=5 && "
            "bash infra/multinode/launch-node.sh") in script


def _fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_mlflow_password_reaches_the_container_environment_only(tmp_path: Path) -> None:
    """The real startup script, with gcloud, docker and the VM's tools faked: the password read from
    Secret Manager is in docker's environment, in no command's arguments and nowhere in the output."""
    password = "s3cr3t P@ss:w/rd%41 -x"
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    record = f'printf "%s\\n" "$(basename "$0") $*" >> {calls}'
    for name in ("git", "chown", "sysctl", "docker-login"):
        _fake(bin_dir, name, record)
    _fake(bin_dir, "curl", f"{record}\necho 10.64.0.2")
    _fake(bin_dir, "getent", f"{record}\necho '10.64.0.2 cybulde-train-0'")
    _fake(bin_dir, "gcloud", f'{record}\n[[ "$1 $2 $3" == "secrets versions access" ]] && printf %s {shlex.quote(password)}\ntrue')
    _fake(bin_dir, "docker", f'{record}\n[[ "$1" == run ]] && printf "%s\\n" "$MLFLOW_TRACKING_USERNAME" '
                             f'"$MLFLOW_TRACKING_PASSWORD" > {tmp_path / "container-env.txt"}\ntrue')
    script = tmp_path / "startup.sh"
    script.write_text(startup_script(_spec()).replace("workdir=/var/lib/cybulde/project",
                                                      f"workdir={tmp_path / 'project'}"))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "container-env.txt").read_text().splitlines() == ["pipeline", password]
    recorded = calls.read_text()
    assert "gcloud secrets versions access latest --secret=cybulde-mlflow-pipeline --project=acme-ml" in recorded
    assert "-e MLFLOW_TRACKING_USERNAME -e MLFLOW_TRACKING_PASSWORD " in recorded
    for leak in (recorded, result.stdout, result.stderr, script.read_text()):
        assert "s3cr3t" not in leak


@pytest.mark.parametrize("change, message", [
    ({"accelerator": "nvidia-l4"}, "type=nvidia-l4,count=1"),
    ({"nodes": 0}, "--nodes must be at least 1"),
    ({"name": "Bad_Name"}, "--name"),
    ({"name": "cybulde\n"}, "--name"),
    ({"name": "a-very-long-cluster-name-x"}, "too long for the nodes' service account"),
    ({"revision": "main"}, "full 40-hex commit SHA"),
    ({"revision": "v1.2.0"}, "full 40-hex commit SHA"),
    ({"revision": COMMIT[:12]}, "full 40-hex commit SHA"),
    ({"revision": COMMIT.upper()}, "full 40-hex commit SHA"),
    ({"revision": COMMIT + "\n"}, "full 40-hex commit SHA"),
    ({"image": "us-docker.pkg.dev/acme-ml/cybulde/cybulde:cuda"}, "pinned by digest"),
    ({"image": f"us-docker.pkg.dev/acme-ml/cybulde/cybulde:cuda@{DIGEST}"}, "pinned by digest"),
    ({"image": "us-docker.pkg.dev/acme-ml/cybulde/cybulde@sha256:abc"}, "pinned by digest"),
    ({"tracking_uri": "https://user:secret@mlflow.example.com"}, "no credentials"),
    ({"tracking_uri": "https://mlflow.example.com/?password=secret"}, "no credentials"),
    ({"tracking_uri": "http://mlflow.internal:5000"}, "must be https://"),
    ({"mlflow_secret": "projects/x/secrets/y"}, "--mlflow-secret"),
    ({"mlflow_user": "pipe line"}, "--mlflow-user"),
    ({"mlflow_user": "pipeline\n"}, "--mlflow-user"),
    ({"service_account": "123456789-compute@developer.gserviceaccount.com"}, "dedicated service account"),
    ({"network": "default", "subnet": "default"}, "--network default is shared"),
    ({"network": "ml-net"}, "--network and --subnet go together"),
    ({"overrides": ()}, "data.registry=gs://"),
    ({"overrides": ("data.registry=registry",)}, "data.registry=gs://"),
    ({"artifact_bucket": "s3://elsewhere"}, "gs://BUCKET"),
])
def test_invalid_specs_are_refused(change: dict, message: str) -> None:
    with pytest.raises(GcpError, match=message):
        validate(_spec(**change))


def test_a_valid_spec_passes() -> None:
    validate(_spec(service_account="trainer@acme-ml.iam.gserviceaccount.com", artifact_bucket="gs://acme-art",
                   network="ml-net", subnet="ml-train"))


def test_cli_reports_invalid_accelerator_without_writing(tmp_path: Path, capsys) -> None:
    from cybulde.cli import main

    argv = [*UP_ARGS, "--accelerator", "l4", "--dry-run", "--workdir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:  # a usage error: usage line, message, status 2
        main(["gcp", *argv])
    assert exit_info.value.code == 2
    assert "type=nvidia-l4,count=1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_branch_name_as_revision(tmp_path: Path, capsys) -> None:
    from cybulde.cli import main

    argv = [*UP_ARGS, "--revision", "main", "--dry-run", "--workdir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["gcp", *argv])
    assert exit_info.value.code == 2
    assert "--revision 'main' must be a full 40-hex commit SHA" in capsys.readouterr().err
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
    commands = up_commands(spec, tmp_path / "startup.sh")
    execute(commands, dry_run=False)
    calls = record.read_text().splitlines()
    assert calls == [" ".join(command[1:]) for command in commands]
    assert calls[0].startswith("compute networks create cybulde-train-net")
    assert calls[-1].endswith("--instance cybulde-train-1")


def test_a_failing_command_stops_the_sequence(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "gcloud"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(GcpError, match="status 3"):
        execute(down_commands("p", "z", "n"), dry_run=False)


def test_startup_script_is_valid_bash(tmp_path: Path) -> None:
    path = tmp_path / "startup.sh"
    path.write_text(startup_script(_spec(overrides=("data.registry=gs://acme-data/registry", "model.head=sigmoid"))))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
