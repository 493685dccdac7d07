#!/usr/bin/env bash
# Set up autoresearch-jax on a Cloud TPU VM: run from the repository root, on the VM.
#   bash scripts/tpu_vm_setup.sh            # then: source .venv/bin/activate
# Multi-host slice: run it on every host, e.g.
#   gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all \
#     --command="cd autoresearch-jax && bash scripts/tpu_vm_setup.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python_env.sh

install_project tpu

echo "checking the TPU..."
.venv/bin/python - <<'PY'
import jax
devices = jax.devices()
print(f"jax {jax.__version__}: {len(devices)} local x {devices[0].device_kind} "
      f"({jax.device_count()} in the slice, {jax.process_count()} host(s))")
if devices[0].platform != "tpu":
    raise SystemExit("no TPU found: is this a TPU VM, and is no other process holding the TPU?")
PY
cat <<'MSG'
ready. next:
  source .venv/bin/activate
  autoresearch prepare --dataset tfds:NAME --data-dir gs://YOUR-BUCKET/tfds --seq-len 512 --eval-tokens 2097152
  autoresearch train --budget-seconds 60
  bash scripts/overnight.sh TAG --agent gemini --max-hours 8
MSG
