"""The pure arithmetic of the benchmark: percentiles, playback underruns, the sweep's stop rule.

Kept free of sockets and clocks so that each rule can be checked with synthetic numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "LevelVerdict",
    "PlaybackClock",
    "judge_level",
    "percentile",
    "summarize",
    "sweep_levels",
]


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 1]): the smallest value with at least ``q`` of the
    values at or below it. Conservative on small samples (p95 of fewer than 20 is the maximum),
    which is what a stop rule wants; ``None`` for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, mean and max of ``values``, to 0.1 (``None`` where there are none)."""

    def tenth(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "n": len(values),
        "p50": tenth(percentile(values, 0.5)),
        "p95": tenth(percentile(values, 0.95)),
        "mean": tenth(statistics.fmean(values)) if values else None,
        "max": tenth(max(values)) if values else None,
    }


@dataclass
class PlaybackClock:
    """A client that plays each response's audio in real time from its first delta.

    Playback of a delta starts when it arrives or when everything before it has been played,
    whichever is later. A delta that arrives after the playback of everything before it has
    finished is an underrun: the listener heard a gap of ``arrival - playback_end``.
    """

    underruns: int = 0
    gap_s: float = 0.0
    played_s: float = 0.0
    playback_end: float | None = None

    def add(self, arrival: float, duration_s: float) -> bool:
        """Account one delta of ``duration_s`` seconds arriving at ``arrival``; True on underrun."""
        underrun = False
        if self.playback_end is None:
            start = arrival
        elif arrival > self.playback_end:
            underrun = True
            self.underruns += 1
            self.gap_s += arrival - self.playback_end
            start = arrival
        else:
            start = self.playback_end
        self.playback_end = start + duration_s
        self.played_s += duration_s
        return underrun


def sweep_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``max_concurrency``, which is included even if not a power of two."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    levels = []
    level = 1
    while level < max_concurrency:
        levels.append(level)
        level *= 2
    levels.append(max_concurrency)
    return levels


@dataclass(frozen=True)
class LevelVerdict:
    """Whether a concurrency level held, and if not, why (the sweep stops at the first miss)."""

    held: bool
    reason: str


def judge_level(
    voice_to_voice_ms: Sequence[float], *, turns: int, underruns: int, p95_limit_ms: float
) -> LevelVerdict:
    """A level holds when every one of its ``turns`` got an answer, there was no underrun and
    the p95 voice-to-voice latency is within the limit."""
    answered = len(voice_to_voice_ms)
    if turns == 0 or answered < turns:
        return LevelVerdict(False, f"{turns - answered} of {turns} turns got no audio answer")
    if underruns:
        return LevelVerdict(False, f"{underruns} audio underrun(s)")
    p95 = percentile(voice_to_voice_ms, 0.95)
    assert p95 is not None
    if p95 > p95_limit_ms:
        return LevelVerdict(False, f"p95 {p95:.0f} ms > {p95_limit_ms:.0f} ms")
    return LevelVerdict(True, f"p95 {p95:.0f} ms <= {p95_limit_ms:.0f} ms, no underruns")
