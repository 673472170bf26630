"""Sample-rate conversion (soxr), int16/float32 conversion and fixed-size framing.

A session's audio is 24 kHz pcm16 inside; the edges need 16 kHz (ASR, VAD, turn detection),
8 kHz (G.711 telephony), 22.05 kHz (Piper voices) and 48 kHz (WebRTC Opus). Live audio arrives
in arbitrary chunks, so the streaming resampler keeps soxr's filter state across chunks: a
chunk boundary then costs nothing audible, where resampling each chunk on its own would click.

soxr's streaming output is time-aligned with its input (the filter delay is compensated), so
output sample ``n`` is at ``n / out_rate`` seconds. It is also bursty: soxr works in blocks and
holds back up to ~37 ms at 24k→16k and ~73 ms at 8k↔24k (quality ``HQ``, 20 ms chunks; mean
about half of that), releasing the rest on ``flush``. ``MQ`` has the same latency; ``LQ``
halves it but rolls off audibly below 3.4 kHz at 8 kHz, so ``HQ`` is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "DEFAULT_QUALITY",
    "PRE_EMPHASIS",
    "AudioFrame",
    "AudioFramer",
    "Quality",
    "StreamingResampler",
    "downmix_to_float32",
    "float32_to_int16",
    "int16_to_float32",
    "resample",
]

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
DEFAULT_QUALITY: Quality = "HQ"

FloatAudio = npt.NDArray[np.float32]
PcmAudio = npt.NDArray[np.int16]
AudioT = TypeVar("AudioT", npt.NDArray[np.int16], npt.NDArray[np.float32])

_SUPPORTED_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))
_INT16_TO_FLOAT = np.float32(1.0 / 32768.0)


def int16_to_float32(pcm: npt.ArrayLike) -> FloatAudio:
    """int16 samples to float32 in [-1, 1) (divide by 32768, the usual convention)."""
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    scaled: FloatAudio = np.multiply(samples, _INT16_TO_FLOAT, dtype=np.float32)
    return scaled


def downmix_to_float32(pcm: PcmAudio, channels: int) -> FloatAudio:
    """Interleaved int16 frames to mono float32 in [-1, 1): the mean of the channels, in one
    pass (no int16 mono in between, so no rounding before the resampler)."""
    if channels <= 1:
        return int16_to_float32(pcm)
    usable = len(pcm) // channels * channels
    frames = pcm[:usable].reshape(-1, channels)
    mono: FloatAudio = np.add(frames[:, 0], frames[:, 1], dtype=np.float32)
    for channel in range(2, channels):
        np.add(mono, frames[:, channel], out=mono, dtype=np.float32)
    mono *= np.float32(1.0 / (32768.0 * channels))
    return mono


def float32_to_int16(audio: npt.ArrayLike) -> PcmAudio:
    """float samples to int16: scale by 32768, round to nearest, saturate.

    Exact inverse of :func:`int16_to_float32`; values beyond full scale clip instead of
    wrapping around.
    """
    samples = np.asarray(audio, dtype=np.float32)
    scaled = samples * np.float32(32768.0)
    np.rint(scaled, out=scaled)
    np.minimum(scaled, np.float32(32767.0), out=scaled)  # ufuncs in place: the per-packet path
    np.maximum(scaled, np.float32(-32768.0), out=scaled)
    return scaled.astype(np.int16)


def _check_rates(in_rate: int, out_rate: int) -> None:
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")


def _check_dtype(dtype: np.dtype[np.generic]) -> None:
    if dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"resampling supports int16 and float32 mono audio, got {dtype}")


def _to_float(audio: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> FloatAudio:
    if audio.dtype == np.int16:
        return int16_to_float32(audio)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _like(out: FloatAudio, dtype: np.dtype[np.int16] | np.dtype[np.float32]) -> Any:
    return float32_to_int16(out) if dtype == np.int16 else out


def resample(audio: AudioT, in_rate: int, out_rate: int, quality: Quality = DEFAULT_QUALITY) -> AudioT:
    """Resample a whole mono buffer at once; int16 in gives int16 out (rounded, saturated).

    soxr always runs in float32 here: its own int16 output adds dither, which would make
    the result depend on how a stream was chunked.
    """
    _check_rates(in_rate, out_rate)
    _check_dtype(audio.dtype)
    if audio.ndim != 1:
        raise ValueError(f"expected mono (1-D) audio, got shape {audio.shape}")
    if in_rate == out_rate:
        return audio.copy()
    if audio.size == 0:
        return audio[:0].copy()
    out: FloatAudio = soxr.resample(_to_float(audio), in_rate, out_rate, quality=quality)
    result: AudioT = _like(out, audio.dtype)
    return result


class StreamingResampler:
    """One continuous mono signal resampled chunk by chunk, without clicks at boundaries.

    ``process`` returns whatever output soxr has released so far (possibly nothing for a
    small chunk); ``flush`` releases the tail at the end of the signal and readies the
    resampler for a new, unrelated signal. Over a whole signal the output equals
    :func:`resample` of the concatenated input, sample for sample, however it was chunked.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        dtype: type[np.int16] | type[np.float32] = np.float32,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        _check_rates(in_rate, out_rate)
        if dtype not in (np.int16, np.float32):
            raise TypeError(f"resampling supports int16 and float32 mono audio, got {dtype}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.dtype: np.dtype[np.int16] | np.dtype[np.float32] = (
            np.dtype(np.int16) if dtype is np.int16 else np.dtype(np.float32)
        )
        self.quality: Quality = quality
        self._stream: soxr.ResampleStream | None = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    def _check(self, chunk: npt.NDArray[np.generic]) -> None:
        if chunk.dtype != self.dtype:
            raise TypeError(f"this resampler takes {self.dtype} audio, got {chunk.dtype}")
        if chunk.ndim != 1:
            raise ValueError(f"expected mono (1-D) audio, got shape {chunk.shape}")

    def process(self, chunk: AudioT) -> AudioT:
        """Feed the next chunk; return the output released so far."""
        self._check(chunk)
        if self._stream is None:
            return chunk.copy()
        out: FloatAudio = self._stream.resample_chunk(_to_float(chunk), last=False)
        if not out.size:  # soxr works in blocks: most small chunks release nothing
            empty: AudioT = np.zeros(0, dtype=self.dtype)
            return empty
        result: AudioT = _like(out, self.dtype)
        return result

    def flush(self) -> npt.NDArray[np.int16] | npt.NDArray[np.float32]:
        """End of signal: return the held-back tail and reset for a new signal."""
        if self._stream is None:
            return np.zeros(0, dtype=self.dtype)
        tail: FloatAudio = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        result: npt.NDArray[np.int16] | npt.NDArray[np.float32] = _like(tail, self.dtype)
        return result

    def reset(self) -> None:
        """Drop any held-back audio and state (e.g. after the input buffer is cleared)."""
        if self._stream is not None:
            self._stream.clear()


