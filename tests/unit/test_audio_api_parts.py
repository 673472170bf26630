"""The pieces behind ``/v1/audio/*`` without a server: decoding uploads in every container,
streaming encoders (every chunk decodable so far, the whole equal in length to the input),
where long uploads are cut, subtitles, request validation and the speech price."""

from __future__ import annotations

import io
import itertools
import wave
from typing import Any

import numpy as np
import pytest
import soundfile
from starlette.datastructures import FormData

from openrealtime.audio.files import (
    AudioFileError,
    AudioFileReader,
    AudioTooLong,
    FileEncoder,
    decode_file,
    wav_bytes,
)
from openrealtime.config import Settings
from openrealtime.server.audio import (
    LANGUAGES,
    ApiError,
    cut_points,
    speech_params,
    subtitles,
    transcription_params,
)
from openrealtime.storage.base import UsageRecord
from openrealtime.telemetry.prices import PriceTable


def tone(seconds: float, rate: int = 24_000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12_000).astype(np.int16)


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "aac", "flac"])
def test_streamed_speech_encodes_chunk_by_chunk_and_decodes_to_the_same_length(fmt: str) -> None:
    encoder = FileEncoder(fmt)  # type: ignore[arg-type]
    audio = tone(2.0)
    parts = [encoder.encode(audio[i : i + 4800]) for i in range(0, audio.size, 4800)]
    parts.append(encoder.finish())
    assert sum(1 for part in parts[:-1] if part) >= 5, [len(p) for p in parts]  # bytes leave as they are made
    data = b"".join(parts)
    if fmt == "pcm":
        assert np.array_equal(np.frombuffer(data, "<i2"), audio)
        return
    decoded = decode_file(data, 16_000)
    assert abs(decoded.size / 16_000 - 2.0) < 0.1, decoded.size
    spectrum = np.abs(np.fft.rfft(decoded[4000:20000]))
    assert abs(np.argmax(spectrum) * 16_000 / 16_000 - 440) < 5  # still the tone


def test_the_streamed_wav_header_says_unknown_length_and_readers_cope() -> None:
    encoder = FileEncoder("wav")
    data = encoder.encode(tone(0.5)) + encoder.finish()
    assert data[4:8] == b"\xff\xff\xff\xff" and data[40:44] == b"\xff\xff\xff\xff"
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == 24_000 and samples.size == 12_000


@pytest.mark.parametrize(
    ("container", "codec"),
    [("mp3", "libmp3lame"), ("ogg", "libopus"), ("webm", "libopus"), ("flac", "flac"), ("mp4", "aac")],
)
def test_uploads_in_common_containers_decode_to_16k_mono(container: str, codec: str) -> None:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=48_000, layout="stereo")
        audio = np.repeat(tone(1.5, 48_000)[None, :], 2, axis=0)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio.T.reshape(1, -1)), format="s16", layout="stereo"
        )
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    decoded = decode_file(out.getvalue(), 16_000)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(decoded.size / 16_000 - 1.5) < 0.1


def test_a_wav_upload_and_its_limits() -> None:
    data = wav_bytes(tone(3.0, 16_000), 16_000)
    assert decode_file(data, 16_000).size == 48_000
    reader = AudioFileReader(data, 16_000)  # a stretch at a time, for short scheduler jobs
    stretches = []
    while not reader.done:
        stretches.append(reader.read(1.0).size)
    assert sum(stretches) == 48_000 and len(stretches) >= 3 and max(stretches) < 16_000 + 4096
    with pytest.raises(AudioTooLong):
        decode_file(data, 16_000, max_seconds=2.0)
    for junk in (b"", b"RIFF\x00\x00", b"not audio at all" * 100, data[:30]):
        with pytest.raises(AudioFileError):
            decode_file(junk, 16_000)


def test_long_uploads_are_cut_at_their_quietest_moments() -> None:
    rate = 16_000
    audio = np.full(70 * rate, 0.3, dtype=np.float32)
    audio[22 * rate : 22 * rate + 3200] = 0.0  # a 200 ms pause inside the first search window
    cuts = cut_points(audio, rate)
    assert cuts[0][0] == 0 and cuts[-1][1] == audio.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
    assert all(end - start <= 25 * rate for start, end in cuts)
    assert 22 * rate <= cuts[0][1] <= 22 * rate + 3200
    assert cut_points(audio[: 10 * rate], rate) == [(0, 10 * rate)]


