"""A client without echo cancellation, simulated: the answer comes back through a room.

Used by the echo benchmark and tests: the assistant's answer audio is delayed (network,
playout buffer, loudspeaker), coloured by a small loudspeaker and a room (a direct path,
a few early reflections and an exponentially decaying diffuse tail), and set to a level
relative to the playback, as a laptop or speakerphone microphone picks it up.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["echo_of", "mix_at", "rms_db", "room_impulse_response"]

FloatAudio = npt.NDArray[np.float32]


def rms_db(audio: npt.ArrayLike, active_db: float = -50.0, block: int = 320) -> float:
    """Level of the active part of ``audio`` (blocks above ``active_db``), in dBFS."""
    x = np.asarray(audio, dtype=np.float64)
    usable = x[: x.size // block * block].reshape(-1, block)
    if usable.size == 0:
        return -100.0
    power = (usable**2).mean(axis=1)
    active = power[power > 10 ** (active_db / 10)]
    chosen = active if active.size else power
    return float(10 * np.log10(chosen.mean() + 1e-12))


def room_impulse_response(rate: int, rt60_s: float, seed: int) -> FloatAudio:
    """Direct path, 4 early reflections (2-25 ms) and a diffuse tail decaying 60 dB in
    ``rt60_s``, through a loudspeaker that rolls off below ~200 Hz."""
    rng = np.random.default_rng(seed)
    n = int(rate * min(rt60_s, 0.6))
    h = np.zeros(n, dtype=np.float64)
    h[0] = 1.0
    for _ in range(4):
        tap = int(rng.uniform(0.002, 0.025) * rate)
        h[tap] += rng.uniform(0.15, 0.5) * rng.choice([-1.0, 1.0])
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)
    tail[: int(0.005 * rate)] = 0.0
    h += 0.12 * tail
    speaker = np.array([1.0, -0.92])  # a small loudspeaker: little below ~200 Hz
    h = np.convolve(h, speaker)[:n]
    out: FloatAudio = (h / np.sqrt((h**2).sum())).astype(np.float32)
    return out


def echo_of(far: FloatAudio, rate: int, *, delay_ms: float, level_db: float, ir: FloatAudio) -> FloatAudio:
    """The microphone's copy of ``far``: ``delay_ms`` late, through ``ir``, ``level_db``
    relative to ``far``'s active level. Same length as ``far``."""
    delay = round(delay_ms * rate / 1000)
    wet = np.convolve(far.astype(np.float64), ir.astype(np.float64))[: far.size]
    wet = np.concatenate((np.zeros(delay), wet))[: far.size]
    gain = 10 ** ((rms_db(far) + level_db - rms_db(wet)) / 20)
    return (wet * gain).astype(np.float32)


def mix_at(base: FloatAudio, clip: FloatAudio, start: int, level_db: float) -> FloatAudio:
    """``base`` with ``clip`` added from sample ``start``, scaled to ``level_db`` dBFS active level."""
    out = base.astype(np.float32).copy()
    gain = 10 ** ((level_db - rms_db(clip)) / 20)
    end = min(out.size, start + clip.size)
    out[start:end] += (clip[: end - start] * gain).astype(np.float32)
    return out
