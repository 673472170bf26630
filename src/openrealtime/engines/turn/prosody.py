"""How the voice ends: pitch and energy over the last ~300 ms of speech before a pause.

Speakers who finish a statement tend to let pitch and loudness fall at the end; a speaker who
pauses to think, or between clauses, tends to hold them. This module measures that on the
turn's 16 kHz audio up to the end of speech, cheaply (about 1 ms of CPU per call):

* pitch per 40 ms window (10 ms hop) by normalised autocorrelation between 70 and 400 Hz;
  a window is voiced when its autocorrelation peak is at least 0.45;
* ``pitch_end_st``: the median pitch of the voiced windows in the last ``tail_ms``, in
  semitones relative to the median pitch of the whole turn (negative: the voice ended low);
* ``pitch_slope_st_per_s``: the least-squares slope of the pitch over those windows;
* ``energy_end_db``: the mean level of the last ``tail_ms`` relative to the turn's loud
  (voiced) windows (negative: the voice faded).

:func:`end_probability` maps them to a probability with fixed, hand-set weights (it is one
input of :mod:`openrealtime.engines.turn.end_of_turn`, not a detector on its own); it returns
``None`` when the tail holds too little voiced audio to say anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ProsodyFeatures", "end_probability", "prosody_at_end"]

SAMPLE_RATE = 16_000
_WINDOW = 640  # 40 ms
_HOP = 160  # 10 ms
_MIN_LAG = SAMPLE_RATE // 400
_MAX_LAG = SAMPLE_RATE // 70
_VOICED = 0.45


@dataclass(frozen=True)
class ProsodyFeatures:
    """Pitch and energy at the end of a stretch of speech (see the module docs)."""

    pitch_end_st: float | None
    pitch_slope_st_per_s: float | None
    energy_end_db: float
    voiced_tail_windows: int


def _pitch(window: npt.NDArray[np.float64]) -> float | None:
    x = window - window.mean()
    energy = float(np.dot(x, x))
    if energy <= 1e-9:
        return None
    n = 1 << math.ceil(math.log2(2 * x.size))
    spectrum = np.fft.rfft(x, n)
    corr = np.fft.irfft(spectrum * np.conj(spectrum), n)[: _MAX_LAG + 1]
    # normalise by the overlap so long lags are not penalised
    corr = corr / (energy * (x.size - np.arange(corr.size)) / x.size)
    segment = corr[_MIN_LAG : _MAX_LAG + 1]
    lag = int(np.argmax(segment)) + _MIN_LAG
    if corr[lag] < _VOICED:
        return None
    # the first strong peak guards against octave errors
    for candidate in range(_MIN_LAG, lag):
        if (
            corr[candidate] >= 0.9 * corr[lag]
            and corr[candidate] >= corr[candidate - 1]
            and corr[candidate] >= corr[candidate + 1]
        ):
            lag = candidate
            break
    return SAMPLE_RATE / lag


def prosody_at_end(audio: npt.ArrayLike, *, tail_ms: float = 300.0) -> ProsodyFeatures:
    """Features of the last ``tail_ms`` of ``audio`` (16 kHz mono, ending where speech ended)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < _WINDOW:
        return ProsodyFeatures(None, None, 0.0, 0)
    starts = range(0, x.size - _WINDOW + 1, _HOP)
    levels = []
    pitches: list[float | None] = []
    for start in starts:
        window = x[start : start + _WINDOW]
        levels.append(10.0 * math.log10(float(np.mean(window * window)) + 1e-12))
        pitches.append(_pitch(window))
    level = np.asarray(levels)
    tail = max(1, round(tail_ms / 10.0))
    loud = np.percentile(level, 80)
    energy_end = float(np.mean(level[-tail:]) - loud)
    voiced = [(i, p) for i, p in enumerate(pitches) if p is not None]
    if len(voiced) < 3:
        return ProsodyFeatures(None, None, energy_end, 0)
    reference = float(np.median([p for _, p in voiced]))
    first_tail = len(pitches) - tail
    tail_voiced = [(i, 12.0 * math.log2(p / reference)) for i, p in voiced if i >= first_tail]
    if len(tail_voiced) < 3:
        return ProsodyFeatures(None, None, energy_end, len(tail_voiced))
    times = np.asarray([i * _HOP / SAMPLE_RATE for i, _ in tail_voiced])
    semis = np.asarray([s for _, s in tail_voiced])
    slope = float(np.polyfit(times, semis, 1)[0]) if np.ptp(times) > 0 else 0.0
    return ProsodyFeatures(float(np.median(semis)), slope, energy_end, len(tail_voiced))


def end_probability(features: ProsodyFeatures) -> float | None:
    """A rough probability that the voice ended a statement (None: not enough voiced tail).

    A final pitch 3 semitones below the turn's median, falling, and a level 10 dB below the
    loud part each push towards "finished"; held or rising pitch towards "not yet".
    """
    if features.pitch_end_st is None or features.pitch_slope_st_per_s is None:
        return None
    slope = max(-40.0, min(40.0, features.pitch_slope_st_per_s))
    score = -0.35 * features.pitch_end_st - 0.03 * slope - 0.06 * (features.energy_end_db + 6.0)
    return 1.0 / (1.0 + math.exp(-score))
