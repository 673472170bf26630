"""The llama.cpp CPU flag selection (scripts/llama-cpu-flags.sh) and the wheel cache keyed by it
(scripts/llama-wheel.sh), on /proc/cpuinfo texts of real CPU families."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
FLAGS = SCRIPTS / "llama-cpu-flags.sh"
WHEEL = SCRIPTS / "llama-wheel.sh"

BASE = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
    "syscall nx lm constant_tsc rep_good nopl pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 x2apic movbe popcnt "
    "aes xsave rdrand hypervisor lahf_lm abm"
)
AVX2 = "avx f16c fma bmi1 bmi2 avx2"
AVX512 = "avx512f avx512dq avx512cd avx512bw avx512vl"
CPUS = {
    # this machine: AMD EPYC (Zen 2/3), AVX2 only
    "epyc-zen3": f"{BASE} {AVX2} sha_ni xsaveopt clzero vaes vpclmulqdq",
    # Sapphire Rapids VMs: AVX-512 with VNNI and BF16, AVX-VNNI, and AMX (advertised, not executable)
    "sapphire-rapids": f"{BASE} {AVX2} {AVX512} avx512ifma avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg "
    "avx512_vpopcntdq avx_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8",
    # AMD Genoa (Zen 4): AVX-512 with VNNI, no AVX-VNNI
    "epyc-zen4": f"{BASE} {AVX2} {AVX512} avx512ifma avx512vbmi avx512_vnni avx512_bf16 avx512_vbmi2",
    # Alder Lake: AVX-VNNI, no AVX-512
    "alder-lake": f"{BASE} {AVX2} avx_vnni",
    # Skylake-SP: AVX-512 without VNNI
    "skylake-sp": f"{BASE} {AVX2} {AVX512}",
    # Knights Landing: AVX-512F but not BW/VL/DQ, which ggml's AVX-512 build needs
    "knights-landing": f"{BASE} {AVX2} avx512f avx512cd avx512er avx512pf",
    # Sandy Bridge: AVX without AVX2/FMA/F16C
    "sandy-bridge": f"{BASE} avx",
}


def cpuinfo(tmp_path: Path, *cores: str) -> Path:
    text = "".join(
        f"processor\t: {i}\nvendor_id\t: x\nmodel name\t: test cpu\nflags\t\t: {flags}\n\n"
        for i, flags in enumerate(cores)
    )
    path = tmp_path / f"cpuinfo-{abs(hash(text))}"
    path.write_text(text)
    return path


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("OPENREALTIME_LLAMA_CPU", "LLAMA_CPUINFO")}
    full_env["LLAMA_CPU_ARCH"] = "x86_64"
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env={**full_env, **(env or {})}, timeout=30
    )


def flags_of(tmp_path: Path, cpu: str, **env: str) -> dict[str, str]:
    result = run(FLAGS, "--cmake-args", cpuinfo(tmp_path, CPUS[cpu], CPUS[cpu]), env=env)
    assert result.returncode == 0, result.stderr
    pairs = [arg.removeprefix("-D").split("=") for arg in result.stdout.split()]
    return {name: value for name, value in pairs}


def key_of(tmp_path: Path, *cores: str, **env: str) -> str:
    result = run(FLAGS, "--key", cpuinfo(tmp_path, *cores), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


ON = "ON"
OFF = "OFF"


@pytest.mark.parametrize(
    ("cpu", "avx2", "avx512", "avx512_vnni", "avx_vnni"),
    [
        ("epyc-zen3", ON, OFF, OFF, OFF),
        ("sapphire-rapids", ON, ON, ON, ON),
        ("epyc-zen4", ON, ON, ON, OFF),
        ("alder-lake", ON, OFF, OFF, ON),
        ("skylake-sp", ON, ON, OFF, OFF),
        ("knights-landing", ON, OFF, OFF, OFF),
        ("sandy-bridge", OFF, OFF, OFF, OFF),
    ],
)
def test_flags_follow_the_cpu(
    tmp_path: Path, cpu: str, avx2: str, avx512: str, avx512_vnni: str, avx_vnni: str
) -> None:
    flags = flags_of(tmp_path, cpu)
    assert flags["GGML_NATIVE"] == OFF  # -march=native would switch AMX on
    assert (flags["GGML_AVX2"], flags["GGML_AVX512"], flags["GGML_AVX512_VNNI"], flags["GGML_AVX_VNNI"]) == (
        avx2,
        avx512,
        avx512_vnni,
        avx_vnni,
    )
    for amx in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert flags[amx] == OFF, f"{cpu}: {amx} must never be on (SIGILL on these VMs)"
    assert flags["GGML_AVX512_BF16"] == OFF and flags["GGML_AVX512_VBMI"] == OFF
    if avx2 == ON:
        assert all(flags[f] == ON for f in ("GGML_AVX", "GGML_FMA", "GGML_F16C", "GGML_BMI2", "GGML_SSE42"))


def test_sandy_bridge_gets_only_what_it_has(tmp_path: Path) -> None:
    flags = flags_of(tmp_path, "sandy-bridge")
    assert (flags["GGML_AVX"], flags["GGML_SSE42"]) == (ON, ON)
    assert (flags["GGML_FMA"], flags["GGML_F16C"], flags["GGML_BMI2"]) == (OFF, OFF, OFF)


def test_portable_forces_the_avx2_set(tmp_path: Path) -> None:
    portable = flags_of(tmp_path, "sapphire-rapids", OPENREALTIME_LLAMA_CPU="portable")
    assert portable == flags_of(tmp_path, "epyc-zen3")
    assert key_of(tmp_path, CPUS["sapphire-rapids"], OPENREALTIME_LLAMA_CPU="portable") == key_of(
        tmp_path, CPUS["epyc-zen3"]
    )
    bad = run(FLAGS, "--key", cpuinfo(tmp_path, CPUS["epyc-zen3"]), env={"OPENREALTIME_LLAMA_CPU": "native"})
    assert bad.returncode == 2 and "auto or portable" in bad.stderr


def test_a_feature_counts_only_when_every_core_has_it(tmp_path: Path) -> None:
    mixed = key_of(tmp_path, CPUS["sapphire-rapids"], CPUS["epyc-zen3"])
    assert mixed == key_of(tmp_path, CPUS["epyc-zen3"])


def test_keys_name_the_flag_set(tmp_path: Path) -> None:
    keys = {cpu: key_of(tmp_path, flags, flags) for cpu, flags in CPUS.items()}
    assert keys["epyc-zen3"].startswith("x86_64-avx2-")
    assert keys["sapphire-rapids"].startswith("x86_64-avx512-vnni-avxvnni-")
    assert keys["epyc-zen4"].startswith("x86_64-avx512-vnni-")
    assert keys["alder-lake"].startswith("x86_64-avx2-avxvnni-")
    # a CPU whose extra features give no other flags shares the key (and the wheel)
    assert keys["knights-landing"] == keys["epyc-zen3"]
    distinct = [keys[c] for c in CPUS if c != "knights-landing"]
    assert len(set(distinct)) == len(distinct)
    # the key is a function of the flags: the same CPU twice, the same key
    assert key_of(tmp_path, CPUS["epyc-zen4"]) == keys["epyc-zen4"]


def test_other_architectures_build_native_keyed_by_their_features(tmp_path: Path) -> None:
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n\n")
    env = {"LLAMA_CPU_ARCH": "aarch64"}
    assert run(FLAGS, arm, env=env).stdout.strip() == "-DGGML_NATIVE=ON"
    key = run(FLAGS, "--key", arm, env=env).stdout.strip()
    assert key.startswith("aarch64-native-")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve\n\n")
    assert run(FLAGS, "--key", arm, env=env).stdout.strip() != key


def test_this_machine() -> None:
    result = run(FLAGS, "--explain")
    assert result.returncode == 0, result.stderr
    for amx in ("TILE", "INT8", "BF16"):
        assert f"-DGGML_AMX_{amx}=OFF" in result.stdout
    assert "-DGGML_NATIVE=OFF" in result.stdout


# ---------------------------------------------------------------------------- the wheel cache


FAKE_PIP = """#!/usr/bin/env bash
# stands in for `pip wheel --no-cache-dir --no-deps llama-cpp-python==V -w DIR`: records
# CMAKE_ARGS, writes a wheel; pip's own cache would hand back a wheel built with other flags
[[ " $* " == *" --no-cache-dir "* ]] || { echo "pip's wheel cache must be off" >&2; exit 9; }
echo "$CMAKE_ARGS" >> "$FAKE_PIP_LOG"
out="${@: -1}"
mkdir -p "$out"
touch "$out/llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
"""


def test_the_wheel_cache_is_keyed_by_the_flag_set(tmp_path: Path) -> None:
    pip = tmp_path / "pip"
    pip.write_text(FAKE_PIP)
    pip.chmod(0o755)
    log = tmp_path / "pip.log"
    cache = tmp_path / "wheels"
    # a wheel from before the cache was keyed (flags unknown) and one for another CPU: never reused
    cache.mkdir()
    (cache / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").touch()
    zen4 = cpuinfo(tmp_path, CPUS["epyc-zen4"])
    zen3 = cpuinfo(tmp_path, CPUS["epyc-zen3"])

    def wheel(cpu: Path) -> str:
        result = run(
            WHEEL, "0.3.36", cache, env={"PIP": str(pip), "FAKE_PIP_LOG": str(log), "LLAMA_CPUINFO": str(cpu)}
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    built = wheel(zen4)
    zen4_key = key_of(tmp_path, CPUS["epyc-zen4"])
    assert Path(built).parent == cache / f"llama-cpp-python-0.3.36-{zen4_key}"
    assert log.read_text().splitlines() == [run(FLAGS, zen4).stdout.strip()]
    assert "-DGGML_AVX512=ON" in (Path(built).parent / "build-flags.txt").read_text()

    assert wheel(zen4) == built  # cached: no second build
    assert len(log.read_text().splitlines()) == 1

    other = wheel(zen3)  # another feature set builds its own wheel
    assert Path(other).parent != Path(built).parent
    assert log.read_text().splitlines()[1] == run(FLAGS, zen3).stdout.strip()
    assert not list(cache.glob(".build.*")), "no half-built folder is left behind"
