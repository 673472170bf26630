"""The remote speech engines on their own: what they send to an OpenAI-compatible audio API,
how they read its answers (streamed PCM, a WAV header, odd byte boundaries), which failures
count as what, and the failover to the local engine with its cooldown. The endpoint is a
scripted ``httpx.MockTransport`` or, for stalls, a real socket that stops sending."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from openrealtime.audio.files import wav_bytes
from openrealtime.engines.asr.remote import FailoverTranscriber, RemoteTranscriber
from openrealtime.engines.asr.whisper import TranscriptionCancelled
from openrealtime.engines.base import CancelToken, PcmAudio, Transcript, VoiceInfo
from openrealtime.engines.remote import Cooldown, RemoteEndpoint, RemoteEngineError
from openrealtime.engines.tts.remote import FailoverSynthesizer, RemoteSynthesizer, RemoteVoiceTable
from openrealtime.engines.tts.voices import UnknownVoiceError, VoiceTable

ENDPOINT = RemoteEndpoint("http://remote.test/v1", "whisper-large", api_key="sk-remote", timeout_s=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class LocalTranscriber:
    name = "local-whisper"
    sample_rate = 16_000

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(
        self,
        audio: Any,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        self.calls += 1
        return Transcript("local words", language, len(audio) / 16_000, 2)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class LocalVoice:
    """A local engine at Piper's rate, to check the failover resamples to 24 kHz."""

    name = "piper"
    sample_rate = 22_050

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("joe", "piper"), VoiceInfo("amy", "piper")]

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[PcmAudio]:
        self.calls.append((text, voice))
        yield np.full(22_050, 1000, dtype=np.int16)


def transcriber(handler: Any) -> RemoteTranscriber:
    return RemoteTranscriber(ENDPOINT, client=httpx.Client(transport=httpx.MockTransport(handler)))


def synthesizer(handler: Any) -> RemoteSynthesizer:
    return RemoteSynthesizer(ENDPOINT, client=httpx.Client(transport=httpx.MockTransport(handler)))


# --------------------------------------------------------------------------- transcription


def test_a_turn_is_posted_as_a_16k_wav_with_the_model_and_options() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["body"] = request.read()
        seen["type"] = request.headers["content-type"]
        return httpx.Response(
            200, json={"text": " ten of clubs ", "usage": {"type": "tokens", "output_tokens": 4}}
        )

    audio = (np.sin(np.arange(16_000) / 10) * 0.5).astype(np.float32)
    result = transcriber(handler).transcribe(audio, language="en", prompt="cards")
    assert result == Transcript("ten of clubs", "en", 1.0, 4)
    assert seen["url"] == "http://remote.test/v1/audio/transcriptions"
    assert seen["type"].startswith("multipart/form-data")
    body: bytes = seen["body"]
    for field, value in (("model", b"whisper-large"), ("language", b"en"), ("prompt", b"cards")):
        assert f'name="{field}"'.encode() in body and value in body
    start = body.index(b"RIFF")
    with wave.open(io.BytesIO(body[start:])) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (
            16_000,
            1,
            2,
            16_000,
        )


def test_the_api_key_goes_in_the_header_only() -> None:
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization", "")
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    client = ENDPOINT.client(httpx.MockTransport(handler))
    with pytest.raises(RemoteEngineError) as caught:
        RemoteTranscriber(ENDPOINT, client=client).transcribe(np.zeros(1600, dtype=np.float32))
    assert seen["auth"] == "Bearer sk-remote"
    assert "sk-remote" not in str(caught.value) and "401" in str(caught.value)
    assert caught.value.cooldown


@pytest.mark.parametrize(
    ("status", "cooldown"), [(500, True), (503, True), (404, True), (429, True), (400, False), (413, False)]
)
def test_http_errors_say_whether_the_endpoint_should_be_skipped(status: int, cooldown: bool) -> None:
    remote = transcriber(lambda _: httpx.Response(status, text="nope"))
    with pytest.raises(RemoteEngineError) as caught:
        remote.transcribe(np.zeros(1600, dtype=np.float32))
    assert caught.value.cooldown is cooldown and str(status) in str(caught.value)


