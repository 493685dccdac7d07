#!/usr/bin/env bash
# Start a research loop that survives logout, then write its report when it stops.
#   bash scripts/overnight.sh TAG [autoresearch loop flags...]
#   bash scripts/overnight.sh nov26 --agent gemini --max-hours 8
# Runs in a detached tmux session (autoresearch-TAG) when tmux is installed, else under
# nohup; logs to runs/TAG/overnight.log. Run the same line again after a reboot: the
# loop resumes from its ledger. Set OVERNIGHT_NO_TMUX=1 to use nohup anyway.
set -euo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tag="$1"
shift
root=$(git rev-parse --show-toplevel 2>/dev/null) || {
  echo "run this inside the repository the loop works on (no git repository at $PWD)" >&2
  exit 2
}
cd "$root"
mkdir -p "runs/$tag"
log="runs/$tag/overnight.log"
activate=""
if [ -f .venv/bin/activate ]; then
  activate="source .venv/bin/activate && "
fi
loop_args=$(printf '%q ' "$@")
job="${activate}cd $(printf '%q' "$root") && { date -u +'loop started %FT%TZ'; \
autoresearch loop --tag $(printf '%q' "$tag") $loop_args; echo \"loop exited with \$?\"; \
autoresearch report --tag $(printf '%q' "$tag"); date -u +'done %FT%TZ'; } >> $(printf '%q' "$log") 2>&1"
session="autoresearch-$tag"

if command -v tmux >/dev/null && [ -z "${OVERNIGHT_NO_TMUX:-}" ]; then
  if tmux has-session -t "$session" 2>/dev/null; then
    echo "already running: tmux attach -t $session" >&2
    exit 1
  fi
  # A tmux server started earlier would not see variables exported since: pass them on.
  env_args=()
  for name in PATH AUTORESEARCH_CACHE JAX_PLATFORMS CUDA_VISIBLE_DEVICES GEMINI_API_KEY \
              GOOGLE_API_KEY GOOGLE_GENAI_USE_VERTEXAI GOOGLE_CLOUD_PROJECT GOOGLE_CLOUD_LOCATION \
              GOOGLE_GEMINI_BASE_URL TPU_WORKER_HOSTNAMES TPU_WORKER_ID TPU_CHIPS_PER_PROCESS_BOUNDS \
              TPU_PROCESS_BOUNDS TPU_VISIBLE_CHIPS TPU_VISIBLE_DEVICES; do
    if [ -n "${!name:-}" ]; then
      env_args+=(-e "$name=${!name}")
    fi
  done
  tmux new-session -d -s "$session" "${env_args[@]}" "bash -c $(printf '%q' "$job")"
  echo "started in tmux session $session (look in: tmux attach -t $session, leave: Ctrl-b d)"
else
  # setsid: the loop and its training child form one process group, stopped together.
  setsid nohup bash -c "$job" >/dev/null 2>&1 < /dev/null &
  echo "started under nohup, process group $! (stop it: kill -- -$!)"
fi
echo "log: $root/$log    progress: autoresearch status --tag $tag"
