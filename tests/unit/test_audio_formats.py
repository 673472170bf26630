"""Session audio formats, base64 validation, resampling and framing."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrealtime.audio import formats
from openrealtime.audio.formats import AudioFormatError
from openrealtime.audio.resample import (
    AudioFramer,
    StreamingResampler,
    float32_to_int16,
    int16_to_float32,
    resample,
)

FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
RATE_PAIRS = [
    (24000, 16000),
    (16000, 24000),
    (24000, 8000),
    (8000, 24000),
    (22050, 24000),
    (48000, 24000),
    (24000, 48000),
]


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return float32_to_int16(amplitude * np.sin(2 * np.pi * freq * t))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = test.astype(np.float64) - ref
    return float(10 * np.log10((ref**2).sum() / max((noise**2).sum(), 1e-9)))


def split(data: bytes | np.ndarray, cuts: list[int]) -> list:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------- format facts


@dataclass
class FormatObject:
    type: str


@pytest.mark.parametrize(
    ("given_fmt", "expected"),
    [
        ("audio/pcm", "audio/pcm"),
        ("audio/pcmu", "audio/pcmu"),
        ("audio/pcma", "audio/pcma"),
        ("pcm16", "audio/pcm"),
        ("g711_ulaw", "audio/pcmu"),
        ("g711_alaw", "audio/pcma"),
        (FormatObject("audio/pcmu"), "audio/pcmu"),
    ],
)
def test_format_type_normalises_names_and_objects(given_fmt: object, expected: str) -> None:
    assert formats.format_type(given_fmt) == expected  # type: ignore[arg-type]


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(AudioFormatError) as info:
        formats.format_type("audio/opus")
    assert info.value.code == "invalid_value"
    assert "audio/opus" in info.value.message


def test_rates_and_bytes_per_ms() -> None:
    assert [formats.sample_rate(f) for f in FORMATS] == [24000, 8000, 8000]
    assert [formats.bytes_per_ms(f) for f in FORMATS] == [48, 8, 8]
    assert [formats.bytes_per_sample(f) for f in FORMATS] == [2, 1, 1]


def test_durations_are_exact_from_byte_counts() -> None:
    assert formats.duration_ms("audio/pcm", 48_000) == 1000.0
    assert formats.duration_ms("audio/pcmu", 8_000) == 1000.0
    assert formats.duration_ms_exact("audio/pcm", 2) == Fraction(1, 24)
    assert formats.duration_ms_exact("audio/pcma", 3) == Fraction(3, 8)
    # The client-side arithmetic (agents-js) for truncation: bytes/2/rate*1000 and bytes/8.
    assert formats.duration_ms("audio/pcm", 123_456) == pytest.approx(123_456 / 2 / 24000 * 1000)
    with pytest.raises(ValueError):
        formats.duration_ms("audio/pcm", -1)


def test_byte_count_for_ms_rounds_down_to_whole_samples() -> None:
    assert formats.byte_count_for_ms("audio/pcm", 1000) == 48_000
    assert formats.byte_count_for_ms("audio/pcm", 0.03) == 0
    assert formats.byte_count_for_ms("audio/pcm", 0.05) == 2
    assert formats.byte_count_for_ms("audio/pcmu", 12.5) == 100
    assert formats.byte_count_for_ms("audio/pcmu", 12.49) == 99


# --------------------------------------------------------------------------- base64


@given(st.binary(max_size=300))
def test_strict_base64_accepts_standard_encodings(data: bytes) -> None:
    encoded = base64.b64encode(data)
    assert formats.strict_b64decode(encoded) == data
    assert formats.strict_b64decode(encoded.decode()) == data


@pytest.mark.parametrize(
    "bad",
    [
        "AAA",  # missing padding
        "AA",  # missing padding
        "AAAA\n",  # whitespace
        " AAAA",
        "AA-_",  # URL-safe alphabet
        "AA=A",  # padding in the middle
        "AA==AAAA",  # data after padding
        "AAAA====",  # excess padding
        "AB==",  # non-zero pad bits
        "====",
        "AAAé",  # not ASCII
        "A===",
    ],
)
def test_strict_base64_rejects_everything_else(bad: str) -> None:
    with pytest.raises(AudioFormatError) as info:
        formats.strict_b64decode(bad)
    assert info.value.code == "invalid_value"
    assert info.value.param == "audio"
    assert "base64" in info.value.message


def test_empty_base64_is_empty_audio() -> None:
    assert formats.decode_base64_audio("", "audio/pcm") == b""


def test_odd_length_pcm16_is_rejected_but_odd_g711_is_fine() -> None:
    three_bytes = base64.b64encode(b"\x01\x02\x03").decode()
    with pytest.raises(AudioFormatError) as info:
        formats.decode_base64_audio(three_bytes, "audio/pcm")
    assert "2-byte samples" in info.value.message
    assert info.value.code == "invalid_value"
    assert formats.decode_base64_audio(three_bytes, "audio/pcmu") == b"\x01\x02\x03"
    assert formats.decode_base64_audio(base64.b64encode(b"\x01\x02"), "audio/pcm") == b"\x01\x02"


# --------------------------------------------------------------------------- one-shot codecs


def test_pcm16_is_little_endian_and_lossless() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768, 258], dtype=np.int16)
    wire = formats.encode("audio/pcm", pcm)
    assert wire == b"\x00\x00\x01\x00\xff\xff\xff\x7f\x00\x80\x02\x01"
    assert np.array_equal(formats.decode("audio/pcm", wire), pcm)
    with pytest.raises(AudioFormatError):
        formats.decode("audio/pcm", b"\x00\x00\x01")


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_roundtrip_keeps_duration_and_quality(fmt: str) -> None:
    pcm = sine(440, 1.0, 24000, 0.3)
    wire = formats.encode(fmt, pcm)
    assert len(wire) == 8000  # one second at 8 bytes/ms
    back = formats.decode(fmt, wire)
    assert back.shape == pcm.shape and back.dtype == np.int16
    # Away from the edges, G.711 plus two resamplings keeps a 440 Hz tone at > 30 dB SNR.
    assert snr_db(pcm[2400:-2400], back[2400:-2400]) > 30


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        formats.encode("audio/pcm", np.zeros(10, dtype=np.float32))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- streaming codecs


@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(FORMATS), cuts=st.lists(st.integers(0, 16000), max_size=12))
def test_stream_decoder_equals_one_shot_whatever_the_chunking(fmt: str, cuts: list[int]) -> None:
    pcm = sine(300, 0.7, 24000, 0.4)
    wire = formats.encode(fmt, pcm)
    if fmt == "audio/pcm":
        cuts = [c - c % 2 for c in cuts]
    decoder = formats.StreamDecoder(fmt)
    chunks = [decoder.decode(part) for part in split(wire, cuts)] + [decoder.flush()]
    assert np.array_equal(np.concatenate(chunks), formats.decode(fmt, wire))


@settings(max_examples=30, deadline=None)
@given(fmt=st.sampled_from(FORMATS), cuts=st.lists(st.integers(0, 16800), max_size=12))
def test_stream_encoder_equals_one_shot_whatever_the_chunking(fmt: str, cuts: list[int]) -> None:
    pcm = sine(500, 0.7, 24000, 0.4)
    encoder = formats.StreamEncoder(fmt)
    parts = [encoder.encode(part) for part in split(pcm, cuts)] + [encoder.flush()]
    assert b"".join(parts) == formats.encode(fmt, pcm)
    assert all(len(p) % formats.bytes_per_sample(fmt) == 0 for p in parts)


def test_streaming_has_no_clicks_where_per_chunk_resampling_does() -> None:
    """20 ms G.711 chunks decode to exactly the one-shot signal; per-chunk resampling would click."""
    wire = formats.encode("audio/pcmu", sine(200, 1.0, 24000, 0.5))
    ideal = formats.decode("audio/pcmu", wire)
    decoder = formats.StreamDecoder("audio/pcmu")
    streamed = np.concatenate(
        [decoder.decode(wire[i : i + 160]) for i in range(0, len(wire), 160)] + [decoder.flush()]
    )
    naive = np.concatenate(
        [formats.decode("audio/pcmu", wire[i : i + 160]) for i in range(0, len(wire), 160)]
    )
    assert np.array_equal(streamed, ideal)
    # Resampling each chunk on its own rings at every 20 ms boundary (480 samples at 24 kHz).
    boundary_error = np.abs(naive.astype(np.int32) - ideal)[480:-480].reshape(-1, 480)
    assert boundary_error[:, :8].max(axis=1).min() > 100  # a glitch at every single boundary
    assert np.median(boundary_error[:, 200:280]) <= 2


@pytest.mark.parametrize("chunk", [1, 7, 33, 160, 320])
def test_exact_decoder_puts_every_sample_where_the_client_clock_does(chunk: int) -> None:
    """Chunked G.711 plus the flushed tail is the one-shot decode, not shifted by a sample:
    Whisper hears a short turn differently when it moves by 4 ms."""
    noise = np.random.default_rng(3).integers(0, 256, 8000, dtype=np.uint8).tobytes()
    ideal = formats.decode("audio/pcmu", noise).astype(np.float64)
    decoder = formats.ExactDecoder("audio/pcmu")
    parts = [decoder.decode(noise[i : i + chunk]) for i in range(0, len(noise), chunk)]
    assert decoder.held_ms == pytest.approx(formats.ExactDecoder.HOLD_SAMPLES / 8)
    assert sum(map(len, parts)) == 3 * (len(noise) - formats.ExactDecoder.HOLD_SAMPLES)
    decoded = np.concatenate([*parts, decoder.flush()]).astype(np.float64)
    assert len(decoded) == len(ideal) and decoder.held_ms == 0
    snr_db = 10 * np.log10(np.sum(ideal**2) / np.sum((decoded - ideal) ** 2))
    assert snr_db > 40  # 55 dB at 20 ms chunks, 41 dB byte by byte; a click per chunk is < 20


def test_stream_decoder_rejects_partial_pcm16_samples() -> None:
    with pytest.raises(AudioFormatError):
        formats.StreamDecoder("audio/pcm").decode(b"\x00")


def test_stream_reset_drops_held_back_audio() -> None:
    encoder = formats.StreamEncoder("audio/pcma")
    encoder.encode(sine(300, 0.1, 24000))
    encoder.reset()
    assert encoder.flush() == b""


# --------------------------------------------------------------------------- resampling


def test_int16_float32_conversions_are_exact_inverses() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    as_float = int16_to_float32(every)
    assert as_float.dtype == np.float32 and as_float.min() == -1.0 and as_float.max() < 1.0
    assert np.array_equal(float32_to_int16(as_float), every)
    assert float32_to_int16(np.array([1.5, -1.5, 0.99999], dtype=np.float32)).tolist() == [
        32767,
        -32768,
        32767,
    ]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_resample_lengths_and_tone_preservation(in_rate: int, out_rate: int) -> None:
    tone = sine(440, 1.0, in_rate, 0.3)
    out = resample(tone, in_rate, out_rate)
    assert out.dtype == np.int16 and out.size == out_rate
    expected = sine(440, 1.0, out_rate, 0.3)
    assert snr_db(expected[out_rate // 10 : -out_rate // 10], out[out_rate // 10 : -out_rate // 10]) > 40


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_streaming_resampler_equals_one_shot(in_rate: int, out_rate: int, dtype: type) -> None:
    rng = np.random.default_rng(in_rate + out_rate)
    x = rng.standard_normal(in_rate // 2).astype(np.float32) * 0.1
    signal = float32_to_int16(x) if dtype is np.int16 else x
    stream = StreamingResampler(in_rate, out_rate, dtype)
    for _ in range(2):  # flush makes it reusable for a second, unrelated signal
        parts = [stream.process(signal[i : i + 333]) for i in range(0, signal.size, 333)] + [stream.flush()]
        assert np.array_equal(np.concatenate(parts), resample(signal, in_rate, out_rate))


def test_resampler_rejects_wrong_input() -> None:
    with pytest.raises(TypeError):
        StreamingResampler(24000, 16000, np.float32).process(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError):
        resample(np.zeros((2, 10), dtype=np.float32), 24000, 16000)
    with pytest.raises(ValueError):
        StreamingResampler(0, 16000)


# --------------------------------------------------------------------------- framing


def test_framer_cuts_contiguous_stamped_frames() -> None:
    pcm = sine(300, 1.0, 24000, 0.3)
    framer = AudioFramer(24000, 16000, 512, origin_ms=1000.0)
    frames = [f for i in range(0, pcm.size, 480) for f in framer.push(pcm[i : i + 480])]
    frames += framer.flush()
    assert len(frames) == 32  # 16000 samples -> 31 whole frames + 1 zero-padded
    assert [f.start_ms for f in frames[:3]] == [1000.0, 1032.0, 1064.0]
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(frames))
    joined = np.concatenate([f.samples for f in frames])[:16000]
    assert np.array_equal(joined, resample(int16_to_float32(pcm), 24000, 16000))


def test_frame_levels_follow_loudness() -> None:
    framer = AudioFramer(24000, 16000, 512)
    quiet = framer.push(np.zeros(24000, dtype=np.int16))
    loud = framer.push(sine(2000, 0.5, 24000, 0.5))
    assert all(f.level_db < -100 for f in quiet)
    assert all(f.level_db > -20 for f in loud[2:])
    framer.reset(origin_ms=5000.0)
    assert framer.next_frame_start_ms == 5000.0


class EveryChunkFramer(AudioFramer):
    SETTLED_SILENCE_S = float("inf")  # never settled: soxr resamples every chunk


def test_framer_silence_fast_path_gives_the_frames_of_resampling_everything() -> None:
    """A muted microphone's digital silence skips soxr once settled; the frames (their
    samples, times and levels) are those of resampling every chunk."""
    rng = np.random.default_rng(11)
    chunks: list[np.ndarray] = []
    for burst in range(8):
        chunks += [
            (rng.standard_normal(480) * 3000).astype(np.int16) for _ in range(int(rng.integers(1, 20)))
        ]
        chunks += [np.zeros(480 * (1 + burst % 3), dtype=np.int16)] * int(rng.integers(1, 40))
    fast, full = AudioFramer(24000, 16000, 512), EveryChunkFramer(24000, 16000, 512)
    fast_frames = [f for c in chunks for f in fast.push(c)] + fast.flush()
    full_frames = [f for c in chunks for f in full.push(c)] + full.flush()
    assert [f.start_ms for f in fast_frames] == [f.start_ms for f in full_frames]
    a = np.concatenate([f.samples for f in fast_frames])
    b = np.concatenate([f.samples for f in full_frames])
    assert np.abs(a - b).max() < 1e-4  # float rounding of soxr's block phase, not signal
    assert np.allclose([f.level_db for f in fast_frames], [f.level_db for f in full_frames], atol=0.5)
    assert fast._silent_samples > 0 and not np.any(a[-5000:])  # the run ended in settled silence
