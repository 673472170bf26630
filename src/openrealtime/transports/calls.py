"""The session side of a media call, the same for WebRTC and SIP.

A call owns the network (peer connection or RTP); its session is reached only through the
runtime's ``SessionPort``. ``CallSession`` is that link for both transports: it is the
``SessionClient`` the runtime sends to (every event goes to the call's sinks: sideband sockets
and the WebRTC data channel), it passes client frames and caller audio in, and it hands the
transport the next frame to play. Playout, clearing and truncation are the runtime's
(runtime/playback.py), so the two transports cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import numpy as np

from ..runtime.playback import FRAME_MS
from ..runtime.port import ClientOutput, SessionPort
from .media import InboundAudio, PcmAudio
from .wire import EventWire, Frame


class EventSink(Protocol):
    """Something that receives a call's events (a sideband WebSocket, the data channel)."""

    def send(self, output: ClientOutput) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class CallSession:
    """A call's link to its session; ``on_session_end`` hangs the call up when the session
    ends itself (a fatal error, expiry)."""

    def __init__(self, on_session_end: Callable[[], Awaitable[None]]) -> None:
        self.port: SessionPort | None = None
        self.accepting = False
        """Frames and caller audio are passed on (the session has started and not ended)."""
        self.sinks: list[EventSink] = []
        self.on_session_end = on_session_end
        self.events_out: Callable[[], bool] | None = None
        """Whether every event sent so far has left for the peer, where events travel apart
        from the audio (WebRTC's data channel): a response's audio waits for its started event."""
        self.wake_playout: Callable[[], None] | None = None
        """Told when the session queues audio to play (the media track may be asleep)."""
        self._inbound = InboundAudio()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def input_format(self) -> str:
        return self.port.input_format if self.port is not None else "audio/pcm"

    @property
    def input_in_real_time(self) -> bool:
        """The caller's time counts now (``SessionPort.input_in_real_time``)."""
        return self.accepting and self.port is not None and self.port.input_in_real_time

    @property
    def idle(self) -> bool:
        """The session started and is idle: it hears no speech, plays nothing and is not
        answering (a media transport may then hand quiet input over in bigger pieces)."""
        port = self.port
        return self.accepting and port is not None and not port.input_in_real_time and not port.busy

    @property
    def playout_idle(self) -> bool:
        """Nothing waits to play (``SessionPort.playout_idle``)."""
        return self.port is None or self.port.playout_idle

    # ------------------------------------------------------------------ SessionClient

    def send(self, output: ClientOutput) -> None:
        for sink in list(self.sinks):
            sink.send(output)

    async def close(self, code: int, reason: str) -> None:
        self.spawn(self.on_session_end(), "call-session-ended")

    # ------------------------------------------------------------------ in and out

    def start(self) -> None:
        """Start the session (``session.created``) and let frames and audio in."""
        if self.port is not None and not self.accepting:
            self.accepting = True
            self.port.notify_playout(self._playout_queued)
            self.port.start()

    def _playout_queued(self) -> None:
        if self.wake_playout is not None:
            self.wake_playout()

    def receive_frame(self, frame: Frame, wire: EventWire) -> None:
        """A client event from the data channel or a sideband socket."""
        if self.accepting and self.port is not None:
            wire.deliver(frame, self.port)

    def caller_audio(self, samples: PcmAudio, rate: int, channels: int = 1) -> None:
        if self.accepting and self.port is not None:
            pcm = self._inbound.convert(samples, rate, channels)
            if len(pcm):  # the resampler releases audio in blocks of a few packets
                self.port.caller_audio(pcm)

    def pull(self) -> PcmAudio:
        """The next 20 ms to play at 24 kHz (silence before the session starts)."""
        if self.port is None:
            return np.zeros(FRAME_MS * 24, dtype=np.int16)
        return self.port.playout_frame(self.events_out)

    # ------------------------------------------------------------------ sinks and teardown

    async def attach(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def detach(self, sink: EventSink) -> None:
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    async def end_session(self) -> None:
        """Stop the session's work (the call is over)."""
        self.accepting = False
        if self.port is not None:
            await self.port.aclose()

    async def close_sinks(self) -> None:
        for sink in list(self.sinks):
            with contextlib.suppress(Exception):
                await sink.close(1000, "call ended")
        self.sinks.clear()
