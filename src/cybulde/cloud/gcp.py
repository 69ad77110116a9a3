"""`cybulde gcp up|down`: the multi-node training cluster on Google Compute Engine.

`up` makes a network of the cluster's own (a VPC with one subnet, Private Google Access and Cloud
NAT: the VMs get no external address), a firewall rule opening only the rendezvous and collective
ports between the cluster's VMs, a service account of the nodes' own with only the roles they need,
an instance template of GPU VMs (a Deep Learning VM image with the NVIDIA driver and Docker) and a
managed instance group with N named instances `<name>-0 .. <name>-(N-1)`. Each VM's startup script
checks out the project at a fixed commit, fetches the data version params.yaml (and the overrides)
name, and runs one node of the `train` stage in the training image, pinned by digest, through
infra/multinode/launch-node.sh; `<name>-0` hosts the c10d rendezvous, and every node logs into the
one MLflow run given by --run-id with the password it reads from Secret Manager. `down` deletes
what `up` made.

torchrun's rendezvous and the collectives (gloo, NCCL) authenticate nothing, and Lightning's DDP
checkpoint broadcast unpickles what it receives: whoever reaches those ports can run code on the
nodes. Hence the network of its own, the tag-scoped rule and no external addresses.

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
DEFAULT_SUBNET_RANGE = "10.64.0.0/24"
DEFAULT_WORKDIR = ".cybulde/gcp"
CONTAINER_UID = 10001  # the training image's non-root user
# Gloo, NCCL and the workers' TCPStore listen on ports the kernel picks from this range: the startup
# script pins it, so the firewall rule opens exactly these (Linux's default range) and the rendezvous port.
EPHEMERAL_PORTS = (32768, 60999)
# Secret Manager accepts no narrower OAuth scope; the service account's roles are what limits the VMs.
NODE_SCOPES = "cloud-platform"
NODE_ROLES_ON_PROJECT = ("roles/logging.logWriter",)
REGISTRY_BUCKET_ROLE = "roles/storage.objectViewer"
ARTIFACT_BUCKET_ROLE = "roles/storage.objectCreator"  # creates objects; cannot read, overwrite or delete
SECRET_ROLE = "roles/secretmanager.secretAccessor"
IMAGE_REPOSITORY_ROLE = "roles/artifactregistry.reader"
ACCELERATOR_PATTERN = re.compile(r"^type=(?P<type>[a-z0-9-]+),count=(?P<count>[1-9][0-9]*)$")
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$")
SERVICE_ACCOUNT_ID_MAX = 30
COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")
IMAGE_DIGEST_PATTERN = re.compile(r"^(?P<registry>[a-z0-9.-]+(:[0-9]+)?)/(?P<path>[a-z0-9._/-]+)@sha256:[0-9a-f]{64}$")
ARTIFACT_REGISTRY_PATTERN = re.compile(
    r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[a-z0-9-]+)/(?P<repository>[a-z0-9._-]+)/")
BUCKET_PATTERN = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(/.*)?$")
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
SERVICE_ACCOUNT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.:-]+\.iam\.gserviceaccount\.com$")
REGISTRY_OVERRIDE = "data.registry="


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
    mlflow_user: str
    mlflow_secret: str
    name: str = "cybulde-train"
    machine_type: str = DEFAULT_MACHINE_TYPE
    accelerator: str = DEFAULT_ACCELERATOR
    vm_image_family: str = DEFAULT_VM_IMAGE_FAMILY
    vm_image_project: str = DEFAULT_VM_IMAGE_PROJECT
    boot_disk_gb: int = 200
    rdzv_port: int = DEFAULT_RDZV_PORT
    network: str = ""  # empty: `up` makes `<name>-net` with its subnet, router and NAT
    subnet: str = ""
    subnet_range: str = DEFAULT_SUBNET_RANGE
    service_account: str = ""  # empty: `up` makes `<name>-node@PROJECT.iam.gserviceaccount.com`
    artifact_bucket: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def template_name(self) -> str:
        return f"{self.name}-template"

    @property
    def firewall_rule_name(self) -> str:
        return f"{self.name}-internal"

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]

    @property
    def gpus_per_node(self) -> int:
        return int(_parse_accelerator(self.accelerator)["count"])

    @property
    def cluster_network(self) -> ClusterNetwork:
        return ClusterNetwork.of(self.name, self.network, self.subnet)

    @property
    def node_account(self) -> NodeAccount:
        return NodeAccount.of(self.name, self.project, self.service_account)

    @property
    def registry(self) -> str:
        """The `data.registry` override the nodes fetch from ("" if none)."""
        values = [item[len(REGISTRY_OVERRIDE):] for item in self.overrides if item.startswith(REGISTRY_OVERRIDE)]
        return values[-1] if values else ""

    def instance_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.nodes)]

    @property
    def rendezvous_host(self) -> str:
        return self.instance_names()[0]


@dataclass(frozen=True)
class ClusterNetwork:
    """The VPC and subnet of the VMs; `created` when `up` makes them (and `down` deletes them)."""

    network: str
    subnet: str
    created: bool
    router: str
    nat: str

    @classmethod
    def of(cls, name: str, network: str, subnet: str) -> ClusterNetwork:
        if network:
            return cls(network, subnet, created=False, router="", nat="")
        return cls(f"{name}-net", f"{name}-subnet", created=True, router=f"{name}-router", nat=f"{name}-nat")


@dataclass(frozen=True)
class NodeAccount:
    """The nodes' service account; `created` when `up` makes it (and `down` deletes it)."""

    email: str
    account_id: str
    created: bool

    @classmethod
    def of(cls, name: str, project: str, service_account: str) -> NodeAccount:
        if service_account:
            return cls(service_account, service_account.split("@", 1)[0], created=False)
        account_id = f"{name}-node"
        return cls(f"{account_id}@{project}.iam.gserviceaccount.com", account_id, created=True)

    @property
    def member(self) -> str:
        return f"serviceAccount:{self.email}"


