"""The live calls of this server (WebRTC and SIP) by call id: what hang-up, SIP call control
and sideband WebSockets (``/v1/realtime?call_id=``) find them by."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..transports.calls import EventSink
from ..transports.wire import EventWire, Frame


class LiveCall(Protocol):
    """What the registry, hangup and sidebands need of a call (WebRTC or SIP)."""

    call_id: str

    @property
    def closed(self) -> bool: ...

    async def close(self) -> None: ...

    async def attach(self, sink: EventSink) -> None: ...

    def detach(self, sink: EventSink) -> None: ...

    @property
    def input_format(self) -> str: ...

    def receive_frame(self, frame: Frame, wire: EventWire) -> None: ...


class CallRegistry:
    """The live calls of this server (WebRTC and SIP), by call id."""

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, call: LiveCall) -> None:
        self._calls[call.call_id] = call

    def get(self, call_id: str) -> LiveCall | None:
        return self._calls.get(call_id)

    def remove(self, call: LiveCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]

    def call_ids(self) -> list[str]:
        return list(self._calls)

    async def published(self, call_id: str) -> None:
        """Wait until other gateways can find the call (a no-op without replicas)."""

    async def close_all(self) -> None:
        calls = list(self._calls.values())
        await asyncio.gather(*(call.close() for call in calls), return_exceptions=True)
