#!/usr/bin/env bash
# Launch one node of a multi-node `train` stage: torchrun with c10d rendezvous (no etcd needed).
# Run it on every node with the same --nnodes, --rdzv-endpoint and --run-id; torchrun waits until
# all nodes have joined, assigns ranks and starts DDP. Only global rank 0 writes model/,
# metrics/train.json and MLflow, so all nodes report into the one run given by --run-id.
#
#   1. once, anywhere that reaches the tracking server: create the run all nodes will share
#        infra/multinode/launch-node.sh --create-run --nnodes 2 --rdzv-endpoint 10.0.0.11:29400
#        (prints the run id; give it the same --nproc-per-node and -- overrides as the nodes)
#   2. on every node (node 0's address is the rendezvous endpoint; any free port on it):
#        infra/multinode/launch-node.sh --nnodes 2 --node-addr 10.0.0.11 \
#            --rdzv-endpoint 10.0.0.11:29400 --run-id RUN_ID [--nproc-per-node 1] [--iface eth0] \
#            [--max-restarts 3] [--project-dir DIR] [--script PATH] [-- key=value ...]
#
# Every node needs the same checkout, params.yaml and fetched data (`dvc pull` or `python
# stages/fetch.py`) and the same MLFLOW_TRACKING_URI (a server every node reaches, e.g.
# infra/tracking-server), with its credential in MLFLOW_TRACKING_USERNAME/PASSWORD: from the
# environment only, never in the URI (messages show it) or an override (torchrun's arguments).
# The rendezvous and the collectives authenticate nothing and the checkpoint broadcast unpickles
# what it receives: run the nodes on a network only they are on (a VPC or VLAN of their own, a
# firewall opening the rendezvous port and the ephemeral ports to the nodes only, no public
# address; `cybulde gcp up` makes one). --iface names the network interface the collective traffic uses
# (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME) where a node has several. Extra key=value overrides go
# to the training script after `--`; launch.* and mlflow.run_id are set from the options above.
# --max-restarts (default 3): a killed or failed worker restarts the workers, which resume from the
# latest checkpoint (every node keeps its own copy under .cybulde/resume/).
# A lost node rejoins by running its command again; if node 0 (the rendezvous host) is lost, the
# other nodes exit: run every node's command again and they resume the same way.
set -euo pipefail

usage() {
  sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

fail() {
  echo "error: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
project_dir="$repo_root"
script=""
nnodes=""
nproc_per_node=1
node_addr=""
rdzv_endpoint=""
run_id=""
iface=""
max_restarts=3
create_run=false
overrides=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes) nnodes="$2"; shift 2 ;;
    --nproc-per-node) nproc_per_node="$2"; shift 2 ;;
    --node-addr) node_addr="$2"; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint="$2"; shift 2 ;;
    --run-id) run_id="$2"; shift 2 ;;
    --iface) iface="$2"; shift 2 ;;
    --max-restarts) max_restarts="$2"; shift 2 ;;
    --project-dir) project_dir="$2"; shift 2 ;;
    --script) script="$2"; shift 2 ;;
    --create-run) create_run=true; shift ;;
    --) shift; overrides=("$@"); break ;;
    -h | --help) usage 0 ;;
    *) fail "unknown option '$1' (see --help)" ;;
  esac
done

cd "$project_dir" || fail "--project-dir '$project_dir' does not exist"
[[ -f params.yaml ]] || fail "no params.yaml in $(pwd): pass --project-dir with the project checkout"

[[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || fail "--nnodes must be a positive integer (got '$nnodes')"
[[ "$nproc_per_node" =~ ^[1-9][0-9]*$ ]] || fail "--nproc-per-node must be a positive integer (got '$nproc_per_node')"
[[ "$max_restarts" =~ ^[0-9]+$ ]] || fail "--max-restarts must be a non-negative integer (got '$max_restarts')"
[[ "$rdzv_endpoint" == *:* ]] || fail "--rdzv-endpoint must be HOST:PORT on the first node (got '$rdzv_endpoint')"
for override in "${overrides[@]}"; do
  case "$override" in
    mlflow.tracking_uri=*://*@*)
      fail "mlflow.tracking_uri must carry no credentials: put them in MLFLOW_TRACKING_USERNAME/PASSWORD" ;;
  esac
done
# The run records the launch settings as params, so it is created with exactly those of the job.
job_overrides=(
  "launch.nnodes=$nnodes"
  "launch.nproc_per_node=$nproc_per_node"
  "launch.rdzv_endpoint=$rdzv_endpoint"
  "launch.max_restarts=$max_restarts"
  "${overrides[@]}"
)

if [[ "$create_run" == true ]]; then
  exec python - "${job_overrides[@]}" <<'PY'
import sys

from cybulde.config.loader import load_config
from cybulde.tracking.run import PipelineRun

print(PipelineRun.start_training(load_config(overrides=sys.argv[1:])).run_id)
PY
fi

[[ -n "$node_addr" ]] || fail "--node-addr: this node's address as the other nodes reach it"
[[ -n "$run_id" ]] || fail "--run-id: the MLflow run every node logs into (create it with --create-run)"
script="${script:-$repo_root/stages/train.py}"
[[ -f "$script" ]] || fail "training script '$script' not found"

if [[ -n "$iface" ]]; then
  export GLOO_SOCKET_IFNAME="$iface" NCCL_SOCKET_IFNAME="$iface"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Global rank 0 hosts a new store for each rendezvous round (see OWN_STORE_PER_ROUND in
# src/cybulde/training/distributed.py): with the agent's store shared across rounds, a node started to
# replace a lost one waits forever for the address of the workers' store.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
# torchrun guesses which node hosts the rendezvous store from the hostname and the primary
# address; say so explicitly on that node, which may be reached through a secondary interface.
rdzv_conf=()
if [[ "${rdzv_endpoint%:*}" == "$node_addr" ]]; then
  rdzv_conf=(--rdzv-conf=is_host=true)
fi

exec torchrun \
  --nnodes="$nnodes" \
  --nproc-per-node="$nproc_per_node" \
  --rdzv-backend=c10d \
  --rdzv-endpoint="$rdzv_endpoint" \
  --rdzv-id="cybulde-$run_id" \
  --max-restarts="$max_restarts" \
  --local-addr="$node_addr" \
  "${rdzv_conf[@]}" \
  "$script" \
  "${job_overrides[@]}" \
  "mlflow.run_id=$run_id"