def _parse_accelerator(accelerator: str) -> dict[str, str]:
    match = ACCELERATOR_PATTERN.fullmatch(accelerator)
    if match is None:
        raise GcpOptionError(f"--accelerator {accelerator!r} must look like type=nvidia-l4,count=1")
    return match.groupdict()


def bucket_of(url: str) -> str:
    match = BUCKET_PATTERN.fullmatch(url)
    if match is None:
        raise GcpOptionError(f"{url!r} is not a gs://BUCKET[/PATH] URL")
    return match["bucket"]


def validate(spec: ClusterSpec) -> None:
    if not NAME_PATTERN.fullmatch(spec.name):
        raise GcpOptionError(f"--name {spec.name!r} must be lowercase letters, digits and dashes, "
                       "starting with a letter (at most 42 characters)")
    if spec.nodes < 1:
        raise GcpOptionError(f"--nodes must be at least 1 (got {spec.nodes})")
    _parse_accelerator(spec.accelerator)
    _validate_pins(spec)
    _validate_tracking_login(spec)
    _validate_node_grants(spec)
    _validate_network(spec)


def _validate_pins(spec: ClusterSpec) -> None:
    """The nodes run exactly one commit in exactly one image: names that can move are refused."""
    if not COMMIT_PATTERN.fullmatch(spec.revision):
        raise GcpOptionError(f"--revision {spec.revision!r} must be a full 40-hex commit SHA "
                             "(git rev-parse HEAD), not a branch, a tag or a short SHA")
    if not IMAGE_DIGEST_PATTERN.fullmatch(spec.image):
        raise GcpOptionError(f"--image {spec.image!r} must be pinned by digest, REGISTRY/PATH@sha256:<64 hex> "
                             "(docker inspect --format '{{index .RepoDigests 0}}' IMAGE), not a tag")


