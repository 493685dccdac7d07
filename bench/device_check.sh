#!/usr/bin/env bash
# Proof on an accelerator, in one go (target: under 8 minutes on a bare one-GPU machine).
#   bash bench/device_check.sh                       # GPU: pip install -e ".[cuda]" first
#   DEVICE_CHECK_EXTRA=tpu bash bench/device_check.sh   # a Cloud TPU VM
#   DEVICE_CHECK_INSTALL=0 JAX_PLATFORMS=cpu LOOP_SECONDS=5 \
#     PREPARE_ARGS="--max-chars 3000000 --vocab-size 512 --seq-len 64 --eval-tokens 4096" \
#     bash bench/device_check.sh                     # every piece, end to end, on CPU
# Prints: the device, attention kernel against XLA attention, the step's FLOP count on the
# device against the CPU's count of the same program, then a 3-experiment offline loop
# (LOOP_SECONDS each) whose two baseline runs give MFU, tokens/s and compile seconds
# cold (empty compilation cache) and warm (the second run).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$SECONDS
LOOP_SECONDS=${LOOP_SECONDS:-60}
EXTRA=${DEVICE_CHECK_EXTRA:-cuda}
WORK=${DEVICE_CHECK_DIR:-$(mktemp -d -t device-check-XXXXXX)}
export AUTORESEARCH_CACHE=${AUTORESEARCH_CACHE:-$WORK/cache}  # empty: the first compile is cold
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/xla}
PY=${PYTHON:-python3}
stage() { printf '\n== %s  [%ds]\n' "$1" $((SECONDS - START)); }
field() { $PY -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])$1)"; }

if [[ "${DEVICE_CHECK_INSTALL:-1}" == 1 ]]; then
  stage "install: pip install -e .[$EXTRA]"
  $PY -m pip install -q -e ".[$EXTRA]"
fi

stage "device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
DEVICE=$($PY bench/device_check.py device)
echo "$DEVICE"
PLATFORM=$(echo "$DEVICE" | field '["platform"]')

stage "prepare (stdlib corpus)"
# shellcheck disable=SC2086
$PY -m engine.cli prepare ${PREPARE_ARGS:-} | tail -n 3
MANIFEST=$($PY -c "from engine import paths; print(paths.resolve_data_dir(None) / 'manifest.json')")
VOCAB=$($PY -c "import json; print(json.load(open('$MANIFEST'))['vocab_size'])")
EVAL_LEN=$($PY -c "import json; print(json.load(open('$MANIFEST'))['constants']['sequence_length'])")

stage "FLOP count of train.py's $PLATFORM step: the CPU's count runs alongside"
JAX_PLATFORMS=cpu $PY bench/device_check.py flops --as "$PLATFORM" --vocab-size "$VOCAB" --eval-len "$EVAL_LEN" \
  > "$WORK/flops_cpu.json" 2> "$WORK/flops_cpu.log" &
CPU_COUNT=$!

stage "attention: the $PLATFORM kernel against XLA attention"
ATTENTION=$($PY bench/device_check.py attention)
echo "$ATTENTION"

FLOPS_DEVICE=$($PY bench/device_check.py flops --as "$PLATFORM" --vocab-size "$VOCAB" --eval-len "$EVAL_LEN")
wait $CPU_COUNT || { cat "$WORK/flops_cpu.log"; exit 1; }
FLOPS_CPU=$(cat "$WORK/flops_cpu.json")
echo "device: $FLOPS_DEVICE"
echo "cpu:    $FLOPS_CPU"

stage "offline loop: 3 experiments at $LOOP_SECONDS s (baseline twice, then one proposal)"
LOOP_REPO=$WORK/repo
mkdir -p "$LOOP_REPO"
cp train.py program.md prepare.py "$LOOP_REPO"/
(cd "$LOOP_REPO" && git init -q && git add -A \
  && git -c user.name=check -c user.email=check@localhost commit -qm "device check start")
(cd "$LOOP_REPO" && $PY -m engine.cli loop --tag check --agent offline --max-experiments 3 \
  --budget-seconds "$LOOP_SECONDS")
LEDGER=$LOOP_REPO/runs/check/results.jsonl

stage "figures"
$PY - "$LEDGER" "$ATTENTION" "$FLOPS_DEVICE" "$FLOPS_CPU" "$DEVICE" <<'PY'
import json, sys
ledger, attention, flops_device, flops_cpu, device = sys.argv[1:6]
rows = [json.loads(line) for line in open(ledger)]
attention, flops_device, flops_cpu, device = map(json.loads, (attention, flops_device, flops_cpu, device))
base = [r for r in rows if r.get("role") == "baseline"]
fmt = lambda v, f="{:.2f}": "n/a" if v is None else f.format(v)
mfu = [r.get("mfu_percent") for r in base]
ratio = (flops_device["step_flops"] / flops_cpu["step_flops"]
         if flops_device["step_flops"] and flops_cpu["step_flops"] else None)
print(f"device:              {device['device_kind']} x{device['devices']} ({device['platform']}, jax {device['jax']})")
print(f"mfu_percent:         {', '.join(fmt(m) for m in mfu)}  (baseline runs; target >= 45 on an H100)")
print(f"tokens_per_second:   {', '.join(fmt(r.get('tokens_per_second'), '{:,.0f}') for r in base)}")
print(f"compile_seconds:     cold {fmt(base[0].get('compile_seconds'), '{:.1f}')}, "
      f"warm {fmt(base[1].get('compile_seconds') if len(base) > 1 else None, '{:.1f}')}")
print(f"attention:           {attention['kernel']} vs xla, relative error {attention['relative_error']:.2e}, "
      f"max abs {attention['max_abs_diff']:.2e}: {'agree' if attention['agree'] else 'DISAGREE'} "
      f"{attention['note']}".rstrip())
print(f"step_flops:          {flops_device['counted_on']} {fmt(flops_device['step_flops'], '{:.4e}')}, "
      f"cpu {fmt(flops_cpu['step_flops'], '{:.4e}')}, ratio {fmt(ratio, '{:.6f}')}")
print("loop:")
for r in rows:
    print(f"  #{r['experiment']} {r['status']:<8} val_bpb {fmt(r.get('val_bpb'), '{:.6f}')}  "
          f"steps {r.get('num_steps')}  {r.get('description')}")
PY
echo "total_seconds:       $((SECONDS - START))  (target < 480 on one GPU)"
echo "work directory:      $WORK"
