"""Azure OpenAI's clients and URLs, and the beta SDK's voice turn, against the real server
over TLS (Azure endpoints are ``https://``; the SDK's Azure client and beta client force
``wss://``), with real speech through the real engines.

- ``AsyncAzureOpenAI(azure_endpoint=…, api_key=…, api_version="2025-08-28").realtime.connect(
  model=DEPLOYMENT)``: ``/openai/realtime?api-version=…&deployment=…``, GA shape, a text and a
  voice turn; with ``api_version="2025-04-01-preview"`` its ``beta.realtime.connect`` gets the
  beta shape (a G.711 µ-law voice turn, the telephony way).
- ``AsyncOpenAI(base_url=…/openai/v1, default_headers={"api-key": …})``: Azure's v1 surface,
  ``client_secrets``, a WebRTC call with ``?webrtcfilter=on``, a sideband, call control.
- ``client.beta.realtime.connect()`` (OpenAI's URL): a voice turn with server VAD, whisper-1
  transcription and audio out, every event held to the SDK's beta union.
- Azure's preview REST (``/openai/realtimeapi/sessions``), unknown api-versions, ``?api-key=``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncAzureOpenAI, AsyncOpenAI

from openrealtime.audio import formats
from openrealtime.engines.asr.wer import corpus_wer
from openrealtime.protocol import beta
from openrealtime.server.dialects import AZURE_WEBRTC_FILTER
from tests.certificates import make_ca
from tests.integration.test_realtime_voice import answer_transcript_check
from tests.speech_audio import caller_audio, transcripts
from tests.support import ServerProcess, run_server, validate_beta_server_event, validate_server_event
from tests.webrtc_client import Caller

pytestmark = pytest.mark.slow

DEPLOYMENT = "my-realtime-deployment"
GA_VERSION = "2025-08-28"
PREVIEW_VERSION = "2025-04-01-preview"
CLIP = "cards-005"
FIXED_REPLY = "Thank you for calling, I heard you clearly and I will help you right away."
INSTRUCTIONS = f"Whatever the user says, reply with exactly this sentence: {FIXED_REPLY}"
TURN_TIMEOUT_S = 180


class TlsServer:
    def __init__(self, server: ServerProcess, context: ssl.SSLContext) -> None:
        self.server = server
        self.ssl = context

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self.ssl, timeout=60, **kwargs)

    def azure(self, api_version: str) -> AsyncAzureOpenAI:
        return AsyncAzureOpenAI(
            azure_endpoint=self.server.url,
            api_key=self.server.api_key,
            api_version=api_version,
            http_client=self.http(),
        )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tmp: Path = tmp_path_factory.mktemp("azure-server")
    ca = make_ca(tmp / "pki")
    leaf = ca.issue("server")
    args = ["--ssl-certfile", str(leaf.certfile), "--ssl-keyfile", str(leaf.keyfile)]
    with run_server(tmp, args=args, scheme="https") as server:
        yield TlsServer(server, ssl.create_default_context(cafile=str(ca.cafile)))


def user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def stream(append: Any, pcm: bytes, *, bytes_per_ms: int, chunk_ms: int = 40) -> None:
    """``pcm`` (already in the session's input format) as appends at real-time pace."""
    step = bytes_per_ms * chunk_ms
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, offset in enumerate(range(0, len(pcm), step)):
        await append(audio=base64.b64encode(pcm[offset : offset + step]).decode())
        delay = start + (index + 1) * chunk_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def speech() -> np.ndarray:
    return np.concatenate([caller_audio(CLIP), np.zeros(24000 * 2, dtype=np.int16)])


async def text_turn(connection: Any, validate: Any, *, ga: bool) -> list[dict[str, Any]]:
    if ga:
        await connection.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "instructions": "Answer in one short sentence.",
            }
        )
    else:
        await connection.session.update(
            session={"modalities": ["text"], "instructions": "Answer in one short sentence."}
        )
    await connection.conversation.item.create(item=user_text("Say hello."))
    await connection.response.create()
    events = []
    while True:
        events.append(validate(await connection.recv_bytes()))
        if events[-1]["type"] == "response.done":
            return events


async def test_azure_client_ga_text_turn(tls: TlsServer) -> None:
    client = tls.azure(GA_VERSION)
    async with client.realtime.connect(
        model=DEPLOYMENT, websocket_connection_options={"ssl": tls.ssl}
    ) as connection:
        created = validate_server_event(await connection.recv_bytes())
        assert created["type"] == "session.created" and created["session"]["model"] == DEPLOYMENT
        events = await text_turn(connection, validate_server_event, ga=True)
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds and "conversation.item.added" in kinds
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["type"] == "output_text"
    assert done["output"][0]["content"][0]["text"].strip()