def _validate_tracking_login(spec: ClusterSpec) -> None:
    authority = spec.tracking_uri.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority or "?" in spec.tracking_uri:
        raise GcpOptionError("--tracking-uri must carry no credentials or query; the nodes read the password "
                             "from Secret Manager (--mlflow-secret)")
    if not spec.tracking_uri.startswith("https://"):
        raise GcpOptionError(f"--tracking-uri {spec.tracking_uri!r} must be https://: the nodes send it a password")
    if not USER_NAME_PATTERN.fullmatch(spec.mlflow_user):
        raise GcpOptionError(f"--mlflow-user {spec.mlflow_user!r} must be letters, digits and ._@+- only")
    if not SECRET_NAME_PATTERN.fullmatch(spec.mlflow_secret):
        raise GcpOptionError(f"--mlflow-secret {spec.mlflow_secret!r} must be a Secret Manager secret name "
                             "(letters, digits, _ and -)")


def _validate_node_grants(spec: ClusterSpec) -> None:
    if spec.service_account:
        if not SERVICE_ACCOUNT_PATTERN.fullmatch(spec.service_account):
            raise GcpOptionError(f"--service-account {spec.service_account!r} must be a dedicated service account "
                                 "(NAME@PROJECT.iam.gserviceaccount.com), not a default one")
    elif len(spec.node_account.account_id) > SERVICE_ACCOUNT_ID_MAX:
        raise GcpOptionError(f"--name {spec.name!r} is too long for the nodes' service account id "
                             f"{spec.node_account.account_id!r} (at most {SERVICE_ACCOUNT_ID_MAX} characters): "
                             "shorten it or pass --service-account")
    if not spec.registry.startswith("gs://"):
        raise GcpOptionError("pass data.registry=gs://BUCKET/PATH among the overrides: the nodes fetch the data "
                             "from it and get read access to that bucket only")
    bucket_of(spec.registry)
    if spec.artifact_bucket:
        bucket_of(spec.artifact_bucket)


def _validate_network(spec: ClusterSpec) -> None:
    if spec.network == "default":
        raise GcpOptionError("--network default is shared with every VM of the project (and its stock rules "
                             "open all ports within it): leave --network out for a network of the cluster's own")
    if bool(spec.network) != bool(spec.subnet):
        raise GcpOptionError("--network and --subnet go together (an existing network of the cluster's own, "
                             "with Private Google Access and Cloud NAT); leave both out to make one")


def startup_script(spec: ClusterSpec) -> str:
    """What every VM runs at boot: one node of the training job in the training image."""
    overrides = " ".join(shlex.quote(item) for item in spec.overrides)
    registry = spec.image.split("/", 1)[0]
    docker_login = (f"gcloud auth configure-docker {shlex.quote(registry)} --quiet\n"
                    if registry.endswith("-docker.pkg.dev") or registry.endswith("gcr.io") else "")
    node_command = (
        f"python stages/fetch.py {overrides} && bash infra/multinode/launch-node.sh"
        f" --nnodes {spec.nodes} --nproc-per-node {spec.gpus_per_node}"
        ' --node-addr "$NODE_ADDR" --rdzv-endpoint "$RDZV_ENDPOINT"'
        f" --run-id {shlex.quote(spec.run_id)}"
        f" -- launch.accelerator=gpu {overrides}"
    ).rstrip()
    low, high = EPHEMERAL_PORTS
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
# The firewall rule opens these ports for gloo, NCCL and the workers' store (host network).
sysctl -qw "net.ipv4.ip_local_port_range={low} {high}"
metadata=http://metadata.google.internal/computeMetadata/v1/instance
NODE_ADDR="$(curl -fsS -H Metadata-Flavor:Google "$metadata/network-interfaces/0/ip")"
until RDZV_ADDR="$(getent hosts {spec.rendezvous_host} | awk '{{print $1}}')" && [[ -n "$RDZV_ADDR" ]]; do
  sleep 5
done
RDZV_ENDPOINT="$RDZV_ADDR:{spec.rdzv_port}"
# The tracking password, read with the VM's own token: it reaches the container's environment only
# (docker gets the variable's name), never an argument, this log or the instance metadata.
MLFLOW_TRACKING_PASSWORD="$(gcloud secrets versions access latest --secret={shlex.quote(spec.mlflow_secret)} \\
  --project={shlex.quote(spec.project)})"
