"""Audio at the edge of the media transports (WebRTC, SIP): real-time pacing of outgoing
frames, rate conversion to the codec's rate, and caller audio to the session's 24 kHz PCM.

What is played and when it was heard is the runtime's (runtime/playback.py): a transport
pulls 20 ms frames from its session at the pace ``FramePacer`` sets and sends them. Nothing
here does I/O or reads a clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ..audio import formats
from ..audio.resample import DEFAULT_QUALITY, Quality, StreamingResampler

PcmAudio = npt.NDArray[np.int16]

FRAME_MS = 20


class FramePacer:
    """Real-time pacing of fixed-length frames against ``clock`` (seconds).

    ``next_delay`` says how long to wait before the next frame is due. A sender that fell
    more than ``max_lag_ms`` behind (a stalled event loop) resynchronises instead of bursting.
    """

    def __init__(self, clock: Callable[[], float], frame_ms: int = FRAME_MS, max_lag_ms: int = 200) -> None:
        self.clock = clock
        self.frame_s = frame_ms / 1000
        self.max_lag_s = max_lag_ms / 1000
        self._origin: float | None = None
        self.frames = 0

    def next_delay(self) -> float:
        now = self.clock()
        if self._origin is None:
            self._origin = now
        due = self._origin + self.frames * self.frame_s
        if now - due > self.max_lag_s:
            self._origin = now - self.frames * self.frame_s
            due = now
        self.frames += 1
        return max(0.0, due - now)


def _quality(in_rate: int, out_rate: int) -> Quality:
    """``LQ`` between 24 and 48 kHz: flat to ~11 kHz (all of speech) and ~1 ms of resampler
    delay instead of ~30 ms with ``HQ``; ``HQ`` elsewhere (its roll-off matters at 8 kHz)."""
    return "LQ" if {in_rate, out_rate} == {formats.INTERNAL_RATE, 48000} else DEFAULT_QUALITY


class RateConverter:
    """Mono int16 at one rate → another, in exact ``frame`` sized pieces (resampler latency is
    absorbed by a small FIFO that starts with silence)."""

    def __init__(self, in_rate: int, out_rate: int, frame_ms: int = FRAME_MS) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.frame_samples = out_rate * frame_ms // 1000
        self._resampler = (
            StreamingResampler(in_rate, out_rate, np.int16, _quality(in_rate, out_rate))
            if in_rate != out_rate
            else None
        )
        self._fifo = np.zeros(0, dtype=np.int16)

    def convert(self, pcm: PcmAudio) -> PcmAudio:
        """One frame at ``out_rate`` for one frame of input."""
        if self._resampler is None:
            return pcm
        self._fifo = np.concatenate([self._fifo, np.asarray(self._resampler.process(pcm), dtype=np.int16)])
        if len(self._fifo) < self.frame_samples:
            pad = np.zeros(self.frame_samples - len(self._fifo), dtype=np.int16)
            self._fifo = np.concatenate([pad, self._fifo])
        out, self._fifo = self._fifo[: self.frame_samples], self._fifo[self.frame_samples :]
        return out


class InboundAudio:
    """Caller audio from a media transport (any rate, mono or interleaved channels) → 24 kHz
    mono PCM, continuous across packets."""

    def __init__(self) -> None:
        self._rate = 0
        self._resampler: StreamingResampler | None = None

    def convert(self, samples: PcmAudio, rate: int, channels: int) -> PcmAudio:
        mono = samples if channels <= 1 else _downmix(samples, channels)
        if rate != self._rate:
            self._rate = rate
            self._resampler = (
                StreamingResampler(
                    rate, formats.INTERNAL_RATE, np.int16, _quality(rate, formats.INTERNAL_RATE)
                )
                if rate != formats.INTERNAL_RATE
                else None
            )
        if self._resampler is None:
            return np.asarray(mono, dtype=np.int16)
        return np.asarray(self._resampler.process(mono), dtype=np.int16)


def _downmix(samples: PcmAudio, channels: int) -> PcmAudio:
    usable = len(samples) // channels * channels
    frames = samples[:usable].reshape(-1, channels).astype(np.int32)
    mixed: PcmAudio = (frames.sum(axis=1) // channels).astype(np.int16)
    return mixed
