#!/usr/bin/env bash
# Build the llama-cpp-python wheel once for this CPU's feature set and keep it in a cache folder;
# print the wheel's path. PyPI has only the source, and a default build turns on AMX on these
# CPUs, which the VMs cannot execute (SIGILL): scripts/llama-cpu-flags.sh picks the flags (AVX2,
# plus AVX-512/VNNI and AVX-VNNI where the CPU has them, never AMX). The cache is keyed by that
# flag set, so a wheel built for one feature set is never installed on a CPU with another.
#
#   PIP=.venv/bin/pip scripts/llama-wheel.sh VERSION CACHE_ROOT    # prints the wheel path
#
# The wheel lands in CACHE_ROOT/llama-cpp-python-VERSION-KEY/ with build-flags.txt beside it.
# The build takes 10-15 min on 2 cores; its output goes to stderr.
set -euo pipefail
version="$1"
cache_root="$2"
here="$(cd "$(dirname "$0")" && pwd)"
key=$("$here/llama-cpu-flags.sh" --key)
cmake_args=$("$here/llama-cpu-flags.sh" --cmake-args)
dir="$cache_root/llama-cpp-python-$version-$key"

find_wheel() { compgen -G "$dir/llama_cpp_python-$version-*.whl" | head -n 1; }
if wheel=$(find_wheel) && [ -n "$wheel" ]; then
  echo "$wheel"
  exit 0
fi
echo "building llama-cpp-python $version for $key (10-15 min on 2 cores)…" >&2
echo "CMAKE_ARGS=$cmake_args" >&2
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# --no-cache-dir: pip would otherwise reuse a wheel it built earlier from the same sdist,
# whatever CMAKE_ARGS that build had
CMAKE_ARGS="$cmake_args" "${PIP:-pip}" wheel --no-cache-dir --no-deps "llama-cpp-python==$version" \
  -w "$tmp/wheel" >&2
{
  echo "llama-cpp-python $version, key $key, built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start)) s"
  echo "CMAKE_ARGS=$cmake_args"
  "$here/llama-cpu-flags.sh" --explain
} >"$tmp/wheel/build-flags.txt"
# publish the folder in one rename, so a half-built folder is never taken for a cached wheel
if ! mv -T "$tmp/wheel" "$dir" 2>/dev/null; then
  [ -n "$(find_wheel)" ] || { echo "could not store the wheel in $dir" >&2; exit 1; }
fi
find_wheel
