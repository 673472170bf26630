"""Beta-shape clients against the real server (text turns on the real default LLM): the
official SDK's ``client.beta.realtime`` over WebSocket, its ``sessions`` and
``transcription_sessions`` keys, a browser-style socket (subprotocols), the beta WebRTC offer,
and a server that has the beta shape turned off. Every event received is held to the SDK's
beta union (``openai.types.beta.realtime``). Voice turns: test_azure_and_beta_clients.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI
from openai.types.beta.realtime.session_create_response import SessionCreateResponse
from openai.types.beta.realtime.transcription_session import TranscriptionSession

from tests.support import ServerProcess, run_server, validate_beta_server_event, validate_server_event
from tests.webrtc_client import Caller

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
GA_ONLY_NAMES = (
    "response.output_text",
    "response.output_audio",
    "conversation.item.added",
    "conversation.item.done",
    "mcp",
)


def beta_client(server: ServerProcess) -> AsyncOpenAI:
    """The SDK as a beta app configures it for a plain-HTTP server (it forces ``wss://``
    otherwise)."""
    return AsyncOpenAI(
        base_url=server.base_url, api_key=server.api_key, websocket_base_url=server.ws_url + "/v1"
    )


class BetaSession:
    """A ``client.beta.realtime`` connection whose every received event is checked against
    the beta union and kept."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.seen: list[dict[str, Any]] = []

    async def recv(self) -> dict[str, Any]:
        event = validate_beta_server_event(await self.connection.recv_bytes())
        assert not event["type"].startswith(GA_ONLY_NAMES), event
        self.seen.append(event)
        return event

    async def until(self, kind: str, limit: int = 2000) -> list[dict[str, Any]]:
        events = []
        for _ in range(limit):
            events.append(await self.recv())
            if events[-1]["type"] == kind:
                return events
        raise AssertionError(f"no {kind}")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == kind]


@pytest.fixture
async def beta(text_server: ServerProcess) -> AsyncIterator[BetaSession]:
    async with beta_client(text_server).beta.realtime.connect(model="gpt-4o-realtime-preview") as connection:
        session = BetaSession(connection)
        first = await session.until("conversation.created")
        assert [e["type"] for e in first] == ["session.created", "conversation.created"]
        yield session


