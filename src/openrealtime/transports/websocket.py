"""The WebSocket transport: one Realtime session per connection, JSON events in text frames.

Reading and writing run as two tasks so that a client sending fast never waits for our
output, and our output never waits for the client's next frame. Outgoing events are sent in
the order the session emitted them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..runtime.session_runtime import SessionRuntime

log = logging.getLogger("openrealtime.websocket")

_CLOSE = object()


class WebSocketConnection:
    """Owns the socket: an ordered send queue and a close that flushes it first."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.close_code = 1000
        self.close_reason = ""
        self.closing = asyncio.Event()

    def send(self, frame: str) -> None:
        if not self.closing.is_set():
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

    async def _reader(self, runtime: SessionRuntime) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                runtime.on_frame(text)
            else:
                runtime.on_frame(message.get("bytes") or b"")

    async def serve(self, runtime: SessionRuntime) -> None:
        """Run the session until either side closes; then release all of its work."""
        writer = asyncio.create_task(self._writer(), name="ws-writer")
        reader = asyncio.create_task(self._reader(runtime), name="ws-reader")
        try:
            runtime.start()
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                    log.warning("websocket task ended with %r", exc)
        finally:
            reader.cancel()
            writer.cancel()
            await runtime.aclose()
            if self.websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.websocket.close(self.close_code)
