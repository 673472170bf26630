"""Admission control against the real server over real sockets: when the text responses in
progress reach the limit, a new ``response.create`` gets ``rate_limits.updated`` and then an
``error`` with code ``server_overloaded`` (and its ``event_id``); the session goes on and is
served once capacity frees up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.support import ServerProcess, run_server, validate_server_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admitting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"OPENREALTIME_MAX_TEXT_RESPONSES": "2"}
    with run_server(tmp_path_factory.mktemp("admission"), args=["--text-only"], env=env) as server:
        yield server


def connect(server: ServerProcess) -> Any:
    return websockets.connect(
        f"{server.ws_url}/v1/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {server.api_key}"},
        max_size=None,
    )


async def until(ws: Any, kind: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = validate_server_event(await asyncio.wait_for(ws.recv(), 120))
        events.append(event)
        if event["type"] == kind:
            return events


async def text_session(ws: Any) -> None:
    await until(ws, "session.created")
    update = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
    await ws.send(json.dumps(update))
    await until(ws, "session.updated")


def ask(text: str, event_id: str, tokens: int) -> list[str]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return [
        json.dumps({"type": "conversation.item.create", "item": item}),
        json.dumps(
            {"type": "response.create", "event_id": event_id, "response": {"max_output_tokens": tokens}}
        ),
    ]


async def test_overload_refuses_with_rate_limits_then_error_and_the_session_goes_on(
    admitting_server: ServerProcess,
) -> None:
    async with connect(admitting_server) as a, connect(admitting_server) as b, connect(admitting_server) as c:
        for ws in (a, b, c):
            await text_session(ws)
        for ws, name in ((a, "a"), (b, "b")):
            for frame in ask("Tell me a long story about the sea.", f"evt_long_{name}", 400):
                await ws.send(frame)
            await until(ws, "response.created")

        for frame in ask("Name a colour.", "evt_refused", 16):
            await c.send(frame)
        events = await until(c, "error")
        kinds = [event["type"] for event in events]
        assert "response.created" not in kinds
        limits = events[-2]
        assert limits["type"] == "rate_limits.updated", kinds
        assert limits["rate_limits"] == [
            {
                "name": "requests",
                "limit": 2,
                "remaining": 0,
                "reset_seconds": limits["rate_limits"][0]["reset_seconds"],
            }
        ]
        assert limits["rate_limits"][0]["reset_seconds"] > 0
        error = events[-1]["error"]
        assert error["type"] == "server_error"
        assert error["code"] == "server_overloaded"
        assert error["event_id"] == "evt_refused"

        # the session goes on: it still takes events, and is served once the others are done
        await c.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await until(c, "input_audio_buffer.cleared")
        for ws in (a, b):
            await ws.send(json.dumps({"type": "response.cancel"}))
            await until(ws, "response.done")
        served = None
        for attempt in range(60):
            await c.send(json.dumps({"type": "response.create", "event_id": f"evt_retry_{attempt}"}))
            event = validate_server_event(await asyncio.wait_for(c.recv(), 120))
            while event["type"] not in ("response.created", "error"):
                event = validate_server_event(await asyncio.wait_for(c.recv(), 120))
            if event["type"] == "response.created":
                served = await until(c, "response.done")
                break
            assert event["error"]["code"] == "server_overloaded"
            await asyncio.sleep(0.2)  # what a client does with reset_seconds
        assert served is not None
        done = served[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["content"][0]["text"].strip()