def user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def test_text_turn_with_the_beta_sdk(beta: BetaSession) -> None:
    created = beta.seen[0]["session"]
    assert created["model"] == "gpt-4o-realtime-preview" and created["temperature"] == 0.8
    conversation = beta.seen[1]["conversation"]["id"]
    await beta.connection.session.update(
        session={
            "modalities": ["text"],
            "instructions": "You are terse. Answer in one short sentence.",
            "temperature": 0.7,
        }
    )
    session = (await beta.until("session.updated"))[-1]["session"]
    assert session["modalities"] == ["text"] and session["temperature"] == 0.7
    await beta.connection.conversation.item.create(item=user_text("Say hello."))
    await beta.connection.response.create()
    events = await beta.until("response.done")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "conversation.item.created" and kinds.count("conversation.item.created") == 2
    assert kinds[1] == "response.created" and "response.text.delta" in kinds
    assert kinds[-4:] == [
        "response.text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    text = "".join(e["delta"] for e in beta.of("response.text.delta"))
    assert text.strip() and beta.of("response.text.done")[0]["text"] == text
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["modalities"] == ["text"] and done["temperature"] == 0.7
    assert done["conversation_id"] == conversation
    assert done["output"][0]["content"] == [{"type": "text", "text": text}]
    assert done["usage"]["output_tokens"] > 0 and "image_tokens" not in done["usage"]["input_token_details"]
    # the assistant item was announced once, in progress, and finished in output_item.done
    created_items = beta.of("conversation.item.created")
    assert created_items[1]["item"]["status"] == "in_progress" and created_items[1]["item"]["content"] == []
    assert beta.of("response.output_item.done")[0]["item"]["content"][0]["type"] == "text"


async def test_function_call_round_trip_in_beta(beta: BetaSession) -> None:
    await beta.connection.session.update(
        session={
            "modalities": ["text"],
            "instructions": "Use the weather tool for weather questions.",
            "tools": [WEATHER_TOOL],
            "tool_choice": "get_weather",  # the beta way to force one function
        }
    )
    session = (await beta.until("session.updated"))[-1]["session"]
    assert session["tool_choice"] == "get_weather" and session["tools"][0]["name"] == "get_weather"
    await beta.connection.conversation.item.create(item=user_text("What is the weather in Paris?"))
    await beta.connection.response.create()
    events = await beta.until("response.done")
    args = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(args) == 1 and args[0]["name"] == "get_weather"
    assert "city" in json.loads(args[0]["arguments"])
    call = events[-1]["response"]["output"][-1]
    assert call["type"] == "function_call" and call["call_id"] == args[0]["call_id"]
    await beta.connection.conversation.item.create(
        item={"type": "function_call_output", "call_id": call["call_id"], "output": '{"temperature_c": 21}'}
    )
    output_item = (await beta.until("conversation.item.created"))[-1]["item"]
    assert output_item["type"] == "function_call_output"
    await beta.connection.response.create(response={"tool_choice": "none", "modalities": ["text"]})
    done = (await beta.until("response.done"))[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"].strip()


async def test_errors_keep_beta_params_and_the_session_goes_on(beta: BetaSession) -> None:
    await beta.connection.send({"type": "session.update", "event_id": "evt_voice", "session": {"voice": 5}})  # type: ignore[typeddict-item]
    error = (await beta.until("error"))[-1]["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "invalid_type",
        "session.voice",
        "evt_voice",
    )
    # refused by the GA session behind the shape, reported in beta terms
    await beta.connection.send({"type": "session.update", "event_id": "evt_speed", "session": {"speed": 3.0}})
    error = (await beta.until("error"))[-1]["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "decimal_above_max_value",
        "session.speed",
        "evt_speed",
    )
    await beta.connection.send({"type": "session.create", "event_id": "evt_type"})  # type: ignore[misc, typeddict-item]
    error = (await beta.until("error"))[-1]["error"]
    assert (error["code"], error["param"]) == (
        "invalid_value",
        "type",
    ) and "'transcription_session.update'" in error["message"]
    await beta.connection.session.update(session={"instructions": "Still here."})
    assert (await beta.until("session.updated"))[-1]["session"]["instructions"] == "Still here."


async def test_sessions_create_mints_a_key_that_opens_a_beta_session(text_server: ServerProcess) -> None:
    client = beta_client(text_server)
    before = int(time.time())
    created = await client.beta.realtime.sessions.create(
        model="gpt-4o-realtime-preview",
        modalities=["text"],
        instructions="Bound to the key.",
        voice="verse",
        temperature=0.7,
        input_audio_format="g711_ulaw",
        turn_detection={"type": "server_vad", "silence_duration_ms": 600},
    )
    assert isinstance(created, SessionCreateResponse)
    assert created.client_secret.value.startswith("ek_")
    assert before + 50 <= created.client_secret.expires_at <= int(time.time()) + 61  # about a minute
    assert created.modalities == ["text"] and created.voice == "verse" and created.temperature == 0.7
    assert created.input_audio_format == "g711_ulaw" and created.turn_detection is not None
    assert created.turn_detection.silence_duration_ms == 600
    key = created.client_secret.value

    # the browser way: subprotocols, the key in openai-insecure-api-key., beta by subprotocol
    url = text_server.ws_url + "/v1/realtime?model=gpt-4o-realtime-preview"
    protocols = ["realtime", f"openai-insecure-api-key.{key}", "openai-beta.realtime-v1"]
    async with websockets.connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        session = validate_beta_server_event(await ws.recv())["session"]
        assert session["instructions"] == "Bound to the key." and session["voice"] == "verse"
        assert session["temperature"] == 0.7 and session["input_audio_format"] == "g711_ulaw"
        assert validate_beta_server_event(await ws.recv())["type"] == "conversation.created"
    # the same key on a GA connection: the bound session, in GA terms
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        session = validate_server_event(await ws.recv())["session"]
        assert session["instructions"] == "Bound to the key." and session["output_modalities"] == ["text"]
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}

    # only API keys mint; bad fields are named as the body has them
    async with httpx.AsyncClient(base_url=text_server.base_url) as http:
        refused = await http.post("/realtime/sessions", json={}, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": f"Bearer {text_server.api_key}"}
        for body, param in [
            ({"voice": 5}, "voice"),
            ({"turn_detection": {"type": "nope"}}, "turn_detection.type"),
            ({"speed": 2.0}, "speed"),
            (
                {"client_secret": {"expires_after": {"anchor": "created_at", "seconds": 5}}},
                "client_secret.expires_after.seconds",
            ),
            ({"session": {}}, "session"),
        ]:
            bad = await http.post("/realtime/sessions", json=body, headers=auth)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == param, (body, bad.text)
        longer = await http.post(
            "/realtime/sessions",
            json={"client_secret": {"expires_after": {"anchor": "created_at", "seconds": 600}}},
            headers=auth,
        )
        assert longer.json()["client_secret"]["expires_at"] >= int(time.time()) + 590


async def test_transcription_sessions_create_and_a_beta_transcription_socket(
    text_server: ServerProcess,
) -> None:
    client = beta_client(text_server)
    created = await client.beta.realtime.transcription_sessions.create(
        input_audio_transcription={"model": "whisper-1", "language": "en"},
        turn_detection={"type": "server_vad", "silence_duration_ms": 400},
        include=["item.input_audio_transcription.logprobs"],
    )
    assert isinstance(created, TranscriptionSession) and created.client_secret.value.startswith("ek_")
    assert (
        created.input_audio_transcription is not None
        and created.input_audio_transcription.model == "whisper-1"
    )
    url = text_server.ws_url + "/v1/realtime?intent=transcription"
    headers = {"Authorization": f"Bearer {created.client_secret.value}", "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        first = validate_beta_server_event(await ws.recv())
        assert first["type"] == "transcription_session.created"
        assert first["session"]["input_audio_transcription"]["model"] == "whisper-1"
        assert first["session"]["turn_detection"]["silence_duration_ms"] == 400
        await ws.send(
            json.dumps(
                {
                    "type": "transcription_session.update",
                    "session": {
                        "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                        "turn_detection": None,
                    },
                }
            )
        )
        updated = validate_beta_server_event(await ws.recv())
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
        assert updated["session"]["turn_detection"] is None


@pytest.mark.parametrize(
    "path", ["/v1/realtime?model=gpt-4o-realtime-preview", "/v1/realtimertc?model=my-deployment"]
)
async def test_beta_webrtc_offer_speaks_beta_on_the_data_channel(
    text_server: ServerProcess, path: str
) -> None:
    """openai-realtime-console's flow: a key from ``/v1/realtime/sessions``, the SDP offer
    posted to ``/v1/realtime?model=…`` (Azure's preview: ``/v1/realtimertc``), beta events on
    the data channel, beta client events accepted there."""
    async with httpx.AsyncClient(base_url=text_server.base_url) as http:
        minted = await http.post(
            "/realtime/sessions",
            json={"instructions": "Answer in one short sentence.", "modalities": ["text"]},
            headers={"Authorization": f"Bearer {text_server.api_key}"},
        )
    key = minted.json()["client_secret"]["value"]
    caller = Caller(validate=validate_beta_server_event)
    try:
        await caller.connect(
            text_server, key=key, path=path, label="realtime-channel" if "rtc" in path else "oai-events"
        )
        first = await caller.until("conversation.created", timeout=30)
        assert [e["type"] for e in first] == ["session.created", "conversation.created"]
        assert first[0]["session"]["instructions"] == "Answer in one short sentence."
        caller.send({"type": "session.update", "session": {"temperature": 0.9, "voice": "sage"}})
        updated = (await caller.until("session.updated", timeout=30))[-1]["session"]
        assert updated["temperature"] == 0.9 and updated["voice"] == "sage"
        caller.send({"type": "conversation.item.create", "item": user_text("Say hello.")})
        caller.send({"type": "response.create"})
        done = (await caller.until("response.done", timeout=120))[-1]["response"]
        assert done["status"] == "completed" and done["output"][0]["content"][0]["type"] == "text"
        assert [e for e in caller.of("conversation.item.created") if e["item"]["role"] == "user"]
    finally:
        await caller.close()


@pytest.fixture(scope="module")
def ga_only_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"OPENREALTIME_BETA_SHAPE": "false", "OPENREALTIME_WARM_UP": "false"}
    with run_server(tmp_path_factory.mktemp("ga-only"), args=["--text-only"], env=env) as server:
        yield server


async def test_the_beta_shape_can_be_turned_off(ga_only_server: ServerProcess) -> None:
    server = ga_only_server
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    auth = {"Authorization": f"Bearer {server.api_key}"}
    for headers, protocols in [
        ({**auth, "OpenAI-Beta": "realtime=v1"}, None),
        ({}, ["realtime", f"openai-insecure-api-key.{server.api_key}", "openai-beta.realtime-v1"]),
    ]:
        async with websockets.connect(url, additional_headers=headers, subprotocols=protocols) as ws:  # type: ignore[arg-type]
            assert validate_server_event(await ws.recv())["error"]["code"] == "beta_api_shape_disabled"
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4000
    azure = server.ws_url + "/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-realtime"
    async with websockets.connect(azure, additional_headers={"api-key": server.api_key}) as ws:
        assert validate_server_event(await ws.recv())["error"]["code"] == "beta_api_shape_disabled"
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/v1/realtime/sessions", "/v1/realtime/transcription_sessions"):
            refused = await http.post(path, json={}, headers=auth)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "beta_api_shape_disabled"
        refused = await http.post(
            "/v1/realtime?model=gpt-realtime",
            content=b"v=0",
            headers={**auth, "Content-Type": "application/sdp"},
        )
        assert refused.json()["error"]["code"] == "beta_api_shape_disabled"
    # GA is untouched
    async with websockets.connect(url, additional_headers=auth) as ws:
        assert validate_server_event(await ws.recv())["type"] == "session.created"
