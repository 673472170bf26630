"""The Realtime protocol's audio formats, converted at the session's edges.

A session works on one internal format, 24 kHz mono int16 (the protocol's own ``audio/pcm``).
Client audio in ``audio/pcm`` (24 kHz pcm16 LE), ``audio/pcmu`` or ``audio/pcma`` (8 kHz
G.711) is decoded to it on the way in and encoded from it on the way out. Timing fields on
the wire (``audio_start_ms``, truncation's ``audio_end_ms``) count in the *client's* format,
so durations are computed from byte counts here, exactly, never from resampled lengths.

Live audio is chunked: :class:`StreamDecoder`/:class:`StreamEncoder` carry resampler state
across chunks so that G.711's 8 kHz↔24 kHz conversion has no discontinuity at chunk edges.
For ``audio/pcm`` they are plain (zero-latency) byte↔sample views.
"""

from __future__ import annotations

import binascii
import sys
from fractions import Fraction
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from openrealtime.audio import g711
from openrealtime.audio.resample import DEFAULT_QUALITY, Quality, StreamingResampler, resample

__all__ = [
    "INTERNAL_RATE",
    "LEGACY_FORMAT_NAMES",
    "AudioFormatError",
    "FormatLike",
    "FormatType",
    "StreamDecoder",
    "StreamEncoder",
    "byte_count_for_ms",
    "bytes_per_ms",
    "bytes_per_sample",
    "check_audio_bytes",
    "decode",
    "decode_base64_audio",
    "duration_ms",
    "duration_ms_exact",
    "encode",
    "format_type",
    "sample_rate",
    "strict_b64decode",
]

INTERNAL_RATE = 24000
"""Sample rate of the session's internal int16 audio."""

FormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

LEGACY_FORMAT_NAMES: dict[str, FormatType] = {
    "pcm16": "audio/pcm",
    "g711_ulaw": "audio/pcmu",
    "g711_alaw": "audio/pcma",
}
"""Beta-era string names still sent by old clients, mapped to the GA format types."""

_BY_NAME: dict[str, FormatType] = {
    "audio/pcm": "audio/pcm",
    "audio/pcmu": "audio/pcmu",
    "audio/pcma": "audio/pcma",
    **LEGACY_FORMAT_NAMES,
}

_RATE: dict[FormatType, int] = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
_SAMPLE_BYTES: dict[FormatType, int] = {"audio/pcm": 2, "audio/pcmu": 1, "audio/pcma": 1}

PcmAudio = npt.NDArray[np.int16]


class _HasType(Protocol):
    @property
    def type(self) -> str: ...


FormatLike = str | _HasType
"""A format type string (GA or legacy name) or a format object with a ``type`` attribute."""


class AudioFormatError(ValueError):
    """Client audio that cannot be used; maps directly onto an ``error`` event.

    ``code`` and ``param`` follow the OpenAI error shape (``invalid_value`` on ``audio``).
    """

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = "audio") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


def format_type(fmt: FormatLike) -> FormatType:
    """Normalise a format (string, legacy name, or object with ``.type``) to its GA type."""
    name = fmt if isinstance(fmt, str) else fmt.type
    known = _BY_NAME.get(name)
    if known is not None:
        return known
    raise AudioFormatError(
        f"Invalid audio format {name!r}. Supported values are: 'audio/pcm', 'audio/pcmu', 'audio/pcma'.",
        param="format",
    )


def sample_rate(fmt: FormatLike) -> int:
    """Samples per second of the format on the wire (24000 or 8000)."""
    return _RATE[format_type(fmt)]


def bytes_per_sample(fmt: FormatLike) -> int:
    return _SAMPLE_BYTES[format_type(fmt)]


def bytes_per_ms(fmt: FormatLike) -> int:
    """Wire bytes per millisecond: 48 for ``audio/pcm``, 8 for G.711."""
    t = format_type(fmt)
    return _RATE[t] * _SAMPLE_BYTES[t] // 1000


def duration_ms_exact(fmt: FormatLike, n_bytes: int) -> Fraction:
    """Exact duration of ``n_bytes`` of wire audio, as a fraction of milliseconds."""
    if n_bytes < 0:
        raise ValueError(f"byte count must be non-negative, got {n_bytes}")
    return Fraction(n_bytes, bytes_per_ms(fmt))


def duration_ms(fmt: FormatLike, n_bytes: int) -> float:
    """Duration of ``n_bytes`` of wire audio in milliseconds (``bytes / bytes_per_ms``).

    This is the arithmetic clients use for truncation (agents-js: pcm16 ``bytes/2/rate*1000``,
    G.711 ``bytes/8``); take ``int()`` of it for the protocol's integer ms fields.
    """
    return float(duration_ms_exact(fmt, n_bytes))


def byte_count_for_ms(fmt: FormatLike, ms: float) -> int:
    """Wire bytes in the first ``ms`` milliseconds, rounded down to a whole sample."""
    if ms < 0:
        raise ValueError(f"duration must be non-negative, got {ms}")
    t = format_type(fmt)
    samples = int(Fraction(ms) * _RATE[t] / 1000)
    return samples * _SAMPLE_BYTES[t]