def test_an_answer_that_is_not_a_transcription_is_a_failure() -> None:
    for answer in (httpx.Response(200, text="<html>"), httpx.Response(200, json={"txt": "x"})):
        with pytest.raises(RemoteEngineError):
            transcriber(lambda _, answer=answer: answer).transcribe(np.zeros(1600, dtype=np.float32))


def test_connect_errors_are_failures_and_a_cancelled_turn_is_not_sent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RemoteEngineError):
        transcriber(refuse).transcribe(np.zeros(1600, dtype=np.float32))
    token = CancelToken()
    token.cancel()
    with pytest.raises(TranscriptionCancelled):
        transcriber(refuse).transcribe(np.zeros(1600, dtype=np.float32), cancel=token)


def test_failover_answers_locally_and_skips_the_endpoint_for_its_cooldown() -> None:
    calls = {"remote": 0}
    healthy = {"up": False}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["remote"] += 1
        if not healthy["up"]:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"text": "remote words"})

    clock = Clock()
    local = LocalTranscriber()
    failover = FailoverTranscriber(transcriber(handler), local, cooldown=Cooldown(30, clock=clock))
    audio = np.zeros(8000, dtype=np.float32)
    assert failover.transcribe(audio).text == "local words"
    assert calls["remote"] == 1 and local.calls == 1
    healthy["up"] = True
    clock.now += 29  # still cooling down: the endpoint is not even tried
    assert failover.transcribe(audio).text == "local words"
    assert calls["remote"] == 1 and local.calls == 2
    clock.now += 2
    assert failover.transcribe(audio).text == "remote words"
    assert calls["remote"] == 2 and failover.cooldown.failures == 1
    assert failover.count_tokens("a b c") == 3  # the local tokenizer counts usage


