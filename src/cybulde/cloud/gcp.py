"""`cybulde gcp up|down`: the multi-node training cluster on Google Compute Engine.

`up` creates a firewall rule letting the nodes reach each other, an instance template of GPU VMs (a Deep Learning VM image with the NVIDIA driver and
Docker) and a managed instance group with N named instances `<name>-0 .. <name>-(N-1)`. Each VM's
startup script checks out the project at a fixed revision, fetches the data version params.yaml
names, and runs one node of the `train` stage in the training image through
infra/multinode/launch-node.sh; `<name>-0` hosts the c10d rendezvous, and every node logs into the
one MLflow run given by --run-id. `down` deletes the group, the template and the rule.

The commands are gcloud invocations built as argv lists: `--dry-run` prints them (and writes the
startup script they reference) without running anything.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cybulde.errors import CybuldeError, UsageError

DEFAULT_MACHINE_TYPE = "g2-standard-8"
DEFAULT_ACCELERATOR = "type=nvidia-l4,count=1"
DEFAULT_VM_IMAGE_FAMILY = "common-cu128-ubuntu-2204-nvidia-570"
DEFAULT_VM_IMAGE_PROJECT = "deeplearning-platform-release"
DEFAULT_RDZV_PORT = 29400
DEFAULT_WORKDIR = ".cybulde/gcp"
CONTAINER_UID = 10001  # the training image's non-root user
ACCELERATOR_PATTERN = re.compile(r"^type=(?P<type>[a-z0-9-]+),count=(?P<count>[1-9][0-9]*)$")
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$")


class GcpError(CybuldeError, RuntimeError):
    """The cluster cannot be described or created as asked."""


class GcpOptionError(GcpError, UsageError):
    """An option of `cybulde gcp` is malformed or out of range (a usage error: exit 2)."""


class GcloudNotFound(GcpError):
    """The gcloud CLI is not installed."""


@dataclass(frozen=True)
class ClusterSpec:
    project: str
    zone: str
    image: str
    nodes: int
    repo: str
    revision: str
    tracking_uri: str
    run_id: str
    name: str = "cybulde-train"
    machine_type: str = DEFAULT_MACHINE_TYPE
    accelerator: str = DEFAULT_ACCELERATOR
    vm_image_family: str = DEFAULT_VM_IMAGE_FAMILY
    vm_image_project: str = DEFAULT_VM_IMAGE_PROJECT
    boot_disk_gb: int = 200
    rdzv_port: int = DEFAULT_RDZV_PORT
    network: str = "default"
    overrides: tuple[str, ...] = ()

    @property
    def template_name(self) -> str:
        return f"{self.name}-template"

    @property
    def firewall_rule_name(self) -> str:
        return f"{self.name}-internal"

    @property
    def gpus_per_node(self) -> int:
        return int(_parse_accelerator(self.accelerator)["count"])

    def instance_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.nodes)]

    @property
    def rendezvous_host(self) -> str:
        return self.instance_names()[0]


def _parse_accelerator(accelerator: str) -> dict[str, str]:
    match = ACCELERATOR_PATTERN.match(accelerator)
    if match is None:
        raise GcpOptionError(f"--accelerator {accelerator!r} must look like type=nvidia-l4,count=1")
    return match.groupdict()


def validate(spec: ClusterSpec) -> None:
    if not NAME_PATTERN.match(spec.name):
        raise GcpOptionError(f"--name {spec.name!r} must be lowercase letters, digits and dashes, "
                       "starting with a letter (at most 42 characters)")
    if spec.nodes < 1:
        raise GcpOptionError(f"--nodes must be at least 1 (got {spec.nodes})")
    _parse_accelerator(spec.accelerator)
    if "@" in spec.tracking_uri.split("://", 1)[-1].split("/", 1)[0]:
        raise GcpOptionError("--tracking-uri must not carry credentials; give the VMs' service account access "
                       "to the server instead")


def startup_script(spec: ClusterSpec) -> str:
    """What every VM runs at boot: one node of the training job in the training image."""
    overrides = " ".join(shlex.quote(item) for item in spec.overrides)
    registry = spec.image.split("/", 1)[0]
    docker_login = (f"gcloud auth configure-docker {shlex.quote(registry)} --quiet\n"
                    if registry.endswith("-docker.pkg.dev") or registry.endswith("gcr.io") else "")
    node_command = (
        "python stages/fetch.py && bash infra/multinode/launch-node.sh"
        f" --nnodes {spec.nodes} --nproc-per-node {spec.gpus_per_node}"
        ' --node-addr "$NODE_ADDR" --rdzv-endpoint "$RDZV_ENDPOINT"'
        f" --run-id {shlex.quote(spec.run_id)}"
        f" -- launch.accelerator=gpu {overrides}"
    ).rstrip()
    return f"""#!/bin/bash
