from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI

from tests.support import ServerProcess, run_server, validate_server_event


@pytest.fixture(scope="session")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server on the default 0.5B model, without speech engines."""
    tmp: Path = tmp_path_factory.mktemp("text-server")
    with run_server(tmp, args=["--text-only"]) as server:
        yield server


@pytest.fixture
async def ws(server: ServerProcess) -> AsyncIterator[Any]:
    """A GA WebSocket session on the module's ``server``, past its ``session.created``."""
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        assert validate_server_event(await socket.recv())["type"] == "session.created"
        yield socket


class Client:
    """An openai-SDK realtime connection whose every received event is strictly validated."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.connection.send(event)

    async def recv(self) -> dict[str, Any]:
        raw = await self.connection.recv_bytes()
        event = validate_server_event(raw)
        self.seen.append(event)
        return event

    async def until(self, kind: str, limit: int = 2000) -> list[dict[str, Any]]:
        """Receive events up to and including the first of type ``kind``."""
        events = []
        for _ in range(limit):
            event = await self.recv()
            events.append(event)
            if event["type"] == kind:
                return events
        raise AssertionError(f"no {kind} in {limit} events")


@pytest.fixture
async def client(text_server: ServerProcess) -> AsyncIterator[Client]:
    openai = AsyncOpenAI(base_url=text_server.base_url, api_key=text_server.api_key)
    async with openai.realtime.connect(model="gpt-realtime") as connection:
        wrapped = Client(connection)
        created = await wrapped.recv()
        assert created["type"] == "session.created"
        yield wrapped
