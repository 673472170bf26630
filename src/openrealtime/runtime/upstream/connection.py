"""One session's WebSocket to an upstream Realtime API, and the routing of its events.

The upstream speaks the same GA protocol this server does (OpenAI, Azure, or another
openrealtime). Each of the session's responses gets its own queue of upstream events: a
response is tagged with its local id in ``metadata`` so that the upstream's
``response.created`` binds the two ids, and ``error`` events for a ``response.create`` are
routed back by ``event_id``. When the socket ends, every waiting response gets an
``UpstreamFailure`` and ``on_failure`` is told once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from ...engines.base import CancelToken

log = logging.getLogger("openrealtime.upstream")

RESPONSE_TAG = "openrealtime_response_id"
"""The ``metadata`` key that carries a response's local id to the upstream and back."""
CANCEL_POLL_S = 0.1
"""How often a waiting response checks its cancel token (a barge-in reaches the upstream
within this)."""
MAX_FRAME_BYTES = 16 * 1024 * 1024


class UpstreamFailure(Exception):
    """The upstream can no longer be used: it refused the connection, closed it, ended the
    session with an error, or stopped sending."""


@dataclass(frozen=True)
class UpstreamConfig:
    """Where the upstream is and what to do when it fails."""

    url: str
    """The HTTP base of the API (``…/v1``); the WebSocket is ``…/v1/realtime?model=``."""
    api_key: str | None
    model: str
    fallback: Literal["cascade", "none"] = "cascade"
    connect_timeout_s: float = 10.0
    stall_s: float = 20.0


def websocket_url(base: str, model: str) -> str:
    """``https://host/v1`` → ``wss://host/v1/realtime?model=…`` (query parameters kept)."""
    parts = urlsplit(base)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"] + [("model", model)]
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/realtime", urlencode(query), ""))


def auth_headers(base: str, api_key: str | None) -> dict[str, str]:
    """A bearer key; Azure's resources also take it as ``api-key``."""
    if not api_key:
        return {}
    headers = {"Authorization": f"Bearer {api_key}"}
    host = urlsplit(base).hostname or ""
    if host.endswith(".azure.com"):
        headers["api-key"] = api_key
    return headers


class _Waiting:
    """The upstream events of one local response, in order."""

    def __init__(self, response_id: str, event_id: str) -> None:
        self.response_id = response_id
        self.event_id = event_id
        self.upstream_id: str | None = None
        self.queue: asyncio.Queue[dict[str, Any] | UpstreamFailure] = asyncio.Queue()


