#!/usr/bin/env bash
# Set up autoresearch-jax on a Linux machine with NVIDIA GPUs: run from the repository root.
#   bash scripts/gpu_setup.sh               # then: source .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python_env.sh

if ! command -v nvidia-smi >/dev/null; then
  echo "nvidia-smi not found: install the NVIDIA driver first (jax[cuda12] brings CUDA itself)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

install_project cuda

echo "checking the GPU..."
.venv/bin/python - <<'PY'
import jax
devices = jax.devices()
print(f"jax {jax.__version__}: {len(devices)} x {devices[0].device_kind}")
if devices[0].platform != "gpu":
    raise SystemExit("JAX sees no GPU: check the driver (nvidia-smi) and that jax[cuda12] installed")
PY
cat <<'MSG'
ready. next:
  source .venv/bin/activate
  autoresearch prepare --seq-len 512 --eval-tokens 131072   # an evaluation for a GPU (the default is a CPU's)
  autoresearch train --budget-seconds 60
  bash scripts/overnight.sh TAG --agent gemini --max-hours 8
MSG
