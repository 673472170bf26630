"""Opus for WebRTC: encoding 20 ms frames (libopus through PyAV), and decoding the caller's
packets straight to 24 kHz mono (libopus itself, ``OpusFrameDecoder``).

The settings are the ones aiortc's own encoder uses (48 kHz, stereo, 96 kb/s, ``voip``), so
what the caller hears is what aiortc would have sent. A call is mostly silence, and libopus
spends about as long on 20 ms of silence as on speech; but once it has settled, it encodes
every silent frame into the same few bytes. So after ``SETTLE_FRAMES`` silent frames that
came out identical, silence is that packet without running the encoder. The decoder gets the
same packets either way; the encoder resumes from its settled state when sound returns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

PcmAudio = npt.NDArray[np.int16]

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
BIT_RATE = 96000
SETTLE_FRAMES = 5
"""Identical silent packets in a row after which silence is sent without encoding."""


class OpusFrameEncoder:
    """Mono int16 frames of 20 ms at 48 kHz → one Opus packet each (a stereo stream, both
    channels the same)."""

    def __init__(self) -> None:
        codec = av.CodecContext.create("libopus", "w")
        assert isinstance(codec, av.AudioCodecContext)
        codec.bit_rate = BIT_RATE
        codec.format = "s16"
        codec.layout = "stereo"
        codec.options = {"application": "voip"}
        codec.sample_rate = RATE
        codec.time_base = fractions.Fraction(1, RATE)
        self._codec = codec
        self._stereo = np.zeros((1, 2 * FRAME_SAMPLES), dtype=np.int16)
        self._pts = 0
        self._silence: bytes | None = None
        self._same_silence = 0
        self.encoded = 0
        """Frames that ran through libopus (the rest were settled silence)."""
        self.settled = False
        """The last frame was settled silence (its packet the cached one, not encoded)."""

    def encode(self, pcm: PcmAudio) -> bytes:
        """The packet for one frame (``FRAME_SAMPLES`` samples)."""
        if len(pcm) != FRAME_SAMPLES:
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {len(pcm)}")
        silent = not pcm.any()
        self.settled = silent and self._same_silence >= SETTLE_FRAMES and self._silence is not None
        if self.settled and self._silence is not None:
            return self._silence
        self._stereo[0, 0::2] = pcm
        self._stereo[0, 1::2] = pcm
        frame = av.AudioFrame.from_ndarray(self._stereo, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = self._codec.time_base
        self._pts += FRAME_SAMPLES
        packet = b"".join(bytes(p) for p in self._codec.encode(frame))
        self.encoded += 1
        if not silent:
            self._same_silence = 0
        elif packet == self._silence:
            self._same_silence += 1
        else:
            self._silence, self._same_silence = packet, 1
        return packet


# ---------------------------------------------------------------- decoding


class OpusFrameDecoder:
    """Opus packets → mono int16 at ``rate``, straight from libopus.

    libopus decodes at 8, 12, 16, 24 or 48 kHz and mixes a stereo stream down itself, so the
    caller's audio comes out at the session's 24 kHz in one step: FFmpeg's wrapper always
    gives 48 kHz (then resampled, about as costly as the decoding), and a per-packet
    ``AudioFrame`` besides. The library is the system's libopus or the copy PyAV ships with;
    ``available()`` says whether either loads.
    """

    MAX_FRAME_MS = 120

    def __init__(self, rate: int = 24000) -> None:
        lib = _libopus()
        if lib is None:
            raise RuntimeError("libopus is not available")
        self._lib = lib
        self.rate = rate
        error = ctypes.c_int(0)
        self._state = lib.opus_decoder_create(rate, 1, ctypes.byref(error))
        if error.value != 0 or not self._state:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        self._capacity = rate * self.MAX_FRAME_MS // 1000
        self._out = np.empty(self._capacity, dtype=np.int16)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))

    @staticmethod
    def available() -> bool:
        return _libopus() is not None

    def decode(self, packet: bytes) -> PcmAudio:
        """The samples of one packet (a copy). Raises ``ValueError`` for a corrupt packet."""
        count = self._lib.opus_decode(self._state, packet, len(packet), self._out_pointer, self._capacity, 0)
        if count < 0:
            raise ValueError(f"undecodable Opus packet (libopus error {count})")
        return self._out[:count].copy()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state:
            self._lib.opus_decoder_destroy(state)
            self._state = None


_LIBOPUS: list[ctypes.CDLL | None] = []


def _libopus() -> ctypes.CDLL | None:
    """libopus with its decoder functions typed, loaded once (None when there is none)."""
    if _LIBOPUS:
        return _LIBOPUS[0]
    candidates: list[str] = []
    system = ctypes.util.find_library("opus")
    if system:
        candidates.append(system)
    bundled = Path(av.__file__).resolve().parent.parent / "av.libs"
    candidates.extend(str(path) for path in sorted(bundled.glob("libopus*.so*")))
    lib: ctypes.CDLL | None = None
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
            lib.opus_decoder_create.restype = ctypes.c_void_p
            break
        except (OSError, AttributeError):
            lib = None
    if lib is not None:
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.POINTER(ctypes.c_int16),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    _LIBOPUS.append(lib)
    return lib