def test_subtitles() -> None:
    segments = [(0.0, 2.5, "Ten of clubs."), (3661.25, 3663.0, "Four of hearts.")]
    assert subtitles(segments, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nTen of clubs.\n\n2\n01:01:01,250 --> 01:01:03,000\nFour of hearts.\n\n"
    )
    assert subtitles(segments, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nTen of clubs.\n\n")


def form(**fields: Any) -> FormData:
    items: list[tuple[str, Any]] = []
    for name, value in fields.items():
        for one in value if isinstance(value, list) else [value]:
            items.append((name.replace("__", "[]"), one))
    return FormData(items)


def test_transcription_fields_are_checked_like_openai() -> None:
    params = transcription_params(
        form(model="gpt-4o-transcribe", language="EN", stream="true", temperature="0.2")
    )
    assert (params.model, params.language, params.stream, params.response_format) == (
        "gpt-4o-transcribe",
        "en",
        True,
        "json",
    )
    for fields, param in (
        ({}, "model"),
        ({"model": "m", "response_format": "docx"}, "response_format"),
        ({"model": "m", "language": "english"}, "language"),
        ({"model": "m", "temperature": "2"}, "temperature"),
        ({"model": "m", "temperature": "warm"}, "temperature"),
        ({"model": "m", "stream": "maybe"}, "stream"),
        ({"model": "m", "timestamp_granularities__": ["segment", "word"]}, "timestamp_granularities"),
    ):
        with pytest.raises(ApiError) as caught:
            transcription_params(form(**fields))
        assert caught.value.status == 400 and caught.value.param == param, fields
    assert LANGUAGES["en"] == "english" and len(LANGUAGES) == 100


def test_speech_fields_are_checked_like_openai() -> None:
    settings = Settings(max_speech_input_chars=50)
    params = speech_params({"model": "tts-1", "input": "Hi.", "voice": {"id": "marin"}, "speed": 2}, settings)
    assert (params.response_format, params.stream_format, params.speed, params.voice) == (
        "mp3",
        "audio",
        2.0,
        {"id": "marin"},
    )
    good = {"model": "tts-1", "input": "Hi.", "voice": "alloy"}
    for change, param, code in (
        ({"model": ""}, "model", "missing_required_parameter"),
        ({"input": None}, "input", "missing_required_parameter"),
        ({"input": "   "}, "input", "invalid_value"),
        ({"input": "x" * 51}, "input", "string_above_max_length"),
        ({"voice": 3}, "voice", "missing_required_parameter"),
        ({"response_format": "ogg"}, "response_format", "invalid_value"),
        ({"speed": 4.5}, "speed", "invalid_value"),
        ({"speed": True}, "speed", "invalid_value"),
        ({"stream_format": "chunks"}, "stream_format", "invalid_value"),
        ({"instructions": 5}, "instructions", "invalid_value"),
    ):
        with pytest.raises(ApiError) as caught:
            speech_params({**good, **change}, settings)
        assert (caught.value.param, caught.value.code) == (param, code), change
    with pytest.raises(ApiError):
        speech_params(["not", "an", "object"], settings)


def test_speech_is_billed_at_the_tts_prices() -> None:
    row = UsageRecord(
        id="speech:req_1",
        kind="speech",
        key_id="key_a",
        session_id="req_1",
        transport="http",
        model="tts-1",
        status="completed",
        created_at=0.0,
        day="1970-01-01",
        input_text_tokens=1000,
        output_audio_tokens=1200,  # one minute of audio at 1 token per 50 ms
    )
    assert PriceTable().cost(row) == pytest.approx((1000 * 0.60 + 1200 * 12.00) / 1_000_000)
    assert PriceTable.with_overrides({"speech_audio_output": 6}).cost(row) == pytest.approx(
        (1000 * 0.60 + 1200 * 6.00) / 1_000_000
    )


def test_wav_bytes_is_a_plain_wav() -> None:
    with wave.open(io.BytesIO(wav_bytes(tone(0.25, 16_000), 16_000))) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (16_000, 4000)
