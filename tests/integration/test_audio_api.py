"""``/v1/audio/transcriptions`` and ``/v1/audio/speech`` through the openai SDK against the real
server (Whisper, Piper), with real recorded speech: every response format, streaming both
ways, uploads in the common containers, errors in OpenAI's shape, and the usage ledger."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from openrealtime.audio.files import decode_file, wav_bytes
from openrealtime.engines.asr.wer import corpus_wer
from openrealtime.telemetry.prices import PriceTable
from tests.speech_audio import AUDIO_DIR, load_clip, transcripts
from tests.support import ServerProcess, run_server

pytestmark = pytest.mark.slow

SENTENCES = [
    "The morning train left the station a little after seven.",
    "Most of the passengers were reading or looking out at the fields.",
    "A conductor walked slowly through the carriages checking tickets.",
    "Outside, the river ran beside the tracks for several miles.",
    "Near the old mill a heron stood perfectly still in the shallows.",
    "The train slowed as it climbed towards the hills.",
    "Somebody near the back was humming a tune nobody recognised.",
    "At the first stop a family with three children got on board.",
    "The youngest pressed her face against the window and waved.",
    "Clouds gathered over the ridge and the light turned grey.",
    "By noon it had started to rain, softly at first and then harder.",
    "The conductor came back and announced a short delay ahead.",
    "Nobody seemed to mind very much, and the humming went on.",
    "When the train moved again the rain had nearly stopped.",
    "The valley opened out and the town appeared below them.",
    "Its roofs were shining wet in the returning sunshine.",
]
LONG_TEXT = " ".join(SENTENCES)
PRICES = PriceTable()


THRIFTY_KEY = "sk-thrifty-" + os.urandom(8).hex()
"""A second key with a budget of a ten-thousandth of a cent: one request, then refusals."""
AUDIO_REQUESTS_AT_ONCE = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    key = "sk-test-" + os.urandom(8).hex()
    env = {
        "OPENREALTIME_LLM": "smollm2-135m",
        "OPENREALTIME_API_KEYS": f"{key},{THRIFTY_KEY}",
        "OPENREALTIME_KEY_BUDGETS_USD": json.dumps({THRIFTY_KEY: 0.000001}),
        "OPENREALTIME_MAX_AUDIO_REQUESTS_PER_KEY": str(AUDIO_REQUESTS_AT_ONCE),
    }
    with run_server(tmp_path_factory.mktemp("audio-api"), env=env) as running:
        yield dataclasses.replace(running, api_key=key)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=300)


def usage_rows(server: ServerProcess) -> dict[str, dict[str, Any]]:
    """The ledger's rows by request id (``group_by=session``: a request is its own session)."""
    response = httpx.get(
        server.base_url + "/usage",
        params={"group_by": "session"},
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return {row["session_id"]: row for row in response.json()["data"]}


def ephemeral_key(server: ServerProcess) -> str:
    minted = httpx.post(
        server.base_url + "/realtime/client_secrets",
        json={},
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
    )
    value: str = minted.json()["value"]
    assert value.startswith("ek_")
    return value


# --------------------------------------------------------------------------- transcription


def test_transcriptions_in_every_response_format(client: OpenAI, server: ServerProcess) -> None:
    clip = AUDIO_DIR / "cards-005.wav"
    reference = transcripts()["cards-005"]
    seconds = load_clip("cards-005").size / 16_000

    raw = client.audio.transcriptions.with_raw_response.create(file=clip, model="gpt-4o-transcribe")
    as_json = raw.parse()
    assert corpus_wer([(reference, as_json.text)]) <= 0.25, as_json.text
    assert as_json.usage is not None and as_json.usage.type == "tokens"
    assert as_json.usage.input_token_details is not None
    assert as_json.usage.input_token_details.audio_tokens == int(seconds * 10)
    assert as_json.usage.output_tokens > 0
    request_id = raw.headers["x-request-id"]

    text = client.audio.transcriptions.create(file=clip, model="whisper-1", response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and corpus_wer([(reference, text)]) <= 0.25

    srt = client.audio.transcriptions.create(file=clip, model="whisper-1", response_format="srt")
    blocks = [block for block in srt.strip().split("\n\n") if block]
    assert blocks and all(
        re.fullmatch(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+", b) for b in blocks
    )
    assert corpus_wer([(reference, " ".join(b.split("\n", 2)[2] for b in blocks))]) <= 0.25

    vtt = client.audio.transcriptions.create(file=clip, model="whisper-1", response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and re.search(
        r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n", vtt
    )

    verbose = client.audio.transcriptions.create(
        file=clip, model="whisper-1", response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert verbose.language == "english" and abs(verbose.duration - seconds) < 0.05
    assert verbose.segments and verbose.usage is not None and verbose.usage.type == "duration"
    assert " ".join(s.text for s in verbose.segments) == verbose.text
    for segment in verbose.segments:
        assert 0 <= segment.start < segment.end <= verbose.duration + 0.01
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))

    # the ledger has the json request as a transcription row at gpt-4o-transcribe prices
    row = usage_rows(server)[request_id]
    assert row["transcriptions"] == 1 and row["responses"] == 0
    audio, out = row["input_token_details"]["audio_tokens"], row["output_token_details"]["text_tokens"]
    assert (audio, out) == (as_json.usage.input_token_details.audio_tokens, as_json.usage.output_tokens)
    expected = (audio * PRICES.transcription_audio_input + out * PRICES.transcription_text_output) / 1e6
    assert row["amount"]["value"] == pytest.approx(expected, abs=1e-6)


def test_streamed_transcription_of_a_long_recording(client: OpenAI) -> None:
    """Eight clips in a row (36 s): pieces are transcribed one after the other and each
    piece's text is sent as it is done, before the whole recording is."""
    names = [
        *[n for n in transcripts() if not n.startswith("cards")][:5],
        "cards-001",
        "cards-005",
        "goforward",
    ]
    gap = np.zeros(8000)
    audio = np.concatenate([np.concatenate([load_clip(n), gap]) for n in names])
    assert audio.size / 16_000 > 30
    upload = ("recording.wav", wav_bytes(audio.astype(np.int16), 16_000), "audio/wav")
    events = list(client.audio.transcriptions.create(file=upload, model="gpt-4o-transcribe", stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert done.type == "transcript.text.done" and all(e.type != "transcript.text.done" for e in events[:-1])
    assert len(deltas) >= 2
    assert "".join(d.delta for d in deltas) == done.text
    reference = " ".join(transcripts()[n] for n in names)
    assert corpus_wer([(reference, done.text)]) <= 0.15, done.text
    assert done.usage is not None and done.usage.input_tokens == int(audio.size / 16_000 * 10)


@pytest.mark.parametrize(
    ("name", "container", "codec"),
    [("speech.mp3", "mp3", "libmp3lame"), ("speech.ogg", "ogg", "libopus"), ("speech.webm", "webm", "libopus"),
     ("speech.flac", "flac", "flac"), ("speech.m4a", "mp4", "aac")],
)  # fmt: skip
def test_uploads_in_common_containers(client: OpenAI, name: str, container: str, codec: str) -> None:
    import av

    clip = load_clip("librivox-0880").astype(np.int16)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=48_000 if codec == "libopus" else 16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(clip.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    text = client.audio.transcriptions.create(
        file=(name, out.getvalue()), model="whisper-1", response_format="text"
    )
    assert corpus_wer([(transcripts()["librivox-0880"], text)]) <= 0.3, (name, text)


def test_transcription_errors_are_openai_shaped(client: OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(file=("notes.wav", b"this is not audio" * 50), model="whisper-1")
    assert bad.value.body["param"] == "file" and bad.value.body["code"] == "invalid_value"  # type: ignore[index]
    short = wav_bytes(np.zeros(800, dtype=np.int16), 16_000)
    with pytest.raises(openai.BadRequestError) as too_short:
        client.audio.transcriptions.create(file=("short.wav", short), model="whisper-1")
    assert too_short.value.body["code"] == "audio_too_short"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad_language:
        client.audio.transcriptions.create(file=AUDIO_DIR / "cards-001.wav", model="whisper-1", language="xx")
    assert bad_language.value.body["param"] == "language"  # type: ignore[index]
    ephemeral = OpenAI(base_url=server.base_url, api_key=ephemeral_key(server), max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        ephemeral.audio.transcriptions.create(file=AUDIO_DIR / "cards-001.wav", model="whisper-1")
    assert refused.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    headers = {"Authorization": f"Bearer {server.api_key}"}
    missing = httpx.post(
        server.base_url + "/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"x": b"1"},
        headers=headers,
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    not_form = httpx.post(
        server.base_url + "/audio/transcriptions", json={"model": "whisper-1"}, headers=headers
    )
    assert not_form.status_code == 400 and set(not_form.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    big = httpx.post(
        server.base_url + "/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("big.wav", b"\0" * (25 * 1024 * 1024 + 100_000))},
        headers=headers,
        timeout=60,
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


# --------------------------------------------------------------------------- speech


def test_speech_streams_before_the_whole_text_is_synthesised(client: OpenAI, server: ServerProcess) -> None:
    """Server-side evidence: a client that leaves after the first chunk is billed for a small
    part of the text, so that chunk left the server long before synthesis of the text ended
    (a server that synthesised everything first would have made, and billed, all of it)."""
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=LONG_TEXT, response_format="pcm"
    ) as response:
        whole_id = response.headers["x-request-id"]
        chunks = list(response.iter_bytes())
    audio = b"".join(chunks)
    assert len(chunks) >= len(SENTENCES) // 2  # arrived in many pieces (chunked transfer)
    assert response.headers.get("transfer-encoding") == "chunked"
    seconds = len(audio) / 2 / 24_000
    assert seconds > 25, seconds

    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=LONG_TEXT, response_format="pcm"
    ) as response:
        left_id = response.headers["x-request-id"]
        first = next(response.iter_bytes())
        assert first
    # leaving the block closes the connection after the first chunk

    rows = usage_rows(server)
    whole, left = rows[whole_id], rows[left_id]
    whole_audio = whole["output_token_details"]["audio_tokens"]
    assert whole_audio == int(seconds * 20)  # billed exactly what was delivered (1 token per 50 ms)
    left_audio = left["output_token_details"]["audio_tokens"]
    print(f"audio tokens billed: whole text {whole_audio}, client gone after the first chunk {left_audio}")
    assert 0 < left_audio < whole_audio / 2, (left_audio, whole_audio)
    text_in = whole["input_token_details"]["text_tokens"]
    expected = (text_in * PRICES.speech_text_input + whole_audio * PRICES.speech_audio_output) / 1e6
    assert whole["amount"]["value"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_in_every_format(client: OpenAI, fmt: str, tmp_path: Path) -> None:
    text = "Ten of clubs, four of hearts and seven of spades."
    response = client.audio.speech.create(model="tts-1", voice="marin", input=text, response_format=fmt)  # type: ignore[arg-type]
    data = response.read()
    pcm = fmt == "pcm"
    samples = decode_file(wav_bytes(np.frombuffer(data, "<i2"), 24_000) if pcm else data, 16_000)
    assert 1.5 < samples.size / 16_000 < 8, samples.size
    if fmt == "wav":  # the round trip: the server's own ASR hears the words
        heard = client.audio.transcriptions.create(
            file=("speech.wav", data), model="whisper-1", response_format="text"
        )
        assert corpus_wer([(text, heard)]) <= 0.2, heard


def test_speech_as_server_sent_events(server: ServerProcess) -> None:
    body = {
        "model": "gpt-4o-mini-tts",
        "voice": "cedar",
        "input": " ".join(SENTENCES[:3]),
        "response_format": "pcm",
        "stream_format": "sse",
    }
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST",
        server.base_url + "/audio/speech",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=120,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 3
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    usage = done["usage"]
    assert usage["output_tokens"] == len(audio) // 2 * 1000 // 24_000 // 50
    assert (
        usage["input_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    )


def test_speech_errors_are_openai_shaped(client: OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        client.audio.speech.create(model="tts-1", voice="fable", input="Hi.")
    assert unknown.value.body["param"] == "voice" and "marin" in unknown.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as long:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)
    assert long.value.body["code"] == "string_above_max_length"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as fast:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=5)
    assert fast.value.body["param"] == "speed"  # type: ignore[index]
    ephemeral = OpenAI(base_url=server.base_url, api_key=ephemeral_key(server), max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        ephemeral.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    anonymous = httpx.post(
        server.base_url + "/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi."}
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "invalid_request_error"


def test_audio_requests_at_once_per_key_are_limited(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
        held = [http.stream("POST", "/audio/speech", json=body) for _ in range(AUDIO_REQUESTS_AT_ONCE)]
        readers = []  # kept: a dropped reader would close its connection
        for stream in held:
            response = stream.__enter__()
            readers.append(response.iter_bytes())
            assert response.status_code == 200 and next(readers[-1])
        refused = http.post("/audio/speech", json=body)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        for stream in held:
            stream.__exit__(None, None, None)
        # the slots are given back once the server has seen those clients leave
        for _ in range(100):
            again = http.post("/audio/speech", json={**body, "input": "Hi."})
            if again.status_code != 429:
                break
            time.sleep(0.1)
        assert again.status_code == 200 and again.content


def test_a_key_past_its_budget_is_refused(server: ServerProcess) -> None:
    thrifty = OpenAI(base_url=server.base_url, api_key=THRIFTY_KEY, max_retries=0)
    first = thrifty.audio.transcriptions.create(file=AUDIO_DIR / "cards-001.wav", model="whisper-1")
    assert first.text.strip()
    with pytest.raises(openai.RateLimitError) as refused:
        thrifty.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert refused.value.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert refused.value.body["code"] == "insufficient_quota"  # type: ignore[index]