class UpstreamConnection:
    """The WebSocket, its reader task, and the responses waiting for events."""

    def __init__(self, config: UpstreamConfig, on_failure: Callable[[UpstreamFailure], None]) -> None:
        self.config = config
        self.on_failure = on_failure
        self.upstream_session_id: str | None = None
        self.failure: UpstreamFailure | None = None
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, _Waiting] = {}  # local response id →
        self._unbound: deque[_Waiting] = deque()  # response.create sent, no response.created yet
        self._by_upstream: dict[str, _Waiting] = {}
        self._last_error: str | None = None
        self._closing = False

    async def open(self) -> None:
        """Connect and wait for ``session.created`` (an ``UpstreamFailure`` otherwise)."""
        url = websocket_url(self.config.url, self.config.model)
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                self._socket = await websockets.connect(
                    url,
                    additional_headers=auth_headers(self.config.url, self.config.api_key),
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=None,
                )
                first = json.loads(await self._socket.recv())
        except TimeoutError as exc:
            raise self._failed(
                UpstreamFailure(f"no session from {_where(url)} within {self.config.connect_timeout_s:g} s")
            ) from exc
        except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, ValueError) as exc:
            raise self._failed(
                UpstreamFailure(f"could not connect to {_where(url)}: {_describe(exc)}")
            ) from exc
        if first.get("type") != "session.created":
            message = (first.get("error") or {}).get("message") or first.get("type")
            await self._socket.close()
            raise self._failed(UpstreamFailure(f"{_where(url)} refused the session: {message}"))
        self.upstream_session_id = (first.get("session") or {}).get("id")
        log.info("upstream session %s at %s", self.upstream_session_id, _where(url))
        self._reader = asyncio.ensure_future(self._read())

    async def send(self, event: dict[str, Any]) -> None:
        if self.failure is not None:
            raise self.failure
        assert self._socket is not None
        try:
            await self._socket.send(json.dumps(event))
        except websockets.ConnectionClosed as exc:
            raise self._failed(UpstreamFailure(self._closed_message(exc))) from exc

    def expect(self, response_id: str, event_id: str) -> _Waiting:
        """Route the events of the response about to be created (``response.create`` with
        ``event_id`` and the ``RESPONSE_TAG`` metadata) to the returned queue."""
        waiting = _Waiting(response_id, event_id)
        self._waiting[response_id] = waiting
        self._unbound.append(waiting)
        if self.failure is not None:
            waiting.queue.put_nowait(self.failure)
        return waiting

    def done(self, waiting: _Waiting) -> None:
        self._waiting.pop(waiting.response_id, None)
        with contextlib.suppress(ValueError):
            self._unbound.remove(waiting)
        if waiting.upstream_id is not None:
            self._by_upstream.pop(waiting.upstream_id, None)

    async def events(self, waiting: _Waiting, token: CancelToken) -> AsyncIterator[dict[str, Any]]:
        """The response's upstream events until it is cancelled here; an ``UpstreamFailure``
        when the connection ends or the upstream sends nothing for ``stall_s``."""
        quiet = 0.0
        while not token.cancelled:
            try:
                event = await asyncio.wait_for(waiting.queue.get(), CANCEL_POLL_S)
            except TimeoutError:
                quiet += CANCEL_POLL_S
                if quiet >= self.config.stall_s:
                    failure = UpstreamFailure(f"the upstream sent nothing for {self.config.stall_s:g} s")
                    await self.close()
                    raise self._failed(failure) from None
                continue
            if isinstance(event, UpstreamFailure):
                raise event
            quiet = 0.0
            yield event

    async def close(self) -> None:
        """Close the socket (on purpose: ``on_failure`` is not told)."""
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._socket.close(), 2.0)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader

    # ------------------------------------------------------------------ reading

    async def _read(self) -> None:
        assert self._socket is not None
        try:
            async for frame in self._socket:
                try:
                    event = json.loads(frame)
                except ValueError:
                    log.warning("upstream sent a frame that is not JSON")
                    continue
                if isinstance(event, dict):
                    self._route(event)
            message = self._closed_message(None)
        except websockets.ConnectionClosed as exc:
            message = self._closed_message(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken connection, however the library says so
            message = f"the upstream connection failed: {_describe(exc)}"
        if not self._closing:
            self.on_failure(self._failed(UpstreamFailure(message)))

    def _route(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.created":
            self._bind(event.get("response") or {})
            return
        if kind == "error":
            self._error(event.get("error") or {})
            return
        upstream_id = event.get("response_id")
        if upstream_id is None and kind == "response.done":
            upstream_id = (event.get("response") or {}).get("id")
        waiting = self._by_upstream.get(upstream_id) if isinstance(upstream_id, str) else None
        if waiting is not None:
            waiting.queue.put_nowait(event)

    def _bind(self, response: dict[str, Any]) -> None:
        tag = (response.get("metadata") or {}).get(RESPONSE_TAG)
        waiting = self._waiting.get(tag) if isinstance(tag, str) else None
        if waiting is None and self._unbound:
            waiting = self._unbound[0]  # an upstream that drops metadata answers in order
        if waiting is None:
            return
        with contextlib.suppress(ValueError):
            self._unbound.remove(waiting)
        waiting.upstream_id = str(response.get("id"))
        self._by_upstream[waiting.upstream_id] = waiting
        waiting.queue.put_nowait({"type": "response.created", "response": response})

    def _error(self, error: dict[str, Any]) -> None:
        message = f"{error.get('code') or error.get('type')}: {error.get('message')}"
        self._last_error = message
        event_id = error.get("event_id")
        for waiting in list(self._unbound):
            if event_id is not None and waiting.event_id == event_id:
                waiting.queue.put_nowait({"type": "error", "error": error})
                return
        log.warning("upstream error: %s", message)

    def _failed(self, failure: UpstreamFailure) -> UpstreamFailure:
        """Remember the first failure and hand it to every waiting response."""
        if self.failure is None:
            self.failure = failure
            for waiting in self._waiting.values():
                waiting.queue.put_nowait(failure)
        return self.failure

    def _closed_message(self, exc: websockets.ConnectionClosed | None) -> str:
        detail = ""
        if exc is not None and exc.rcvd is not None:
            detail = f" (code {exc.rcvd.code}{': ' + exc.rcvd.reason if exc.rcvd.reason else ''})"
        elif exc is not None:
            detail = " (no close frame)"
        error = f"; its last error was {self._last_error}" if self._last_error else ""
        return f"the upstream closed the connection{detail}{error}"


def _where(url: str) -> str:
    """The URL without its query (never a key)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
