#!/usr/bin/env bash
# Start one swarm worker on every host of a multi-host TPU slice (e.g. v5litepod-32: 8 hosts of
# 4 chips), all sharing one git remote. Run it from your laptop, with gcloud logged in:
#   bash scripts/swarm_pod.sh TPU_NAME ZONE REMOTE_URL TAG [autoresearch loop flags...]
#   bash scripts/swarm_pod.sh my-pod us-central1-a git@github.com:me/research.git nov27 --max-hours 8
# Each host clones REMOTE_URL into ~/autoresearch-swarm (once), sets up its venv, prepares the
# same dataset, and starts `autoresearch loop --tag TAG --remote REMOTE_URL --worker <host>` under
# scripts/overnight.sh, on its own chips only. Env: PROJECT_ID (gcloud project), DATASET
# (prepare's --dataset, default stdlib), HOST_CHIPS (chips per host, default 4), DRY_RUN=1
# (print the command instead of running it).
set -euo pipefail
if [ $# -lt 4 ] || [[ "$1" == -* ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tpu="$1" zone="$2" remote="$3" tag="$4"
shift 4
loop_args=$(printf '%q ' "$@")
chips="${HOST_CHIPS:-4}"
case "$chips" in
  1) bounds="1,1,1" ;; 2) bounds="1,2,1" ;; 4) bounds="2,2,1" ;; 8) bounds="2,4,1" ;;
  *) echo "HOST_CHIPS=$chips: use 1, 2, 4 or 8" >&2; exit 2 ;;
esac
visible=$(seq -s, 0 $((chips - 1)))
project_flag=()
if [ -n "${PROJECT_ID:-}" ]; then
  project_flag=(--project="$PROJECT_ID")
fi

# On every host: its own clone, venv and prepared cache; then a loop that sees only this host's
# chips. TPU_WORKER_HOSTNAMES=localhost keeps `autoresearch train` from joining the other hosts
# in one multi-host run (engine/training/devices.py); the TPU_* bounds are libtpu's settings for
# a process that uses a block of one host's chips.
host_command=$(cat <<EOF
set -e
dir=\$HOME/autoresearch-swarm
if [ ! -d "\$dir/.git" ]; then git clone -q $(printf '%q' "$remote") "\$dir"; fi
cd "\$dir"
[ -d .venv ] || bash scripts/tpu_vm_setup.sh
source .venv/bin/activate
autoresearch prepare --dataset $(printf '%q' "${DATASET:-stdlib}") --seq-len 512 --eval-tokens 131072
export TPU_WORKER_HOSTNAMES=localhost TPU_WORKER_ID=0
export TPU_CHIPS_PER_PROCESS_BOUNDS=$bounds TPU_PROCESS_BOUNDS=1,1,1
export TPU_VISIBLE_CHIPS=$visible TPU_VISIBLE_DEVICES=$visible
bash scripts/overnight.sh $(printf '%q' "$tag") --remote $(printf '%q' "$remote") --worker "\$(hostname)" $loop_args
EOF
)

command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" "${project_flag[@]}" --worker=all
         --command="$host_command")
if [ -n "${DRY_RUN:-}" ]; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
"${command[@]}"
echo "started a swarm worker on every host of $tpu; watch it with: autoresearch status --tag $tag (on any host)"