def strict_b64decode(data: str | bytes) -> bytes:
    """Decode standard base64 (RFC 4648 §4, with padding), rejecting anything else.

    Whitespace, URL-safe characters, missing, excess or misplaced padding, non-zero pad bits
    and trailing garbage are errors: each chunk must be valid on its own, and anything a
    standard encoder would not produce is more likely a client bug than audio.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError:
            raise AudioFormatError(
                "Invalid 'audio': expected base64-encoded audio bytes, found non-ASCII characters."
            ) from None
    else:
        raw = data
    if len(raw) % 4:
        raise AudioFormatError(
            f"Invalid 'audio': expected base64-encoded audio bytes with padding; "
            f"length {len(raw)} is not a multiple of 4."
        )
    try:
        decoded = binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error as exc:
        raise AudioFormatError(f"Invalid 'audio': expected base64-encoded audio bytes ({exc}).") from None
    if binascii.b2a_base64(decoded, newline=False) != raw:
        raise AudioFormatError(
            "Invalid 'audio': expected base64-encoded audio bytes "
            "(non-canonical encoding: excess padding or non-zero pad bits)."
        )
    return decoded


def check_audio_bytes(fmt: FormatLike, data: bytes | bytearray | memoryview) -> None:
    """Reject byte strings that are not whole samples (odd length for pcm16)."""
    t = format_type(fmt)
    if len(data) % _SAMPLE_BYTES[t]:
        raise AudioFormatError(
            f"Invalid 'audio': {t} is 16-bit PCM, so the decoded audio must be a whole number of "
            f"2-byte samples; got {len(data)} bytes."
        )


def decode_base64_audio(data: str | bytes, fmt: FormatLike) -> bytes:
    """Validate a base64 ``audio`` field for ``fmt`` and return its raw wire bytes."""
    raw = strict_b64decode(data)
    check_audio_bytes(fmt, raw)
    return raw


def _pcm16_from_bytes(data: bytes | bytearray | memoryview) -> PcmAudio:
    samples = np.frombuffer(data, dtype="<i2")
    return samples.astype(np.int16) if sys.byteorder != "little" else samples.copy()


def _pcm16_to_bytes(pcm: PcmAudio) -> bytes:
    return pcm.astype("<i2", copy=False).tobytes()


def _check_pcm(pcm: npt.NDArray[np.generic]) -> None:
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise TypeError(f"expected 1-D int16 audio, got {pcm.dtype} with shape {pcm.shape}")


def _g711_decode(t: FormatType, data: bytes | bytearray | memoryview) -> PcmAudio:
    return g711.ulaw_decode(data) if t == "audio/pcmu" else g711.alaw_decode(data)


def _g711_encode(t: FormatType, pcm: PcmAudio) -> bytes:
    codes = g711.ulaw_encode(pcm) if t == "audio/pcmu" else g711.alaw_encode(pcm)
    return codes.tobytes()


def decode(
    fmt: FormatLike, data: bytes | bytearray | memoryview, quality: Quality = DEFAULT_QUALITY
) -> PcmAudio:
    """Decode a whole buffer of wire audio to 24 kHz int16 (one-shot; not for live chunks)."""
    t = format_type(fmt)
    check_audio_bytes(t, data)
    if t == "audio/pcm":
        return _pcm16_from_bytes(data)
    return resample(_g711_decode(t, data), _RATE[t], INTERNAL_RATE, quality)


def encode(fmt: FormatLike, pcm: PcmAudio, quality: Quality = DEFAULT_QUALITY) -> bytes:
    """Encode a whole buffer of 24 kHz int16 to wire bytes (one-shot; not for live chunks)."""
    t = format_type(fmt)
    _check_pcm(pcm)
    if t == "audio/pcm":
        return _pcm16_to_bytes(pcm)
    return _g711_encode(t, resample(pcm, INTERNAL_RATE, _RATE[t], quality))


class StreamDecoder:
    """Wire chunks of one format → contiguous 24 kHz int16, continuous across chunks.

    For G.711 the 8→24 kHz resampler holds back a few tens of ms (see
    :mod:`openrealtime.audio.resample`); :meth:`flush` releases it at the end of a stream.
    Over a stream, the concatenated output equals :func:`decode` of the concatenated input.
    """

    def __init__(self, fmt: FormatLike, quality: Quality = DEFAULT_QUALITY) -> None:
        self.format: FormatType = format_type(fmt)
        self._resampler = (
            None
            if self.format == "audio/pcm"
            else StreamingResampler(_RATE[self.format], INTERNAL_RATE, np.int16, quality)
        )

    def decode(self, data: bytes | bytearray | memoryview) -> PcmAudio:
        """Decode the next chunk; raises :class:`AudioFormatError` on a partial pcm16 sample."""
        if self.format == "audio/pcm":
            check_audio_bytes(self.format, data)
            return _pcm16_from_bytes(data)
        assert self._resampler is not None
        out: PcmAudio = self._resampler.process(_g711_decode(self.format, data))
        return out

    def flush(self) -> PcmAudio:
        """End of stream: the held-back tail (empty for pcm16); the decoder is then reusable."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return np.asarray(self._resampler.flush(), dtype=np.int16)

    def reset(self) -> None:
        """Drop held-back audio (e.g. on ``input_audio_buffer.clear``)."""
        if self._resampler is not None:
            self._resampler.reset()


