"""A loopback WebSocket proxy between a Realtime client and the real server that checks every
server event against the openai SDK's server-event union on its way through.

Third-party clients parse events their own way (pipecat with its own pydantic models, LiveKit
leniently); putting this proxy in their path also holds everything they received to the SDK's
stricter types, without touching either side. Frames pass through unchanged, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support import validate_server_event

FORWARDED_HEADERS = ("authorization", "api-key", "openai-beta", "user-agent")


@dataclass
class ProxiedSession:
    """One client connection: the request line, what each side sent, and every event that
    failed validation (with the reason)."""

    path: str
    client_events: list[dict[str, Any]] = field(default_factory=list)
    server_events: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    timeline: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """Every event of both sides as the proxy relayed it: (``client`` or ``server``, event)."""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.server_events if event.get("type") == kind]

    def types(self) -> list[str]:
        return [str(event.get("type")) for event in self.server_events]


Validator = Callable[[str | bytes], dict[str, Any]]


class ValidatingProxy:
    """``ws://127.0.0.1:PORT`` → the server's WebSocket URL, same path, query and credentials.
    ``validate`` checks each server frame (the GA union by default; the beta union for
    clients of the beta shape)."""

    def __init__(self, upstream: str, validate: Validator = validate_server_event) -> None:
        self.upstream = upstream.rstrip("/")
        self.validate = validate
        self.sessions: list[ProxiedSession] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    async def _relay(self, downstream: ServerConnection) -> None:
        request = downstream.request
        assert request is not None
        session = ProxiedSession(request.path)
        self.sessions.append(session)
        headers = [
            (name, value) for name, value in request.headers.raw_items() if name.lower() in FORWARDED_HEADERS
        ]
        async with connect(
            self.upstream + request.path, additional_headers=headers, max_size=None
        ) as upstream:

            async def to_server() -> None:
                async for frame in downstream:
                    with contextlib.suppress(ValueError, TypeError):
                        event = json.loads(frame)
                        session.client_events.append(event)
                        session.timeline.append(("client", event))
                    await upstream.send(frame)

            async def to_client() -> None:
                async for frame in upstream:
                    try:
                        event = self.validate(frame)
                    except Exception as problem:  # any violation is recorded, the frame still goes on
                        session.invalid.append((str(frame)[:2000], f"{type(problem).__name__}: {problem}"))
                        try:
                            event = json.loads(frame)
                        except (ValueError, TypeError):
                            event = None
                    if event is not None:
                        session.server_events.append(event)
                        session.timeline.append(("server", event))
                    await downstream.send(frame)

            await _until_either_ends(to_server(), to_client(), downstream, upstream)

    async def __aenter__(self) -> ValidatingProxy:
        self._server = await serve(self._relay, "127.0.0.1", 0, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def _until_either_ends(
    a: Any, b: Any, downstream: ServerConnection, upstream: ClientConnection
) -> None:
    tasks = [asyncio.ensure_future(a), asyncio.ensure_future(b)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task
        await downstream.close()
        await upstream.close()


@contextlib.asynccontextmanager
async def validating_proxy(
    upstream: str, validate: Validator = validate_server_event
) -> AsyncIterator[ValidatingProxy]:
    async with ValidatingProxy(upstream, validate) as proxy:
        yield proxy