async def test_azure_client_preview_text_turn_speaks_beta(tls: TlsServer) -> None:
    client = tls.azure(PREVIEW_VERSION)
    async with client.beta.realtime.connect(
        model=DEPLOYMENT, websocket_connection_options={"ssl": tls.ssl}
    ) as connection:
        created = validate_beta_server_event(await connection.recv_bytes())
        assert created["type"] == "session.created" and created["session"]["modalities"] == ["audio", "text"]
        assert validate_beta_server_event(await connection.recv_bytes())["type"] == "conversation.created"
        events = await text_turn(connection, validate_beta_server_event, ga=False)
    kinds = [e["type"] for e in events]
    assert "response.text.delta" in kinds and "conversation.item.created" in kinds
    assert not [k for k in kinds if k.startswith("response.output_text") or k == "conversation.item.added"]
    assert events[-1]["response"]["output"][0]["content"][0]["type"] == "text"


async def test_azure_client_ga_voice_turn(tls: TlsServer) -> None:
    client = tls.azure(GA_VERSION)
    async with client.realtime.connect(
        model=DEPLOYMENT, websocket_connection_options={"ssl": tls.ssl}
    ) as connection:
        assert validate_server_event(await connection.recv_bytes())["type"] == "session.created"
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": INSTRUCTIONS,
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        events: list[dict[str, Any]] = []

        async def listen() -> None:
            while True:
                events.append(validate_server_event(await connection.recv_bytes()))
                kinds = {e["type"] for e in events}
                if {"response.done", "conversation.item.input_audio_transcription.completed"} <= kinds:
                    return

        listener = asyncio.create_task(listen())
        await stream(connection.input_audio_buffer.append, speech().astype("<i2").tobytes(), bytes_per_ms=48)
        await asyncio.wait_for(listener, TURN_TIMEOUT_S)
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    spoken = next(e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done")
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert corpus_wer([(transcripts()[CLIP], heard["transcript"])]) <= 0.2, heard["transcript"]
    assert next(e for e in events if e["type"] == "response.done")["response"]["status"] == "completed"
    assert len(audio) >= 48 * 1000
    assert await answer_transcript_check(tls.server, audio, "audio/pcm", spoken, ssl=tls.ssl) <= 0.25


async def beta_voice_turn(connection: Any, *, audio_format: str) -> list[dict[str, Any]]:
    """One spoken turn the beta way: server VAD, whisper-1 transcription, audio out in
    ``audio_format``; every event held to the beta union."""
    first = [validate_beta_server_event(await connection.recv_bytes()) for _ in range(2)]
    assert [e["type"] for e in first] == ["session.created", "conversation.created"]
    await connection.session.update(
        session={
            "modalities": ["audio", "text"],
            "instructions": INSTRUCTIONS,
            "voice": "alloy",
            "input_audio_format": audio_format,
            "output_audio_format": audio_format,
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            "temperature": 0.8,
        }
    )
    events: list[dict[str, Any]] = []

    async def listen() -> None:
        while True:
            event = validate_beta_server_event(await connection.recv_bytes())
            assert not event["type"].startswith(
                ("response.output_text", "response.output_audio", "conversation.item.added")
            ), event
            events.append(event)
            kinds = {e["type"] for e in events}
            if {"response.done", "conversation.item.input_audio_transcription.completed"} <= kinds:
                return

    listener = asyncio.create_task(listen())
    fmt = beta.BETA_FORMATS[audio_format]["type"]
    pcm = formats.encode(fmt, speech())
    await stream(connection.input_audio_buffer.append, pcm, bytes_per_ms=formats.bytes_per_ms(fmt))
    await asyncio.wait_for(listener, TURN_TIMEOUT_S)
    return events


async def check_beta_voice_turn(tls: TlsServer, events: list[dict[str, Any]], audio_format: str) -> None:
    kinds = [e["type"] for e in events]
    updated = next(e for e in events if e["type"] == "session.updated")["session"]
    assert updated["input_audio_format"] == audio_format and updated["output_audio_format"] == audio_format
    assert updated["input_audio_transcription"]["model"] == "whisper-1"
    order = [
        k
        for k in kinds
        if k
        in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.created",
            "response.created",
        )
    ]
    assert order[:5] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "response.created",
    ], order
    user_item = next(e for e in events if e["type"] == "conversation.item.created")["item"]
    assert user_item["role"] == "user" and user_item["content"] == [
        {"type": "input_audio", "transcript": None}
    ]
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert heard["item_id"] == user_item["id"]
    # 8 kHz telephone audio costs Whisper a word or two of this nine-word clip
    limit = 0.2 if audio_format == "pcm16" else 0.34
    assert corpus_wer([(transcripts()[CLIP], heard["transcript"])]) <= limit, heard["transcript"]
    fmt = beta.BETA_FORMATS[audio_format]["type"]
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
    assert len(audio) >= formats.bytes_per_ms(fmt) * 1000
    spoken = next(e for e in events if e["type"] == "response.audio_transcript.done")["transcript"]
    done = next(e for e in events if e["type"] == "response.done")["response"]
    assert done["status"] == "completed" and done["output_audio_format"] == audio_format
    assert done["modalities"] == ["audio", "text"] and done["voice"] == "alloy"
    assert done["output"][0]["content"] == [{"type": "audio", "transcript": spoken}]
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert await answer_transcript_check(tls.server, audio, fmt, spoken, ssl=tls.ssl) <= 0.25


