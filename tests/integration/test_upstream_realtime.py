"""A gateway whose responses come from a second openrealtime over its Realtime WebSocket
(``UPSTREAM_URL``): voice turns from the openai SDK and from a WebRTC call, the ledger's
usage against the upstream's own, and the upstream killed mid-response (the local models
answer the next turn with the conversation so far; without a fallback the session closes).
Real servers, real recorded speech."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from tests.speech_audio import caller_audio
from tests.support import ServerProcess, run_server, validate_server_event
from tests.webrtc_client import Caller

pytestmark = pytest.mark.slow

INSTRUCTIONS = "You are a helpful voice assistant. Answer in one short sentence."
VOICE = {
    "type": "realtime",
    "instructions": INSTRUCTIONS,
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}},
}
TOKEN_FIELDS = (
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "input_token_details",
    "output_token_details",
)


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess, ServerProcess]]:
    """(gateway with the cascade as fallback, gateway without a fallback, their upstream)."""
    with run_server(tmp_path_factory.mktemp("upstream")) as upstream:
        env = {
            "OPENREALTIME_UPSTREAM_URL": upstream.base_url,
            "OPENREALTIME_UPSTREAM_API_KEY": upstream.api_key,
        }
        with (
            run_server(tmp_path_factory.mktemp("gateway"), env=env) as gateway,
            run_server(
                tmp_path_factory.mktemp("strict"), env={**env, "OPENREALTIME_UPSTREAM_FALLBACK": "none"}
            ) as strict,
        ):
            yield gateway, strict, upstream


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    call = Caller()
    yield call
    await call.close()


def usage_of(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(
        server.base_url + "/usage", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30
    )
    response.raise_for_status()
    rows = response.json()["data"]
    return rows[0] if rows else {"responses": 0}


def settled_usage(server: ServerProcess, responses: int) -> dict[str, Any]:
    """The server's ledger once it holds ``responses`` responses (it writes in batches)."""
    deadline = time.monotonic() + 30
    while True:
        row = usage_of(server)
        if row["responses"] >= responses or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


def tokens(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: usage[key] for key in TOKEN_FIELDS}


async def speak(send: Any, clip: str) -> None:
    """A recorded question at real-time pace, in 40 ms appends."""
    pcm = caller_audio(clip)
    for start in range(0, len(pcm), 960):
        audio = base64.b64encode(pcm[start : start + 960].tobytes()).decode()
        await send({"type": "input_audio_buffer.append", "audio": audio})
        await asyncio.sleep(0.04)


async def test_a_voice_turn_through_the_upstream_with_its_usage_in_the_ledger(
    servers: tuple[ServerProcess, ServerProcess, ServerProcess],
) -> None:
    gateway, _, upstream = servers
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.api_key)
    audio = bytearray()
    done: list[dict[str, Any]] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        created = validate_server_event(await connection.recv_bytes())
        assert created["type"] == "session.created" and created["session"]["id"].startswith("sess_")
        await connection.send({"type": "session.update", "session": VOICE})

        async def listen() -> None:
            while True:
                event = validate_server_event(await connection.recv_bytes())
                if event["type"] == "response.output_audio.delta":
                    audio.extend(base64.b64decode(event["delta"]))
                elif event["type"] == "response.done":
                    done.append(event["response"])
                    return

        listener = asyncio.create_task(listen())
        await speak(connection.send, "cards-005")
        await asyncio.wait_for(listener, 180)
    response = done[0]
    assert response["status"] == "completed", response
    assert response["id"].startswith("resp_") and response["output"][0]["id"].startswith("item_")
    assert response["output"][0]["content"][0]["transcript"].strip()
    assert len(audio) > 48_000 * 0.5, len(audio)  # over half a second of the upstream's answer
    # the upstream answered: its ledger holds the response, billed exactly as the gateway's
    there = settled_usage(upstream, 1)
    here = settled_usage(gateway, 1)
    assert there["responses"] == here["responses"] == 1
    assert tokens(here) == tokens(there) == tokens(response["usage"])
    assert response["usage"]["input_token_details"]["audio_tokens"] > 0  # it heard the caller