# One node of `{spec.name}`: checkout {spec.revision}, fetch the data, train under torchrun.
set -euo pipefail
workdir=/var/lib/cybulde/project
if [[ ! -d "$workdir/.git" ]]; then
  git clone --quiet {shlex.quote(spec.repo)} "$workdir"
fi
git -C "$workdir" fetch --quiet origin
git -C "$workdir" checkout --quiet --force {shlex.quote(spec.revision)}
chown -R {CONTAINER_UID}:{CONTAINER_UID} "$workdir"
metadata=http://metadata.google.internal/computeMetadata/v1/instance
NODE_ADDR="$(curl -fsS -H Metadata-Flavor:Google "$metadata/network-interfaces/0/ip")"
until RDZV_ADDR="$(getent hosts {spec.rendezvous_host} | awk '{{print $1}}')" && [[ -n "$RDZV_ADDR" ]]; do
  sleep 5
done
RDZV_ENDPOINT="$RDZV_ADDR:{spec.rdzv_port}"
{docker_login}docker pull {shlex.quote(spec.image)}
docker run --rm --gpus all --network host --ipc host \\
  -v "$workdir:/workspace" \\
  -e MLFLOW_TRACKING_URI={shlex.quote(spec.tracking_uri)} \\
  -e NODE_ADDR="$NODE_ADDR" -e RDZV_ENDPOINT="$RDZV_ENDPOINT" \\
  {shlex.quote(spec.image)} \\
  bash -c {shlex.quote(node_command)}
