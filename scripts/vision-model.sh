#!/usr/bin/env bash
# Export the EfficientNet-Lite0 ImageNet classifier to ONNX once, into the model folder.
# The weights ship in a pip package as a PyTorch file and the server has only onnxruntime, so a
# separate virtualenv with CPU torch (requirements/vision-export.txt) exports them. An export's
# bytes differ between machines, so the result is not pinned by hash: the server's python
# checks it by behaviour (known inputs must give the recorded labels and logits) before moving
# it into place with a sidecar holding its sha256. Skipped when the file in place passes that
# check. Usage:
#   scripts/vision-model.sh SERVER_PYTHON   (the project venv's python)
#
# The export venv is a tool, not a model: it is kept in
# $OPENREALTIME_TOOL_CACHE/vision-export-KEY (default ~/.cache/openrealtime/tools), keyed by the
# sha256 of requirements/vision-export.txt, the Python version and the architecture, so a
# second model folder (a CI run, tests/integration/test_fresh_setup.py) exports without
# installing torch again. The export and its check run every time a model folder is set up.
# A venv that fails the export is dropped and built anew once. OPENREALTIME_TOOL_CACHE=off
# builds a throwaway venv and removes it afterwards.
set -euo pipefail
server_python="$1"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3.11}"
requirements="$here/../requirements/vision-export.txt"
model_dir="${OPENREALTIME_MODEL_DIR:-$HOME/.cache/openrealtime/models}"
target="$model_dir/efficientnet-lite0.onnx"
tool_cache="${OPENREALTIME_TOOL_CACHE:-$HOME/.cache/openrealtime/tools}"
classifier() { "$server_python" -m openrealtime.engines.vision.classifier "$@"; }

if [ -f "$target" ]; then
  if classifier; then exit 0; fi
  echo "re-exporting the classifier: the file in place failed its check" >&2
fi
mkdir -p "$model_dir"
tmp=$(mktemp -d)
staged=$(mktemp "$model_dir/.efficientnet-lite0.XXXXXX.onnx")
build=""
trap 'rm -rf "$tmp" "$staged" "$staged.export.json" ${build:+"$build"}' EXIT

# a venv with the export's requirements
make_venv() {
  local into="$1"
  "$python" -m venv "$into"
  "$into/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check -r "$requirements"
}
# sets venv to the cached export venv, installing it first when missing
cached_venv() {
  local key dir
  key=$({
    cat "$requirements"
    "$python" -c 'import platform, sys; print(sys.version, platform.machine())'
  } | sha256sum | cut -c1-16)
  dir="$tool_cache/vision-export-$key"
  if [ ! -x "$dir/bin/python" ]; then
    echo "installing the export venv (CPU torch) into $dir…" >&2
    mkdir -p "$tool_cache"
    build=$(mktemp -d "$tool_cache/.build.XXXXXX")
    make_venv "$build/venv"
    # publish in one rename, so a half-installed venv is never taken for a ready one; the venv
    # is used only through `bin/python -m`, which does not mind the move
    if mv -T "$build/venv" "$dir" 2>/dev/null; then
      find "$tool_cache" -maxdepth 1 -name 'vision-export-*' ! -name "vision-export-$key" \
        -exec rm -rf {} + # older keys
    fi
    rm -rf "$build"
    build=""
  else
    echo "reusing the export venv $dir" >&2
  fi
  venv="$dir"
}
export_with() {
  "$1/bin/python" "$here/export_efficientnet_lite0.py" "$(classifier --reference-path)" "$staged"
}

echo "exporting the EfficientNet-Lite0 classifier to $target with CPU torch…"
if [ "$tool_cache" = off ]; then
  make_venv "$tmp/venv"
  export_with "$tmp/venv"
else
  cached_venv
  if ! export_with "$venv"; then
    echo "the export failed in the cached venv $venv: installing it anew" >&2
    rm -rf "$venv"
    cached_venv
    export_with "$venv"
  fi
fi
classifier --install "$staged"
