#!/usr/bin/env bash
# The CPU flags to build llama.cpp (ggml) with on this machine, chosen in one place: the
# llama-cpp-python wheel (scripts/llama-wheel.sh) uses them, and so should anything else that
# builds llama.cpp from source (e.g. its llama-server).
#
#   scripts/llama-cpu-flags.sh [--cmake-args | --key | --explain] [CPUINFO]
#
#   --cmake-args  (default) the CMAKE_ARGS, one line
#   --key         a short name of that flag set; build caches are keyed by it so that a build
#                 is never reused on a CPU with another feature set
#   --explain     the CPU features seen and what was chosen, for people
#   CPUINFO       a /proc/cpuinfo text to read instead of this machine's (or $LLAMA_CPUINFO;
#                 for tests)
#
# x86-64: never GGML_NATIVE. -march=native would turn on AMX, which the cloud VMs this runs on
# advertise but cannot execute (the first batched prompt dies with SIGILL), so AMX is always
# off. The base is the portable AVX2 set (AVX, AVX2, FMA, F16C, BMI2, SSE4.2); on top of it
#   - AVX-512 when the CPU has every extension ggml compiles it with (F, CD, VL, DQ, BW),
#     plus AVX512-VNNI when present;
#   - AVX-VNNI (the VEX form, e.g. Alder Lake, Sapphire Rapids, Zen 5) when present.
# A feature counts only when every core lists it. A CPU without the AVX2 set gets only what it
# has. OPENREALTIME_LLAMA_CPU=portable forces the portable AVX2 set (a build for other machines).
# Other architectures build for the CPU they run on (GGML_NATIVE), keyed by its feature list.
set -euo pipefail

mode="--cmake-args"
case "${1:-}" in
  --cmake-args | --key | --explain) mode="$1"; shift ;;
  -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
esac
cpuinfo="${1:-${LLAMA_CPUINFO:-/proc/cpuinfo}}"
arch="${LLAMA_CPU_ARCH:-$(uname -m)}"
choice="${OPENREALTIME_LLAMA_CPU:-auto}"
case "$choice" in
  auto | portable) ;;
  *) echo "OPENREALTIME_LLAMA_CPU must be auto or portable, not '$choice'" >&2; exit 2 ;;
esac

# the features every core reports ("flags" on x86, "Features" on ARM), one per line, sorted
features=$(awk -F: '
  /^(flags|Features)[[:space:]]*:/ {
    cores++
    n = split($2, list, " ")
    delete seen
    for (i = 1; i <= n; i++) if (!(list[i] in seen)) { seen[list[i]] = 1; count[list[i]]++ }
  }
  END { for (f in count) if (count[f] == cores) print f }
' "$cpuinfo" | LC_ALL=C sort)
has() { grep -qx -- "$1" <<<"$features"; }
on_off() { if has "$1"; then echo ON; else echo OFF; fi; }
short_hash() { sha256sum | cut -c1-8; }

if [ "$arch" != "x86_64" ]; then
  args="-DGGML_NATIVE=ON"
  key="$arch-native-$(printf '%s\n' "$features" | short_hash)"
  why="not x86-64: built for this CPU (GGML_NATIVE)"
else
  avx2_set=(avx avx2 fma f16c bmi2 sse4_2)
  avx512_set=(avx512f avx512cd avx512vl avx512dq avx512bw)
  all() { local f; for f in "$@"; do has "$f" || return 1; done; }
  if [ "$choice" = portable ] || all "${avx2_set[@]}"; then
    base=(-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
    name="avx2"
  else
    base=(-DGGML_SSE42="$(on_off sse4_2)" -DGGML_AVX="$(on_off avx)" -DGGML_AVX2=OFF
      -DGGML_FMA="$(on_off fma)" -DGGML_F16C="$(on_off f16c)" -DGGML_BMI2="$(on_off bmi2)")
    name="no-avx2"
  fi
  avx512=OFF avx512_vnni=OFF avx_vnni=OFF
  if [ "$choice" = auto ] && [ "$name" = avx2 ]; then
    if all "${avx512_set[@]}"; then
      avx512=ON name="avx512"
      if has avx512_vnni; then avx512_vnni=ON name="$name-vnni"; fi
    fi
    if has avx_vnni; then avx_vnni=ON name="$name-avxvnni"; fi
  fi
  args="-DGGML_NATIVE=OFF ${base[*]} -DGGML_AVX512=$avx512 -DGGML_AVX512_VNNI=$avx512_vnni"
  args="$args -DGGML_AVX_VNNI=$avx_vnni -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF"
  args="$args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  key="x86_64-$name-$(printf '%s' "$args" | short_hash)"
  why="x86-64 ($choice): $name; AMX off always"
fi

case "$mode" in
  --cmake-args) echo "$args" ;;
  --key) echo "$key" ;;
  --explain)
    echo "cpu features (on every core): $(tr '\n' ' ' <<<"$features")"
    echo "choice: $why"
    echo "key: $key"
    echo "CMAKE_ARGS: $args"
    ;;
esac
