# Shared by the setup scripts (sourced, not run): a Python >= 3.11 venv and a git identity.

python_311() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

make_venv() {
  local target="$1" python
  if [ -x "$target/bin/python" ]; then
    return 0
  fi
  if python=$(python_311); then
    "$python" -m venv "$target" && return 0
  fi
  # Images with an older Python (Ubuntu 22.04 ships 3.10): uv fetches a standalone 3.11.
  echo "no Python >= 3.11 with venv here; installing uv to get one"
  if ! command -v uv >/dev/null; then
    curl -LsSf https://astral.sh/uv/install.sh | sh
    export PATH="$HOME/.local/bin:$PATH"
  fi
  uv venv --seed --python 3.11 "$target"
}

ensure_git_identity() {
  # The loop commits every experiment; git refuses without a name and an email.
  git config user.email >/dev/null || git config user.email "autoresearch@$(hostname)"
  git config user.name >/dev/null || git config user.name "autoresearch"
}

install_project() {
  # .venv with the package, the given extra (cuda or tpu) and the test tools: with uv where it
  # is installed (the versions of uv.lock, the ones CI tested; uv finds or fetches a Python
  # >= 3.11 itself), else with pip (the newest versions pyproject.toml allows).
  if command -v uv >/dev/null && [ "${AUTORESEARCH_USE_PIP:-0}" != 1 ]; then
    echo "installing with uv from uv.lock (AUTORESEARCH_USE_PIP=1 for pip)"
    uv sync --locked --extra "$1" --extra test
  else
    make_venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$1,test]"
  fi
  ensure_git_identity
}
