"""Opus encoding of 20 ms frames for WebRTC (libopus through PyAV).

The settings are the ones aiortc's own encoder uses (48 kHz, stereo, 96 kb/s, ``voip``), so
what the caller hears is what aiortc would have sent. A call is mostly silence, and libopus
spends about as long on 20 ms of silence as on speech; but once it has settled, it encodes
every silent frame into the same few bytes. So after ``SETTLE_FRAMES`` silent frames that
came out identical, silence is that packet without running the encoder. The decoder gets the
same packets either way; the encoder resumes from its settled state when sound returns.
"""

from __future__ import annotations

import fractions

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

    def encode(self, pcm: PcmAudio) -> bytes:
        """The packet for one frame (``FRAME_SAMPLES`` samples)."""
        if len(pcm) != FRAME_SAMPLES:
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {len(pcm)}")
        silent = not pcm.any()
        if silent and self._same_silence >= SETTLE_FRAMES and self._silence is not None:
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