def test_a_refused_request_falls_back_without_a_cooldown() -> None:
    calls = {"n": 0}

    def handler(_: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(400, json={"error": {"message": "audio too short"}})

    failover = FailoverTranscriber(
        transcriber(handler), LocalTranscriber(), cooldown=Cooldown(30, clock=Clock())
    )
    for _ in range(2):
        assert failover.transcribe(np.zeros(800, dtype=np.float32)).text == "local words"
    assert calls["n"] == 2 and not failover.cooldown.active


# --------------------------------------------------------------------------- speech


class _Blocks(httpx.SyncByteStream):
    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.blocks


def test_speech_is_requested_as_pcm_and_read_as_it_arrives_across_odd_boundaries() -> None:
    seen: dict[str, Any] = {}
    samples = np.arange(-500, 500, dtype=np.int16) * 7
    raw = samples.astype("<i2").tobytes()

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.update(json.loads(request.read()))
        seen["url"] = str(request.url)
        return httpx.Response(200, stream=_Blocks([raw[:1], raw[1:777], raw[777:]]))

    chunks = list(synthesizer(handler).synthesize("Hello there.", voice="marin", speed=1.25))
    assert seen == {
        "model": "whisper-large",
        "input": "Hello there.",
        "voice": "marin",
        "response_format": "pcm",
        "speed": 1.25,
        "url": "http://remote.test/v1/audio/speech",
    }
    assert len(chunks) == 2  # the lone first byte waited for its pair
    assert np.array_equal(np.concatenate(chunks), samples)


def test_a_wav_answer_is_unwrapped_and_resampled_to_24k() -> None:
    tone = (np.sin(np.arange(22_050) * 2 * np.pi * 300 / 22_050) * 8000).astype(np.int16)
    data = wav_bytes(tone, 22_050)
    chunks = list(
        synthesizer(lambda _: httpx.Response(200, stream=_Blocks([data[:30], data[30:]]))).synthesize(
            "Hi.", voice="alloy"
        )
    )
    out = np.concatenate(chunks)
    assert abs(out.size - 24_000) <= 2
    assert 5000 < np.abs(out).max() <= 8100  # the tone, not a header read as samples


def test_speech_http_errors_are_failures() -> None:
    with pytest.raises(RemoteEngineError) as caught:
        list(synthesizer(lambda _: httpx.Response(503, text="overloaded")).synthesize("Hi.", voice="alloy"))
    assert caught.value.cooldown and "503" in str(caught.value)


@contextlib.contextmanager
def stalling_server(first: bytes) -> Iterator[str]:
    """A real HTTP endpoint that sends its headers and ``first``, then nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            listener.settimeout(0.1)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n\r\n"
                body = (f"{len(first):x}\r\n".encode() + first + b"\r\n") if first else b""
                conn.sendall(head + body)
                stop.wait(3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def table_with(remote: RemoteSynthesizer, local: LocalVoice, clock: Clock) -> RemoteVoiceTable:
    voices = VoiceTable({"piper": local}, {"marin": "piper:joe", "alloy": "piper:amy"})
    return RemoteVoiceTable(
        remote, voices, cooldown=Cooldown(30, clock=clock), remote_voices={"nova": "af_nova"}
    )


def test_a_stall_before_the_first_audio_is_spoken_locally_and_after_it_fails_the_piece() -> None:
    local = LocalVoice()
    with stalling_server(b"") as url:
        remote = RemoteSynthesizer(RemoteEndpoint(url, "tts-1", timeout_s=0.3))
        voice, remote_voice = table_with(remote, local, Clock()).resolve("marin")
        chunks = list(voice.synthesize("Hello.", voice=remote_voice))
    assert local.calls == [("Hello.", "joe")]
    assert voice.sample_rate == 24_000 and abs(sum(c.size for c in chunks) - 24_000) <= 2
    local.calls.clear()
    with stalling_server(b"\x01\x00" * 100) as url:
        remote = RemoteSynthesizer(RemoteEndpoint(url, "tts-1", timeout_s=0.3))
        table = table_with(remote, local, Clock())
        voice, remote_voice = table.resolve("marin")
        stream = voice.synthesize("Hello.", voice=remote_voice)
        assert next(stream).size == 100
        with pytest.raises(RemoteEngineError, match="timed out"):
            next(stream)
        assert table.cooldown.active and local.calls == []


def test_the_remote_table_maps_names_and_keeps_direct_references_local() -> None:
    local = LocalVoice()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.read())["voice"])
        return httpx.Response(200, content=b"\x00\x00" * 10)

    table = table_with(synthesizer(handler), local, Clock())
    for name in ("marin", "nova", {"id": "marin"}):
        voice, remote_voice = table.resolve(name)
        assert isinstance(voice, FailoverSynthesizer)
        list(voice.synthesize("Hi.", voice=remote_voice))
    assert seen == ["marin", "af_nova", "marin"]
    assert table.resolve("nova")[0].fallback_voice == "joe"  # type: ignore[attr-defined]  # marin's local voice
    direct, voice_id = table.resolve("piper:amy")
    assert getattr(direct, "inner", direct) is local and voice_id == "amy"  # normalising wrapper
    with pytest.raises(UnknownVoiceError):
        table.resolve("fable")
    rows = {row["name"]: row for row in table.describe()}
    assert rows["nova"]["voice"] == "af_nova" and rows["marin"]["fallback"] == "piper:joe"
    assert all(row["engine"] == "remote" and row["sample_rate"] == 24_000 for row in rows.values())


def test_while_cooling_down_speech_is_local_without_trying_the_endpoint() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ConnectError("refused", request=request)

    clock = Clock()
    local = LocalVoice()
    table = table_with(synthesizer(handler), local, clock)
    for _ in range(3):
        voice, remote_voice = table.resolve("alloy")
        assert list(voice.synthesize("Hi.", voice=remote_voice))
    assert calls["n"] == 1 and len(local.calls) == 3
    clock.now += 31
    voice, remote_voice = table.resolve("alloy")
    list(voice.synthesize("Hi.", voice=remote_voice))
    assert calls["n"] == 2
