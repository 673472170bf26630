"""How many of the machine's cores nothing is using right now.

Background work that could use more than one thread (a session's prompt prefill) takes the
second core only when it is really free: on this 2-core machine llama.cpp's threads wait for
each other at every step of a matrix product, so two threads on cores another process also
wants evaluated 3x slower than one (8 vs 27 prompt tokens a second, one run at load 4-7),
while on two idle cores they nearly halve the time. The machine's idle time is read from
``/proc/stat`` (Linux); elsewhere no core counts as spare.
"""

from __future__ import annotations

import threading
import time

_MIN_INTERVAL_S = 0.25
"""Shorter intervals repeat the previous reading (the kernel's counters tick at 100 Hz)."""


def _idle_and_total() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


class SpareCores:
    """Idle cores over the time since the previous reading (at least ``_MIN_INTERVAL_S``)."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._lock = threading.Lock()
        self._last = _idle_and_total()
        self._at = time.monotonic()
        self._spare = 0.0

    def __call__(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now - self._at < _MIN_INTERVAL_S:
                return self._spare
            reading = _idle_and_total()
            if reading is None or self._last is None or reading[1] <= self._last[1]:
                self._last, self._at = reading, now
                return self._spare
            idle = (reading[0] - self._last[0]) / (reading[1] - self._last[1])
            self._last, self._at = reading, now
            self._spare = max(0.0, idle * self.cores)
            return self._spare


class WorkerThreads:
    """Threads for one long CPU job, asked again between its chunks: ``most`` while the cores
    they need are free, else ``fewest``. Going up needs the idle cores (``SpareCores``);
    staying up needs the job's process to have kept them busy (its CPU time over the last
    chunk at least ``keep_share`` of each thread's wall time), since once it runs on every
    core the machine shows no idle time either way."""

    def __init__(self, spare: SpareCores, *, fewest: int = 1, most: int = 2, keep_share: float = 0.8) -> None:
        self.spare = spare
        self.fewest, self.most = fewest, min(most, spare.cores)
        self.keep_share = keep_share
        self.used = fewest
        self._at = time.monotonic()
        self._cpu = time.process_time()

    def __call__(self, allowed: bool = True) -> int:
        now, cpu = time.monotonic(), time.process_time()
        wall, busy = now - self._at, cpu - self._cpu
        self._at, self._cpu = now, cpu
        spare = self.spare()
        if not allowed or self.most <= self.fewest:
            self.used = self.fewest
        elif self.used > self.fewest:
            if wall > 0 and busy < self.keep_share * self.used * wall:
                self.used = self.fewest  # another process wants these cores
        elif spare >= (self.most - self.fewest) * self.keep_share:
            self.used = self.most
        return self.used