"""


def up_commands(spec: ClusterSpec, startup_script_path: Path) -> list[list[str]]:
    """gcloud argv lists: a firewall rule opening the nodes to each other (rendezvous and the
    collectives' ports), the instance template, an empty group, then one named instance per node."""
    common = ["--project", spec.project]
    firewall = ["gcloud", "compute", "firewall-rules", "create", spec.firewall_rule_name, *common,
                "--network", spec.network, "--direction", "INGRESS", "--allow", "tcp,udp",
                "--source-tags", spec.name, "--target-tags", spec.name]
    template = [
        "gcloud", "compute", "instance-templates", "create", spec.template_name, *common,
        "--machine-type", spec.machine_type,
        "--accelerator", spec.accelerator,
        "--maintenance-policy", "TERMINATE",
        "--image-family", spec.vm_image_family,
        "--image-project", spec.vm_image_project,
        "--boot-disk-size", f"{spec.boot_disk_gb}GB",
        "--scopes", "cloud-platform",
        "--metadata", "install-nvidia-driver=True",
        "--metadata-from-file", f"startup-script={startup_script_path}",
        "--network", spec.network,
        "--tags", spec.name,
    ]
    group = ["gcloud", "compute", "instance-groups", "managed", "create", spec.name, *common,
             "--zone", spec.zone, "--template", spec.template_name, "--size", "0"]
    instances = [["gcloud", "compute", "instance-groups", "managed", "create-instance", spec.name, *common,
                  "--zone", spec.zone, "--instance", instance] for instance in spec.instance_names()]
    return [firewall, template, group, *instances]


def down_commands(project: str, zone: str, name: str) -> list[list[str]]:
    """The reverse of `up_commands`: the group (and with it its VMs), the template, the firewall rule."""
    return [
        ["gcloud", "compute", "instance-groups", "managed", "delete", name, "--project", project,
         "--zone", zone, "--quiet"],
        ["gcloud", "compute", "instance-templates", "delete", f"{name}-template", "--project", project,
         "--quiet"],
        ["gcloud", "compute", "firewall-rules", "delete", f"{name}-internal", "--project", project, "--quiet"],
    ]


def write_startup_script(spec: ClusterSpec, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{spec.name}-startup.sh"
    path.write_text(startup_script(spec), encoding="utf-8")
    return path.resolve()


def execute(commands: Sequence[Sequence[str]], dry_run: bool, out: TextIO | None = None) -> None:
    """Print the commands (dry run) or run them in order, stopping at the first failure."""
    out = out or sys.stdout
    if dry_run:
        for command in commands:
            print(shlex.join(command), file=out)
        return
    if shutil.which("gcloud") is None:
        raise GcloudNotFound("gcloud is not on PATH: install the Google Cloud CLI "
                             "(https://cloud.google.com/sdk/docs/install) or use --dry-run")
    for command in commands:
        print(f"+ {shlex.join(command)}", file=out, flush=True)
        result = subprocess.run(list(command))
        if result.returncode != 0:
            raise GcpError(f"`{shlex.join(command[:5])} ...` failed with status {result.returncode}")


# -- command line ------------------------------------------------------------------------------------
def add_gcp_arguments(parser: argparse.ArgumentParser) -> None:
    """`up` and `down` subcommands on `parser` (the `cybulde gcp` parser)."""
    actions = parser.add_subparsers(dest="gcp_action", required=True)
    up = actions.add_parser("up", help="create the training cluster (instance template + managed group)")
    down = actions.add_parser("down", help="delete the training cluster")
    for sub in (up, down):
        sub.add_argument("--project", required=True, help="GCP project id")
        sub.add_argument("--zone", required=True, help="zone of the VMs, e.g. us-central1-a")
        sub.add_argument("--name", default="cybulde-train", help="name of the group (default: %(default)s)")
        sub.add_argument("--dry-run", action="store_true", help="print the gcloud commands, run nothing")
    up.add_argument("--image", required=True,
                    help="training image, e.g. us-docker.pkg.dev/PROJECT/cybulde/cybulde:cuda")
    up.add_argument("--nodes", type=int, required=True, help="number of VMs (training nodes)")
    up.add_argument("--machine-type", default=DEFAULT_MACHINE_TYPE, help="(default: %(default)s)")
    up.add_argument("--accelerator", default=DEFAULT_ACCELERATOR,
                    help="GPUs per VM, type=TYPE,count=N (default: %(default)s); count = ranks per node")
    up.add_argument("--repo", required=True, help="git URL the VMs clone the project from")
    up.add_argument("--revision", required=True, help="commit (or tag) to train")
    up.add_argument("--tracking-uri", required=True, help="MLflow server every node reaches (no credentials)")
    up.add_argument("--run-id", required=True,
                    help="MLflow run all nodes log into (infra/multinode/launch-node.sh --create-run)")
    up.add_argument("--vm-image-family", default=DEFAULT_VM_IMAGE_FAMILY, help="(default: %(default)s)")
    up.add_argument("--vm-image-project", default=DEFAULT_VM_IMAGE_PROJECT, help="(default: %(default)s)")
    up.add_argument("--boot-disk-gb", type=int, default=200, help="(default: %(default)s)")
    up.add_argument("--rdzv-port", type=int, default=DEFAULT_RDZV_PORT, help="(default: %(default)s)")
    up.add_argument("--network", default="default", help="VPC network of the VMs (default: %(default)s)")
    up.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR),
                    help="where the startup script is written (default: %(default)s)")
    up.add_argument("overrides", nargs="*", metavar="key=value", help="params overrides for the train stage")


def spec_from_args(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(
        project=args.project, zone=args.zone, image=args.image, nodes=args.nodes, repo=args.repo,
        revision=args.revision, tracking_uri=args.tracking_uri, run_id=args.run_id, name=args.name,
        machine_type=args.machine_type, accelerator=args.accelerator, vm_image_family=args.vm_image_family,
        vm_image_project=args.vm_image_project, boot_disk_gb=args.boot_disk_gb, rdzv_port=args.rdzv_port,
        network=args.network, overrides=tuple(args.overrides),
    )


def run_gcp(args: argparse.Namespace) -> int:
    """The `cybulde gcp` command (errors are reported by `cybulde.cli`)."""
    if args.gcp_action == "up":
        spec = spec_from_args(args)
        validate(spec)
        commands = up_commands(spec, write_startup_script(spec, args.workdir))
    else:
        commands = down_commands(args.project, args.zone, args.name)
    execute(commands, args.dry_run)
    return 0