export MLFLOW_TRACKING_USERNAME={shlex.quote(spec.mlflow_user)} MLFLOW_TRACKING_PASSWORD
{docker_login}docker pull {shlex.quote(spec.image)}
docker run --rm --gpus all --network host --ipc host \\
  -v "$workdir:/workspace" \\
  -e MLFLOW_TRACKING_URI={shlex.quote(spec.tracking_uri)} \\
  -e MLFLOW_TRACKING_USERNAME -e MLFLOW_TRACKING_PASSWORD \\
  -e NODE_ADDR="$NODE_ADDR" -e RDZV_ENDPOINT="$RDZV_ENDPOINT" \\
  {shlex.quote(spec.image)} \\
  bash -c {shlex.quote(node_command)}
"""


def network_commands(spec: ClusterSpec) -> list[list[str]]:
    """A VPC of the cluster's own: one subnet with Private Google Access (GCS, Artifact Registry,
    Secret Manager and Logging without an external address) and Cloud NAT (outbound only: the git
    clone and the driver install). Nothing when an existing network is taken."""
    net = spec.cluster_network
    if not net.created:
        return []
    common = ["--project", spec.project]
    return [
        ["gcloud", "compute", "networks", "create", net.network, *common, "--subnet-mode", "custom"],
        ["gcloud", "compute", "networks", "subnets", "create", net.subnet, *common, "--network", net.network,
         "--region", spec.region, "--range", spec.subnet_range, "--enable-private-ip-google-access"],
        ["gcloud", "compute", "routers", "create", net.router, *common, "--network", net.network,
         "--region", spec.region],
        ["gcloud", "compute", "routers", "nats", "create", net.nat, *common, "--router", net.router,
         "--region", spec.region, "--auto-allocate-nat-external-ips", "--nat-all-subnet-ip-ranges"],
    ]


def firewall_command(spec: ClusterSpec) -> list[str]:
    """Ingress from the cluster's VMs to the cluster's VMs (by network tag, no address range), on the
    rendezvous port and the ephemeral range the collectives use: nothing else, from nowhere else."""
    low, high = EPHEMERAL_PORTS
    return ["gcloud", "compute", "firewall-rules", "create", spec.firewall_rule_name, "--project", spec.project,
            "--network", spec.cluster_network.network, "--direction", "INGRESS",
            "--allow", f"tcp:{spec.rdzv_port},tcp:{low}-{high}",
            "--source-tags", spec.name, "--target-tags", spec.name]


def service_account_commands(spec: ClusterSpec) -> list[list[str]]:
    """The nodes' own service account (unless one is taken) and the only roles it gets: read the
    registry bucket, create objects in the artifact bucket (if any), write logs, read the one
    secret, pull from the image's Artifact Registry repository."""
    account = spec.node_account
    member = ["--member", account.member]
    commands = []
    if account.created:
        commands.append(["gcloud", "iam", "service-accounts", "create", account.account_id,
                         "--project", spec.project, "--display-name", f"{spec.name} training nodes"])
    commands += [["gcloud", "projects", "add-iam-policy-binding", spec.project, *member, "--role", role,
                  "--condition", "None"] for role in NODE_ROLES_ON_PROJECT]
    buckets = [(spec.registry, REGISTRY_BUCKET_ROLE)]
    if spec.artifact_bucket:
        buckets.append((spec.artifact_bucket, ARTIFACT_BUCKET_ROLE))
    commands += [["gcloud", "storage", "buckets", "add-iam-policy-binding", f"gs://{bucket_of(url)}", *member,
                  "--role", role] for url, role in buckets]
    commands.append(["gcloud", "secrets", "add-iam-policy-binding", spec.mlflow_secret, "--project", spec.project,
                     *member, "--role", SECRET_ROLE])
    repository = ARTIFACT_REGISTRY_PATTERN.match(spec.image)
    if repository is not None:
        commands.append(["gcloud", "artifacts", "repositories", "add-iam-policy-binding", repository["repository"],
                         "--project", repository["project"], "--location", repository["location"], *member,
                         "--role", IMAGE_REPOSITORY_ROLE])
    return commands


