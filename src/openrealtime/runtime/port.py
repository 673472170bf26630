"""The two small interfaces between a transport and its session's runtime.

A transport talks to its session only through ``SessionPort`` (the runtime implements it):
client events in (already parsed at the JSON edge, transports/wire.py), caller audio in as
24 kHz PCM, DTMF, and for media transports the next 20 ms of audio to play. The runtime talks
back through ``SessionClient`` (the transport implements it): every server event in order,
and on WebSocket the response audio as PCM, which the edge encodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..core.events import ClientInput, OutputAudio, PcmAudio, RetrievedItem
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError

ClientOutput = se.ServerEvent | se.InputAudioBufferDtmfEventReceived | OutputAudio | RetrievedItem
"""What a transport is given to send: server events, and on WebSocket PCM the edge encodes."""


class SessionClient(Protocol):
    """The transport side: where a session's output goes."""

    def send(self, output: ClientOutput) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class SessionPort(Protocol):
    """The runtime side: what a transport may ask of its session."""

    @property
    def input_format(self) -> str:
        """The session's ``audio.input.format`` (what appended audio is decoded from)."""

    @property
    def busy(self) -> bool:
        """A response is being generated."""

    @property
    def input_in_real_time(self) -> bool:
        """The caller's time counts now: the VAD follows speech or times the pause after it,
        or an answer plays (its echo is placed on the input clock). A media transport then
        gives the time its stream skips (DTX, silence suppression) as silence as it passes,
        not only when the next packet arrives."""

    def start(self) -> None:
        """Begin the session (``session.created``)."""

    def client_event(self, event: ClientInput) -> None:
        """A client event from the JSON edge."""

    def client_error(self, error: RealtimeError) -> None:
        """A client frame the edge could not use (it did not parse, or its audio was bad)."""

    def caller_audio(self, pcm: PcmAudio) -> None:
        """Caller audio from a media transport."""

    def dtmf(self, digit: str) -> None:
        """A key the caller pressed (SIP)."""

    def playout_frame(self, events_out: Callable[[], bool] | None = None) -> PcmAudio:
        """The next 20 ms of the assistant's voice (silence when nothing is queued). A
        transport whose events travel apart from its audio passes ``events_out`` (every event
        sent so far has left): a response's audio then waits for its ``output_audio_buffer.started``."""

    @property
    def playout_idle(self) -> bool:
        """Nothing waits to play: ``playout_frame`` would give silence and change nothing, so
        a media transport may stop pulling frames until the ``notify_playout`` callback."""

    def notify_playout(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever audio to play is queued (or a hold begins)."""

    def fail(self, error: RealtimeError) -> None:
        """A transport-level problem, reported as an ``error`` event."""

    async def aclose(self) -> None:
        """The client is gone: stop all work of the session."""
