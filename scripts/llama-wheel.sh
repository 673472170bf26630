#!/usr/bin/env bash
# Build the llama-cpp-python wheel once with portable CPU flags and keep it in a cache folder.
# A default build detects AMX on these CPUs, which the VM cannot execute (SIGILL), so the
# flags below are mandatory. Reused from the cache when present (the build takes ~10 min).
set -euo pipefail
version="$1"
wheels="$2"
mkdir -p "$wheels"
if ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  exit 0
fi
echo "building llama-cpp-python $version (portable AVX2, ~10 min on 2 cores)…"
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
 -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
tmp=$(mktemp -d)
pip_bin="${PIP:-pip}"
"$pip_bin" wheel --no-deps "llama-cpp-python==$version" -w "$tmp"
mv "$tmp"/llama_cpp_python-"$version"-*.whl "$wheels"/
rm -rf "$tmp"