def template_command(spec: ClusterSpec, startup_script_path: Path) -> list[str]:
    return [
        "gcloud", "compute", "instance-templates", "create", spec.template_name, "--project", spec.project,
        "--machine-type", spec.machine_type,
        "--accelerator", spec.accelerator,
        "--maintenance-policy", "TERMINATE",
        "--image-family", spec.vm_image_family,
        "--image-project", spec.vm_image_project,
        "--boot-disk-size", f"{spec.boot_disk_gb}GB",
        "--service-account", spec.node_account.email,
        "--scopes", NODE_SCOPES,
        "--metadata", "install-nvidia-driver=True",
        "--metadata-from-file", f"startup-script={startup_script_path}",
        "--network", spec.cluster_network.network,
        "--subnet", spec.cluster_network.subnet,
        "--region", spec.region,
        "--no-address",
        "--tags", spec.name,
    ]


def up_commands(spec: ClusterSpec, startup_script_path: Path) -> list[list[str]]:
    """gcloud argv lists: the network, the firewall rule, the service account and its roles, the
    instance template, an empty group, then one named instance per node."""
    common = ["--project", spec.project]
    group = ["gcloud", "compute", "instance-groups", "managed", "create", spec.name, *common,
             "--zone", spec.zone, "--template", spec.template_name, "--size", "0"]
    instances = [["gcloud", "compute", "instance-groups", "managed", "create-instance", spec.name, *common,
                  "--zone", spec.zone, "--instance", instance] for instance in spec.instance_names()]
    return [*network_commands(spec), firewall_command(spec), *service_account_commands(spec),
            template_command(spec, startup_script_path), group, *instances]


