"""Whether this machine has the cores for Kokoro's voices, from Kokoro's measured cost.

Kokoro-82M costs ~0.8 CPU-seconds per second of speech on one AVX2 core, whatever graph or
session options are used (``bench/kokoro_graph.py``, ``bench/kokoro_speedups.py``; its
decoder's convolutions are ~60 GFLOP per second of audio). A voice must keep a real-time
factor <= 0.35 while another session is active, so one speaking session needs

    threads = ceil(cost / (target RTF x parallel efficiency))

intra-op threads of its own, and the machine needs those plus the cores another session's
work takes (its LLM decoding on one thread, its ASR; one core). With the measured cost 0.8,
the target 0.35 and the 2-thread efficiency measured on this machine (``PARALLEL_EFFICIENCY``),
that is 3 threads + 1 core: ``KOKORO=auto`` enables Kokoro on 4 usable cores or more, and
gives its session that many intra-op threads (``kokoro_threads``).

Usable cores are not ``os.cpu_count()``: a container or ``taskset`` limits a process to fewer,
by CPU affinity or by a CFS quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); the
smallest of these counts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KOKORO_CPU_PER_AUDIO_SECOND",
    "KokoroCapacity",
    "kokoro_capacity",
    "usable_cpus",
]

KOKORO_CPU_PER_AUDIO_SECOND = 0.8
"""CPU-seconds Kokoro spends per second of speech on one AVX2 core (measured 0.71-0.81 with
the shipped int8 graph, README "Voices")."""
TARGET_RTF = 0.35
"""The real-time factor a voice must keep while another session is active."""
PARALLEL_EFFICIENCY = 0.8
"""Speed-up per added intra-op thread relative to perfect scaling (2 threads measured
1.6x on two idle cores, ``bench/kokoro_speedups.py``)."""
OTHER_SESSION_CORES = 1
"""What "another session is active" takes: its LLM decoding on one thread (or its ASR)."""


def _cgroup_v2_quota(root: Path, relative: str) -> float | None:
    text = (root / relative.lstrip("/") / "cpu.max").read_text().split()
    if len(text) >= 2 and text[0] != "max":
        return int(text[0]) / int(text[1])
    return None


def _cgroup_v1_quota(root: Path, relative: str) -> float | None:
    for base in (root / "cpu" / relative.lstrip("/"), root / "cpu,cpuacct" / relative.lstrip("/")):
        quota_file = base / "cpu.cfs_quota_us"
        if quota_file.is_file():
            quota = int(quota_file.read_text())
            period = int((base / "cpu.cfs_period_us").read_text())
            return quota / period if quota > 0 and period > 0 else None
    return None


def cgroup_cpu_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The CFS quota of this process's cgroup in cores (``None``: no quota, or not Linux)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        try:
            if controllers == "" and (root / "cgroup.controllers").is_file():
                found = _cgroup_v2_quota(root, path)
            elif "cpu" in controllers.split(","):
                found = _cgroup_v1_quota(root, path)
            else:
                continue
        except (OSError, ValueError):
            continue
        if found is not None:
            quotas.append(found)
    return min(quotas) if quotas else None


def usable_cpus() -> float:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota."""
    try:
        count = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        count = float(os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return min(count, quota) if quota is not None else count


@dataclass(frozen=True)
class KokoroCapacity:
    """The ``KOKORO=auto`` decision and the numbers behind it."""

    cpus: float
    threads: int
    needed: int

    @property
    def enabled(self) -> bool:
        return self.cpus >= self.needed

    def explain(self) -> str:
        verdict = "enabled" if self.enabled else "disabled"
        return (
            f"Kokoro {verdict}: {self.cpus:g} usable cores, {self.needed} needed "
            f"({self.threads} threads at {KOKORO_CPU_PER_AUDIO_SECOND} CPU-s per audio-s for RTF "
            f"<= {TARGET_RTF}, plus {OTHER_SESSION_CORES} for another session)"
        )


def kokoro_capacity(
    cpus: float | None = None,
    *,
    cost: float = KOKORO_CPU_PER_AUDIO_SECOND,
    target_rtf: float = TARGET_RTF,
    efficiency: float = PARALLEL_EFFICIENCY,
) -> KokoroCapacity:
    """Threads one Kokoro answer needs to keep ``target_rtf``, and whether ``cpus`` (default:
    this process's usable cores) also leave room for another session."""
    threads = max(1, math.ceil(cost / (target_rtf * efficiency) - 1e-9))
    available = usable_cpus() if cpus is None else cpus
    return KokoroCapacity(cpus=available, threads=threads, needed=threads + OTHER_SESSION_CORES)