async def test_beta_sdk_voice_turn(tls: TlsServer) -> None:
    client = AsyncOpenAI(base_url=tls.server.base_url, api_key=tls.server.api_key, http_client=tls.http())
    async with client.beta.realtime.connect(
        model="gpt-4o-realtime-preview", websocket_connection_options={"ssl": tls.ssl}
    ) as connection:
        events = await beta_voice_turn(connection, audio_format="pcm16")
    await check_beta_voice_turn(tls, events, "pcm16")


async def test_azure_preview_voice_turn_in_g711(tls: TlsServer) -> None:
    client = tls.azure(PREVIEW_VERSION)
    async with client.beta.realtime.connect(
        model=DEPLOYMENT, websocket_connection_options={"ssl": tls.ssl}
    ) as connection:
        events = await beta_voice_turn(connection, audio_format="g711_ulaw")
    await check_beta_voice_turn(tls, events, "g711_ulaw")


async def test_openai_client_on_azure_v1_with_webrtc_filter_sideband_and_hangup(tls: TlsServer) -> None:
    client = AsyncOpenAI(
        base_url=tls.server.url + "/openai/v1",
        api_key="placeholder-not-a-key",  # the SDK needs one; Azure's api-key header is the credential
        default_headers={"api-key": tls.server.api_key},
        http_client=tls.http(),
    )
    options = {"ssl": tls.ssl}
    async with client.realtime.connect(model=DEPLOYMENT, websocket_connection_options=options) as connection:
        created = validate_server_event(await connection.recv_bytes())
        assert created["session"]["model"] == DEPLOYMENT
        events = await text_turn(connection, validate_server_event, ga=True)
        assert events[-1]["response"]["status"] == "completed"

    # Azure's browser flow: a GA key from /openai/v1/realtime/client_secrets, the offer to
    # /openai/v1/realtime/calls?webrtcfilter=on on the 'realtime-channel' data channel
    secret = await client.realtime.client_secrets.create(
        session={"type": "realtime", "model": DEPLOYMENT, "instructions": "Keep this private."}
    )
    assert secret.value.startswith("ek_")
    caller = Caller()
    try:
        call_id = await caller.connect(
            tls.server,
            key=secret.value,
            path="/openai/v1/realtime/calls?webrtcfilter=on",
            label="realtime-channel",
            verify=tls.ssl,
        )
        # a sideband on Azure's v1 path sees the whole session and drives a text answer
        async with client.realtime.connect(call_id=call_id, websocket_connection_options=options) as sideband:
            seen: list[dict[str, Any]] = []
            while not any(e["type"] == "session.created" for e in seen):
                seen.append(validate_server_event(await sideband.recv_bytes()))
            assert seen[-1]["session"]["instructions"] == "Keep this private."
            await sideband.conversation.item.create(item=user_text("Say hello."))
            await sideband.response.create(response={"output_modalities": ["text"]})
            while seen[-1]["type"] != "response.done":
                seen.append(validate_server_event(await sideband.recv_bytes()))
        text = seen[-1]["response"]["output"][0]["content"][0]["text"]
        # the browser's channel got only the filtered events: the answer's text, no session
        await caller.until("response.output_text.done", timeout=60)
        kinds = {e["type"] for _, e in caller.events}
        assert kinds <= AZURE_WEBRTC_FILTER, kinds - AZURE_WEBRTC_FILTER
        assert {"conversation.item.added", "response.output_text.delta"} <= kinds
        assert caller.of("response.output_text.done")[0]["text"] == text
        assert "Keep this private." not in str(caller.events)
        # call control on Azure's path (API key only)
        async with tls.http(base_url=tls.server.url) as http:
            refused = await http.post(
                f"/openai/v1/realtime/calls/{call_id}/hangup",
                headers={"Authorization": f"Bearer {secret.value}"},
            )
            assert refused.status_code == 401
        await client.realtime.calls.hangup(call_id)
        async with tls.http(base_url=tls.server.url) as http:
            gone = await http.post(
                f"/openai/v1/realtime/calls/{call_id}/hangup", headers={"api-key": tls.server.api_key}
            )
            assert gone.status_code == 404
    finally:
        await caller.close()