def down_commands(project: str, zone: str, name: str, network: str = "",
                  service_account: str = "") -> list[list[str]]:
    """The reverse of `up_commands`: the group (and with it its VMs), the template, the firewall rule,
    then the service account and the network if `up` made them (a taken one is left alone)."""
    region = zone.rsplit("-", 1)[0]
    commands = [
        ["gcloud", "compute", "instance-groups", "managed", "delete", name, "--project", project,
         "--zone", zone, "--quiet"],
        ["gcloud", "compute", "instance-templates", "delete", f"{name}-template", "--project", project,
         "--quiet"],
        ["gcloud", "compute", "firewall-rules", "delete", f"{name}-internal", "--project", project, "--quiet"],
    ]
    account = NodeAccount.of(name, project, service_account)
    if account.created:  # its bindings on buckets and the secret go with it (a new account never inherits them)
        commands.append(["gcloud", "iam", "service-accounts", "delete", account.email, "--project", project,
                         "--quiet"])
    net = ClusterNetwork.of(name, network, subnet="")
    if net.created:
        commands += [
            ["gcloud", "compute", "routers", "nats", "delete", net.nat, "--project", project, "--router", net.router,
             "--region", region, "--quiet"],
            ["gcloud", "compute", "routers", "delete", net.router, "--project", project, "--region", region,
             "--quiet"],
            ["gcloud", "compute", "networks", "subnets", "delete", net.subnet, "--project", project,
             "--region", region, "--quiet"],
            ["gcloud", "compute", "networks", "delete", net.network, "--project", project, "--quiet"],
        ]
    return commands


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
    up = actions.add_parser("up", help="create the training cluster (network, service account, VMs)")
    down = actions.add_parser("down", help="delete the training cluster")
    for sub in (up, down):
        sub.add_argument("--project", required=True, help="GCP project id")
        sub.add_argument("--zone", required=True, help="zone of the VMs, e.g. us-central1-a")
        sub.add_argument("--name", default="cybulde-train", help="name of the group (default: %(default)s)")
        sub.add_argument("--network", default="",
                         help="an existing VPC of the cluster's own to take (with --subnet; it needs Private "
                              "Google Access and Cloud NAT); default: make <name>-net (and delete it on down)")
        sub.add_argument("--service-account", default="",
                         help="an existing dedicated service account to take (up grants it the nodes' roles); "
                              "default: make <name>-node (and delete it on down)")
        sub.add_argument("--dry-run", action="store_true", help="print the gcloud commands, run nothing")
    up.add_argument("--image", required=True,
                    help="training image by digest, e.g. us-docker.pkg.dev/PROJECT/cybulde/cybulde@sha256:...")
    up.add_argument("--nodes", type=int, required=True, help="number of VMs (training nodes)")
    up.add_argument("--machine-type", default=DEFAULT_MACHINE_TYPE, help="(default: %(default)s)")
    up.add_argument("--accelerator", default=DEFAULT_ACCELERATOR,
                    help="GPUs per VM, type=TYPE,count=N (default: %(default)s); count = ranks per node")
    up.add_argument("--repo", required=True, help="git URL the VMs clone the project from")
    up.add_argument("--revision", required=True, help="full commit SHA to train (git rev-parse HEAD)")
    up.add_argument("--tracking-uri", required=True,
                    help="https:// URL of the MLflow server every node reaches (no credentials)")
    up.add_argument("--mlflow-user", required=True, help="MLflow user the nodes log in as (the pipeline's identity)")
    up.add_argument("--mlflow-secret", required=True,
                    help="Secret Manager secret (in --project) holding that user's password")
    up.add_argument("--run-id", required=True,
                    help="MLflow run all nodes log into (infra/multinode/launch-node.sh --create-run)")
    up.add_argument("--artifact-bucket", default="",
                    help="gs://BUCKET the nodes may create objects in (only where the tracking server does not "
                         "proxy artifacts; infra/tracking-server does)")
    up.add_argument("--subnet", default="", help="subnet of --network the VMs use")
    up.add_argument("--subnet-range", default=DEFAULT_SUBNET_RANGE,
                    help="address range of the subnet up makes (default: %(default)s)")
    up.add_argument("--vm-image-family", default=DEFAULT_VM_IMAGE_FAMILY, help="(default: %(default)s)")
    up.add_argument("--vm-image-project", default=DEFAULT_VM_IMAGE_PROJECT, help="(default: %(default)s)")
    up.add_argument("--boot-disk-gb", type=int, default=200, help="(default: %(default)s)")
    up.add_argument("--rdzv-port", type=int, default=DEFAULT_RDZV_PORT, help="(default: %(default)s)")
    up.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR),
                    help="where the startup script is written (default: %(default)s)")
    up.add_argument("overrides", nargs="*", metavar="key=value",
                    help="params overrides for the fetch and train stages; data.registry=gs://BUCKET/PATH is required")


def spec_from_args(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(
        project=args.project, zone=args.zone, image=args.image, nodes=args.nodes, repo=args.repo,
        revision=args.revision, tracking_uri=args.tracking_uri, run_id=args.run_id, mlflow_user=args.mlflow_user,
        mlflow_secret=args.mlflow_secret, name=args.name, machine_type=args.machine_type,
        accelerator=args.accelerator, vm_image_family=args.vm_image_family, vm_image_project=args.vm_image_project,
        boot_disk_gb=args.boot_disk_gb, rdzv_port=args.rdzv_port, network=args.network, subnet=args.subnet,
        subnet_range=args.subnet_range, service_account=args.service_account, artifact_bucket=args.artifact_bucket,
        overrides=tuple(args.overrides),
    )


def run_gcp(args: argparse.Namespace) -> int:
    """The `cybulde gcp` command (errors are reported by `cybulde.cli`)."""
    if args.gcp_action == "up":
        spec = spec_from_args(args)
        validate(spec)
        commands = up_commands(spec, write_startup_script(spec, args.workdir))
    else:
        commands = down_commands(args.project, args.zone, args.name, args.network, args.service_account)
    execute(commands, args.dry_run)
    return 0