PRE_EMPHASIS = 0.97


@dataclass(frozen=True)
class AudioFrame:
    """A fixed-size frame, where it sits on the input's clock (ms), and its level.

    ``level_db`` is the mean power of the pre-emphasised frame (``x[n] - 0.97 x[n-1]``) in dB
    relative to full scale: pre-emphasis lifts weak fricatives and suppresses rumble and hum,
    which is what an energy-based speech edge needs.
    """

    samples: FloatAudio
    start_ms: float
    end_ms: float
    level_db: float


class AudioFramer:
    """Resample a live int16 stream to ``out_rate`` float32 and cut it into fixed frames.

    This is the front of a VAD: 24 kHz session audio in, 512-sample 16 kHz frames out, each
    stamped with its position on the input clock (``start_ms`` of the first frame is
    ``origin_ms``; frames are contiguous) and its level. Deterministic and I/O free: the
    caller runs the model on each frame.

    Digital silence (a muted microphone) skips the resampler once ``SETTLED_SILENCE_S`` of it
    has gone in: the resampler then holds only zeros, so a silent chunk gives exactly its
    length of zeros at ``out_rate``, and the zeros it still holds follow when sound returns.
    The frames are the same, sample for sample.
    """

    SETTLED_SILENCE_S = 0.2

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        frame_samples: int,
        *,
        origin_ms: float = 0.0,
        quality: Quality = DEFAULT_QUALITY,
    ) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.frame_samples = frame_samples
        self._resampler = StreamingResampler(in_rate, out_rate, np.float32, quality)
        self._origin_ms = origin_ms
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_out = 0
        self._last_sample = 0.0
        self._silent_samples = 0
        """Input samples of digital silence in a row."""

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.frame_samples / self.out_rate

    @property
    def next_frame_start_ms(self) -> float:
        """Input-clock time at which the next emitted frame starts."""
        return self._origin_ms + self._frames_out * self.frame_ms

    def push(self, pcm: PcmAudio) -> list[AudioFrame]:
        """Feed int16 input audio; return every whole frame now available."""
        if pcm.any():
            self._silent_samples = 0
        else:
            settled = self._silent_samples >= self.SETTLED_SILENCE_S * self.in_rate
            self._silent_samples += len(pcm)
            if settled and (len(pcm) * self.out_rate) % self.in_rate == 0:
                return self._cut(np.zeros(len(pcm) * self.out_rate // self.in_rate, dtype=np.float32))
        return self._cut(self._resampler.process(int16_to_float32(pcm)))

    def flush(self) -> list[AudioFrame]:
        """End of input: release the resampler tail, zero-padding a last partial frame."""
        frames = self._cut(np.asarray(self._resampler.flush(), dtype=np.float32))
        if self._pending.size:
            last = np.zeros(self.frame_samples, dtype=np.float32)
            last[: self._pending.size] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            frames.append(self._frame(last))
        return frames

    def reset(self, origin_ms: float) -> None:
        """Forget buffered audio and restart the frame clock at ``origin_ms``."""
        self._resampler.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._origin_ms = origin_ms
        self._frames_out = 0
        self._last_sample = 0.0
        self._silent_samples = 0

    def _frame(self, samples: FloatAudio) -> AudioFrame:
        start = self.next_frame_start_ms
        self._frames_out += 1
        x = samples.astype(np.float64)
        emphasised = np.empty_like(x)
        emphasised[0] = x[0] - PRE_EMPHASIS * self._last_sample
        emphasised[1:] = x[1:] - PRE_EMPHASIS * x[:-1]
        self._last_sample = float(x[-1])
        level = 10.0 * math.log10(float(np.mean(emphasised * emphasised)) + 1e-12)
        return AudioFrame(samples=samples, start_ms=start, end_ms=start + self.frame_ms, level_db=level)

    def _cut(self, audio: FloatAudio) -> list[AudioFrame]:
        if audio.size == 0:
            return []
        buf = np.concatenate((self._pending, audio)) if self._pending.size else audio
        n = buf.size // self.frame_samples
        frames = [
            self._frame(buf[i * self.frame_samples : (i + 1) * self.frame_samples].copy()) for i in range(n)
        ]
        self._pending = buf[n * self.frame_samples :].copy()
        return frames