async def test_azure_preview_sessions_route_and_webrtc(tls: TlsServer) -> None:
    async with tls.http(base_url=tls.server.url) as http:
        minted = await http.post(
            f"/openai/realtimeapi/sessions?api-version={PREVIEW_VERSION}",
            json={"model": DEPLOYMENT, "voice": "verse", "instructions": "From the preview route."},
            headers={"api-key": tls.server.api_key},
        )
        assert minted.status_code == 200, minted.text
        body = minted.json()
        assert body["voice"] == "verse" and body["client_secret"]["value"].startswith("ek_")
        for query, code in [
            ("", "missing_required_parameter"),
            ("?api-version=2023-05-15", "unsupported_api_version"),
        ]:
            refused = await http.post(
                f"/openai/realtimeapi/sessions{query}", json={}, headers={"api-key": tls.server.api_key}
            )
            assert refused.status_code == 400 and refused.json()["error"]["code"] == code
    caller = Caller(validate=validate_beta_server_event)
    try:
        await caller.connect(
            tls.server,
            key=body["client_secret"]["value"],
            path=f"/v1/realtimertc?model={DEPLOYMENT}",
            label="realtime-channel",
            verify=tls.ssl,
        )
        first = await caller.until("conversation.created", timeout=30)
        assert first[0]["session"]["voice"] == "verse"
        assert first[0]["session"]["instructions"] == "From the preview route."
    finally:
        await caller.close()


async def test_api_versions_and_query_keys(tls: TlsServer) -> None:
    server = tls.server
    base = server.ws_url + "/openai/realtime"
    for query, code in [
        (f"?api-version=2023-05-15&deployment={DEPLOYMENT}", "unsupported_api_version"),
        (f"?api-version=2025-06-01-preview&deployment={DEPLOYMENT}", "unsupported_api_version"),
        (f"?api-version=latest&deployment={DEPLOYMENT}", "unsupported_api_version"),
        (f"?deployment={DEPLOYMENT}", "missing_required_parameter"),
        (f"?api-version={GA_VERSION}", "missing_model"),
    ]:
        async with websockets.connect(
            base + query, additional_headers={"api-key": server.api_key}, ssl=tls.ssl
        ) as ws:
            error = validate_server_event(await ws.recv())["error"]
            assert error["code"] == code, (query, error)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
    # a browser's key in the query, on both Azure socket paths; the shape follows the api-version
    for url, validate, kind in [
        (
            f"{base}?api-version={PREVIEW_VERSION}&deployment={DEPLOYMENT}&api-key={server.api_key}",
            validate_beta_server_event,
            "conversation.created",
        ),
        (
            f"{base}?api-version=2024-10-01-preview&deployment={DEPLOYMENT}&api-key={server.api_key}",
            validate_beta_server_event,
            "conversation.created",
        ),
        (
            f"{base}?api-version=2025-10-01&deployment={DEPLOYMENT}&api-key={server.api_key}",
            validate_server_event,
            None,
        ),
        (
            f"{server.ws_url}/openai/v1/realtime?model={DEPLOYMENT}&api-key={server.api_key}",
            validate_server_event,
            None,
        ),
    ]:
        async with websockets.connect(url, ssl=tls.ssl) as ws:
            created = validate(await ws.recv())
            assert created["type"] == "session.created" and created["session"]["model"] in (
                DEPLOYMENT,
                "gpt-realtime",
            )
            if kind is not None:
                assert validate(await ws.recv())["type"] == kind
    async with websockets.connect(
        f"{server.ws_url}/openai/v1/realtime?model=x&api-key=wrong", ssl=tls.ssl
    ) as ws:
        assert validate_server_event(await ws.recv())["error"]["code"] == "invalid_api_key"
    # query keys are an Azure thing: OpenAI's path does not take them
    async with websockets.connect(
        f"{server.ws_url}/v1/realtime?model=x&api-key={server.api_key}", ssl=tls.ssl
    ) as ws:
        assert validate_server_event(await ws.recv())["error"]["code"] == "invalid_api_key"
    assert server.api_key not in server.log()