class StreamEncoder:
    """24 kHz int16 chunks → wire bytes of one format, continuous across chunks.

    Every returned chunk is whole samples, so each can go out as its own base64 delta.
    """

    def __init__(self, fmt: FormatLike, quality: Quality = DEFAULT_QUALITY) -> None:
        self.format: FormatType = format_type(fmt)
        self._resampler = (
            None
            if self.format == "audio/pcm"
            else StreamingResampler(INTERNAL_RATE, _RATE[self.format], np.int16, quality)
        )

    def encode(self, pcm: PcmAudio) -> bytes:
        """Encode the next chunk; may return fewer bytes than the chunk's duration (held back)."""
        _check_pcm(pcm)
        if self._resampler is None:
            return _pcm16_to_bytes(pcm)
        return _g711_encode(self.format, self._resampler.process(pcm))

    def flush(self) -> bytes:
        """End of stream: encode the held-back tail; the encoder is then reusable."""
        if self._resampler is None:
            return b""
        return _g711_encode(self.format, np.asarray(self._resampler.flush(), dtype=np.int16))

    def reset(self) -> None:
        """Drop held-back audio (e.g. on barge-in, when the rest of the response is discarded)."""
        if self._resampler is not None:
            self._resampler.reset()


class ExactDecoder:
    """Wire chunks of one format → 24 kHz int16 on the client's own clock.

    A G.711 byte becomes three samples, and output sample ``n`` is the sound at ``n / 24000``
    seconds of the client's audio, as :func:`decode` of everything appended would place it:
    the VAD, the turn detector and Whisper hear each turn exactly where the client's clock
    puts it (Whisper's window is 10 ms mel frames, and a 4 ms shift of a short turn changes
    its words). Each chunk is resampled together with the ``CONTEXT_SAMPLES`` before it; its
    last ``HOLD_SAMPLES`` wait for the next chunk, whose first samples their interpolation
    needs. So the output is continuous across chunks (55 dB SNR against resampling the whole
    signal at once, measured on noise) and ``HOLD_SAMPLES`` (4 ms) behind the bytes until
    :meth:`flush` releases them: the edge flushes before a commit or clear, so a committed
    buffer holds exactly the client's duration. (soxr's own stream would hold back up to
    60 ms and release it in bursts.)
    """

    CONTEXT_SAMPLES = 64
    HOLD_SAMPLES = 32

    def __init__(self, fmt: FormatLike, quality: Quality = DEFAULT_QUALITY) -> None:
        self.format: FormatType = format_type(fmt)
        self.quality: Quality = quality
        self._past = np.zeros(0, dtype=np.int16)
        """Wire-rate samples already released (the filter's history)."""
        self._held = np.zeros(0, dtype=np.int16)
        """Wire-rate samples decoded but not yet released."""

    @property
    def held_ms(self) -> float:
        """Client audio decoded but not yet released (0 for ``audio/pcm``)."""
        return len(self._held) * 1000 / _RATE[self.format]

    def decode(self, data: bytes | bytearray | memoryview) -> PcmAudio:
        check_audio_bytes(self.format, data)
        if self.format == "audio/pcm":
            return _pcm16_from_bytes(data)
        pending = np.concatenate([self._held, _g711_decode(self.format, data)])
        ready = len(pending) - self.HOLD_SAMPLES
        if ready <= 0:
            self._held = pending
            return np.zeros(0, dtype=np.int16)
        out = self._release(pending, ready)
        self._held = pending[ready:]
        return out

    def flush(self) -> PcmAudio:
        """Release the held samples (resampled without what would follow them)."""
        if not len(self._held):
            return np.zeros(0, dtype=np.int16)
        out = self._release(self._held, len(self._held))
        self._held = np.zeros(0, dtype=np.int16)
        return out

    def _release(self, pending: PcmAudio, count: int) -> PcmAudio:
        """The 24 kHz samples of the first ``count`` of ``pending``, with the past as context."""
        ratio = INTERNAL_RATE // _RATE[self.format]
        joined = np.concatenate([self._past, pending])
        upsampled = resample(joined, _RATE[self.format], INTERNAL_RATE, self.quality)
        start = len(self._past) * ratio
        out = np.asarray(upsampled[start : start + count * ratio], dtype=np.int16)
        self._past = joined[: len(self._past) + count][-self.CONTEXT_SAMPLES :]
        return out
