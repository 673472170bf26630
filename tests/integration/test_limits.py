"""Server-wide limits against the real server: concurrent sessions per key, the per-key event
rate, and a client that stops reading."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.support import ServerProcess, run_server, validate_server_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "OPENREALTIME_MAX_SESSIONS_PER_KEY": "2",
        "OPENREALTIME_MAX_EVENTS_PER_SECOND": "20",
        "OPENREALTIME_EVENT_BURST": "100",
        "OPENREALTIME_MAX_SEND_QUEUE_BYTES": "1000000",
        "OPENREALTIME_IDLE_CONNECTION_SECONDS": "3",
        "OPENREALTIME_MAX_MESSAGE_BYTES": "2000000",
        "OPENREALTIME_MAX_INPUT_BUFFER_SECONDS": "10",
    }
    with run_server(tmp_path_factory.mktemp("limited"), args=["--text-only"], env=env) as server:
        yield server


def connect(server: ServerProcess, **kwargs: Any) -> Any:
    return websockets.connect(
        f"{server.ws_url}/v1/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {server.api_key}"},
        max_size=None,
        **kwargs,
    )


async def recv(ws: Any) -> dict[str, Any]:
    return validate_server_event(await ws.recv())


async def test_sessions_per_key_are_limited(limited_server: ServerProcess) -> None:
    async with connect(limited_server) as first, connect(limited_server) as second:
        assert (await recv(first))["type"] == "session.created"
        assert (await recv(second))["type"] == "session.created"
        async with connect(limited_server) as third:
            event = await recv(third)
            assert event["type"] == "error" and event["error"]["code"] == "session_limit_reached"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await third.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    # the slots are given back when sessions end
    async with connect(limited_server) as again:
        assert (await recv(again))["type"] == "session.created"


async def test_events_over_the_key_rate_are_refused_and_the_session_goes_on(
    limited_server: ServerProcess,
) -> None:
    async with connect(limited_server) as ws:
        assert (await recv(ws))["type"] == "session.created"
        for n in range(150):
            await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": f"evt_{n}"}))
        refused: list[str] = []
        cleared = 0
        while cleared + len(refused) < 150:
            event = await recv(ws)
            if event["type"] == "input_audio_buffer.cleared":
                cleared += 1
            elif event["type"] == "error":
                assert event["error"]["code"] == "rate_limit_exceeded"
                refused.append(event["error"]["event_id"])
        assert 100 <= cleared < 150 and refused, (cleared, len(refused))
        assert all(r.startswith("evt_") for r in refused)
        # the bucket refills: the session keeps working
        for _ in range(100):
            await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "evt_later"}))
            event = await recv(ws)
            if event["type"] == "input_audio_buffer.cleared":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the event rate never recovered")


async def test_a_client_that_stops_reading_is_disconnected(limited_server: ServerProcess) -> None:
    # Each item echoes back twice (added + done); the client never reads, so the server's
    # queue passes its 1 MB bound once the socket buffers are full.
    text = "x" * 200_000
    async with connect(limited_server, max_queue=1) as ws:
        assert (await recv(ws))["type"] == "session.created"  # admitted; from here on it reads nothing
        for n in range(200):
            try:
                await asyncio.wait_for(
                    ws.send(
                        json.dumps(
                            {
                                "type": "conversation.item.create",
                                "item": {
                                    "type": "message",
                                    "role": "user",
                                    "content": [{"type": "input_text", "text": text}],
                                },
                                "event_id": f"evt_{n}",
                            }
                        )
                    ),
                    5,
                )
            except (websockets.ConnectionClosed, TimeoutError):
                break
        # never read: the server must give up on this client rather than buffer without bound
        deadline = time.monotonic() + 60
        while "client is not reading" not in limited_server.log():
            assert time.monotonic() < deadline, "the server kept buffering for a client that does not read"
            await asyncio.sleep(0.2)


async def test_an_idle_connection_is_closed(limited_server: ServerProcess) -> None:
    async with connect(limited_server) as ws:
        assert (await recv(ws))["type"] == "session.created"
        event = validate_server_event(await asyncio.wait_for(ws.recv(), 60))
        assert event["type"] == "error" and event["error"]["code"] == "idle_timeout", event
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_message_over_the_size_limit_closes_with_1009(limited_server: ServerProcess) -> None:
    async with connect(limited_server) as ws:
        assert (await recv(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 2_100_000}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_the_input_buffer_is_capped(limited_server: ServerProcess) -> None:
    second = base64.b64encode(bytes(48_000)).decode()  # 1 s of 24 kHz pcm16
    async with connect(limited_server) as ws:
        assert (await recv(ws))["type"] == "session.created"
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
                }
            )
        )
        assert (await recv(ws))["type"] == "session.updated"
        for n in range(11):
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": second, "event_id": f"evt_{n}"})
            )
        error = await recv(ws)
        assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_full", error
        assert error["error"]["event_id"] == "evt_10"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        committed = await recv(ws)
        assert committed["type"] == "input_audio_buffer.committed"  # the ten seconds before are kept


async def test_a_session_ends_at_its_maximum_duration(tmp_path: Path) -> None:
    env = {"OPENREALTIME_MAX_SESSION_MINUTES": "0.05"}  # 3 s
    with run_server(tmp_path, args=["--text-only"], env=env) as server:
        async with connect(server) as ws:
            created = await recv(ws)
            assert created["session"]["expires_at"] - time.time() < 10
            event = validate_server_event(await asyncio.wait_for(ws.recv(), 60))
            assert event["type"] == "error" and event["error"]["code"] == "session_expired", event
            assert "maximum duration of 0.05 minutes" in event["error"]["message"]
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