async def test_a_webrtc_call_reaches_the_upstream(
    servers: tuple[ServerProcess, ServerProcess, ServerProcess], caller: Caller
) -> None:
    gateway, _, upstream = servers
    before = usage_of(upstream)["responses"]
    await caller.connect(gateway, session={**VOICE, "model": "gpt-realtime"})
    await caller.until("session.created", timeout=60)
    caller.mic.play(caller_audio("goforward"))
    done = (await caller.until("response.done", timeout=180))[-1]["response"]
    await caller.until("output_audio_buffer.stopped", timeout=60)
    assert done["status"] == "completed", done
    assert "response.output_audio.delta" not in [e["type"] for _, e in caller.events]  # RTP
    started = caller.time_of(caller.of("output_audio_buffer.started")[0])
    stopped = caller.time_of(caller.of("output_audio_buffer.stopped")[0])
    assert caller.audio_between(started, stopped + 0.3) > 0.3  # the caller heard the answer
    assert settled_usage(upstream, before + 1)["responses"] == before + 1


async def test_the_upstream_killed_mid_response(
    servers: tuple[ServerProcess, ServerProcess, ServerProcess],
) -> None:
    """Runs last: it kills the upstream."""
    gateway, strict, upstream = servers
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    url = gateway.ws_url + "/v1/realtime?model=gpt-realtime"
    strict_url = strict.ws_url + "/v1/realtime?model=gpt-realtime"
    strict_headers = {"Authorization": f"Bearer {strict.api_key}"}
    async with (
        websockets.connect(url, additional_headers=headers, max_size=None) as ws,
        websockets.connect(strict_url, additional_headers=strict_headers, max_size=None) as strict_ws,
    ):

        async def send(event: dict[str, Any]) -> None:
            await ws.send(json.dumps(event))

        async def until(kind: str) -> dict[str, Any]:
            while True:
                event = validate_server_event(await asyncio.wait_for(ws.recv(), 180))
                if event["type"] == kind:
                    return event

        assert validate_server_event(await strict_ws.recv())["type"] == "session.created"
        await until("session.created")
        session = {**VOICE, "instructions": INSTRUCTIONS + " Answer in three full sentences."}
        await send({"type": "session.update", "session": session})
        await send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "The secret word is pineapple. Remember it."}],
                },
            }
        )
        await send({"type": "response.create"})
        first = (await until("response.done"))["response"]
        assert first["status"] == "completed", first

        # a spoken turn; the upstream dies as its answer starts to arrive
        speaking = asyncio.create_task(speak(send, "librivox-0880"))
        await until("response.output_audio.delta")
        upstream.process.kill()
        upstream.process.wait(30)
        failed = (await until("response.done"))["response"]
        await speaking
        assert failed["status"] == "failed", failed
        error = failed["status_details"]["error"]
        assert error["code"] == "upstream_error" and "upstream" in error["message"], error

        # the next turn is the local models', with the conversation so far
        question = "What is the secret word? Reply with the word only."
        await send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": question}],
                },
            }
        )
        await send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        answer = (await until("response.done"))["response"]
        assert answer["status"] == "completed", answer
        text = answer["output"][0]["content"][0]["text"]
        assert "pineapple" in text.lower(), text
        assert "answering with the local models" in gateway.log()

        # without a fallback the session ends: the upstream's error, then a clean close
        events = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                events.append(validate_server_event(await asyncio.wait_for(strict_ws.recv(), 60)))
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "upstream_error"
        errors = [e["error"] for e in events if e["type"] == "error"]
        assert errors and errors[-1]["code"] == "upstream_error" and "upstream" in errors[-1]["message"]
