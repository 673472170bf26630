"""The WebSocket transport: one Realtime session per connection, JSON events in text frames.

Frames are turned into typed events, and events (with the response audio, as base64 deltas in
the session's output format) into frames, at the JSON edge (wire.py).

Reading and writing run as two tasks so that a client sending fast never waits for our
output, and our output never waits for the client's next frame. Outgoing events are sent in
the order the session emitted them. The send queue is bounded: a client that stops reading is
disconnected once ``max_queued_bytes`` are waiting, instead of growing the server's memory.

The connection's ``shape`` (``protocol.shape``) sits in its JSON edge (wire.py), on the
frame-in / event-out path: GA passes both unchanged, the beta shape translates them, so the
session always speaks GA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..protocol.errors import RealtimeError
from ..protocol.shape import GA_SHAPE, EventShape
from ..runtime.port import ClientOutput, SessionPort
from .wire import EventWire

log = logging.getLogger("openrealtime.websocket")

_CLOSE = object()
MAX_QUEUED_BYTES = 64 * 1024 * 1024
SLOW_CONSUMER_CLOSE = 1008


class WebSocketConnection:
    """Owns the socket: an ordered send queue and a close that flushes it first. It is the
    ``SessionClient`` of its session (or an event sink of a call, for a sideband)."""

    def __init__(
        self,
        websocket: WebSocket,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        idle_timeout_s: float = 0.0,
        shape: EventShape = GA_SHAPE,
    ) -> None:
        self.websocket = websocket
        self.idle_timeout_s = idle_timeout_s
        """Close a connection that sent nothing for this long while no response ran (0: never)."""
        self.last_frame_at = time.monotonic()
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.close_code = 1000
        self.close_reason = ""
        self.closing = asyncio.Event()
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0
        self.overflowed = asyncio.Event()
        self.wire = EventWire(shape=shape)

    def send(self, output: ClientOutput) -> None:
        for frame in self.wire.encode(output):
            if self.closing.is_set():
                return
            self.queued_bytes += len(frame)
            if self.queued_bytes > self.max_queued_bytes:
                log.warning("client is not reading: %d bytes queued; disconnecting it", self.queued_bytes)
                self.close_code, self.close_reason = (
                    SLOW_CONSUMER_CLOSE,
                    "slow consumer: too much unread output",
                )
                self.closing.set()
                self.overflowed.set()
                return
            self.outbox.put_nowait(frame)

    async def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far has been sent."""
        if self.closing.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.outbox.put_nowait(_CLOSE)
        self.closing.set()

    async def _writer(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is _CLOSE:
                with contextlib.suppress(Exception):
                    await self.websocket.close(self.close_code, self.close_reason[:120])
                return
            assert isinstance(item, str)
            await self.websocket.send_text(item)
            self.queued_bytes -= len(item)

    async def _reader(self, port: SessionPort) -> None:
        while True:
            message = await self.websocket.receive()
            self.last_frame_at = time.monotonic()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            self.wire.deliver(text if text is not None else message.get("bytes") or b"", port)

    async def _idle_watch(self, port: SessionPort) -> None:
        """Close the session once the client has sent nothing for ``idle_timeout_s`` while no
        response was running."""
        if self.idle_timeout_s <= 0:
            return
        while not self.closing.is_set():
            idle_for = time.monotonic() - self.last_frame_at
            if idle_for >= self.idle_timeout_s and not port.busy:
                port.fail(
                    RealtimeError(
                        "idle_timeout",
                        f"The connection was idle for {self.idle_timeout_s:g} seconds and is being closed.",
                        fatal=True,
                    )
                )
                return
            await asyncio.sleep(max(0.05, self.idle_timeout_s - idle_for))

    async def serve(self, port: SessionPort) -> None:
        """Run the session until either side closes; then release all of its work."""
        self.wire.input_format = lambda: port.input_format
        writer = asyncio.create_task(self._writer(), name="ws-writer")
        reader = asyncio.create_task(self._reader(port), name="ws-reader")
        overflow = asyncio.create_task(self.overflowed.wait(), name="ws-overflow")
        idle = asyncio.create_task(self._idle_watch(port), name="ws-idle")
        try:
            port.start()
            done, _ = await asyncio.wait({writer, reader, overflow}, return_when=asyncio.FIRST_COMPLETED)
            if overflow in done:  # the writer may be stuck on a full socket: do not wait for it
                writer.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.websocket.close(self.close_code, self.close_reason), 1.0)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                    log.warning("websocket task ended with %r", exc)
        finally:
            reader.cancel()
            writer.cancel()
            overflow.cancel()
            idle.cancel()
            await port.aclose()
            if self.websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.websocket.close(self.close_code)
