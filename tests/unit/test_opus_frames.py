"""Opus frames for WebRTC: settled silence is the encoder's own silent packet, sent without
running libopus, and speech after it encodes as before."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from openrealtime.audio import opus
from openrealtime.audio.opus import FRAME_SAMPLES, RATE, OpusFrameEncoder

LOOKAHEAD = 312
"""libopus's delay at 48 kHz, in samples."""


def decode(packets: list[bytes]) -> np.ndarray:
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format = "s16"
    decoder.layout = "stereo"
    decoder.sample_rate = RATE
    out = []
    for i, data in enumerate(packets):
        packet = av.Packet(data)
        packet.pts = i * FRAME_SAMPLES
        packet.time_base = fractions.Fraction(1, RATE)
        for frame in decoder.decode(packet):
            out.append(frame.to_ndarray().reshape(-1, 2)[:, 0])
    return np.concatenate(out)


def call(seed: int) -> list[np.ndarray]:
    """Speech-like bursts between silences, 20 ms frames at 48 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAME_SAMPLES) / RATE
    frames: list[np.ndarray] = []
    for burst in range(6):
        frames += [np.zeros(FRAME_SAMPLES, np.int16)] * int(rng.integers(1, 40))
        for k in range(int(rng.integers(5, 30))):
            tone = 6000 * np.sin(2 * np.pi * (200 + 50 * burst) * (t + k * 0.02))
            frames.append((tone + rng.normal(0, 300, FRAME_SAMPLES)).astype(np.int16))
    return frames


class EveryFrameEncoder(OpusFrameEncoder):
    def encode(self, pcm: np.ndarray) -> bytes:
        self._same_silence = 0  # never settled: libopus runs for every frame
        return super().encode(pcm)


def test_settled_silence_skips_the_encoder_and_sounds_the_same() -> None:
    frames = call(7)
    fast, full = OpusFrameEncoder(), EveryFrameEncoder()
    fast_packets = [fast.encode(f) for f in frames]
    full_packets = [full.encode(f) for f in frames]
    silent = [i for i, f in enumerate(frames) if not f.any()]
    assert fast.encoded < len(frames) - len(silent) // 2  # most silence was not encoded
    assert full.encoded == len(frames)
    # silence is the very packet the encoder would have made
    settled = [i for i in silent if i >= opus.SETTLE_FRAMES + 2 and not frames[i - 3].any()]
    assert settled and all(fast_packets[i] == full_packets[i] for i in settled)
    # and the call decodes as faithfully as with every frame encoded (a lossy codec: the two
    # differ where speech resumes from a settled encoder, not in how close they are)
    a, b = decode(fast_packets).astype(np.float64), decode(full_packets).astype(np.float64)
    assert len(a) == len(b) == len(frames) * FRAME_SAMPLES
    sent = np.concatenate(frames).astype(np.float64)[: len(a) - LOOKAHEAD]

    def snr_db(decoded: np.ndarray) -> float:
        error = decoded[LOOKAHEAD:] - sent
        return float(10 * np.log10(np.sum(sent**2) / np.sum(error**2)))

    assert snr_db(b) > 6  # aligned right: the codec's waveform fidelity on tone plus noise
    assert abs(snr_db(a) - snr_db(b)) < 0.5


def test_frames_must_be_20_ms() -> None:
    with pytest.raises(ValueError):
        OpusFrameEncoder().encode(np.zeros(480, np.int16))


# ---------------------------------------------------------------- decoding at 24 kHz


def test_the_callers_opus_decodes_straight_to_24_khz_mono() -> None:
    encoder, decoder = OpusFrameEncoder(), opus.OpusFrameDecoder(24000)
    t = np.arange(RATE) / RATE
    tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    pieces = [
        decoder.decode(encoder.encode(tone[i : i + FRAME_SAMPLES])) for i in range(0, RATE, FRAME_SAMPLES)
    ]
    assert all(len(piece) == 480 and piece.dtype == np.int16 for piece in pieces)
    heard = np.concatenate(pieces)[2400:].astype(np.float64)  # past the codec's start
    spectrum = np.abs(np.fft.rfft(heard * np.hanning(len(heard))))
    peak_hz = np.argmax(spectrum) * 24000 / len(heard)
    assert abs(peak_hz - 440) < 5
    assert 3500 < np.sqrt(np.mean(heard**2)) < 5000  # the tone's level (6000 / sqrt 2)


def test_a_corrupt_opus_packet_is_an_error_and_decoding_goes_on() -> None:
    encoder, decoder = OpusFrameEncoder(), opus.OpusFrameDecoder(24000)
    for corrupt in (bytes([0x03]), bytes([0x03, 0x00]), bytes([0xFF, 0xFF, 0xFF])):
        with pytest.raises(ValueError):
            decoder.decode(corrupt)
    assert len(decoder.decode(encoder.encode(np.zeros(FRAME_SAMPLES, np.int16)))) == 480
