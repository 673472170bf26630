"""What the rest of the server may watch of a live session, without touching its logic.

Metrics, the usage ledger and traces are observers (the pattern pipecat uses for latency
metrics): the runtime tells them what happened; they never change what the client sees. An
observer must be quick and must not raise; the runtime shields the session from one that does.
An observer implements only the notifications it wants; the session recorder takes them all
(``MediaObserver``: every client event as received, the caller's audio, the speech as played).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.events import ClientInput, OutputAudio, PcmAudio
from ..protocol.server_events import ServerEvent

log = logging.getLogger("openrealtime.observer")


@dataclass(frozen=True)
class SessionInfo:
    """Identity of a session for observers: ids only, never secrets."""

    session_id: str
    key_id: str
    transport: str  # "websocket", "webrtc" or "sip"
    model: str


class SessionObserver(Protocol):
    def session_started(self, info: SessionInfo) -> None: ...

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        """A client event arrived (``event_type`` is ``"invalid"`` when it did not parse)."""

    def server_event(self, info: SessionInfo, event: ServerEvent) -> None:
        """An event is about to be sent (errors, ``response.done`` with its usage, ...)."""

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        """Stage timings of one finished response (the ``turn timings`` log record)."""

    def session_ended(self, info: SessionInfo) -> None: ...


class AudioObserver(Protocol):
    """An observer that also follows the speech (optional: ``Observers`` skips those that
    do not implement it)."""

    def output_audio(self, info: SessionInfo, audio: OutputAudio) -> None:
        """Speech of a response is about to be sent or played (24 kHz PCM)."""


class MediaObserver(Protocol):
    """An observer that follows everything a recording keeps (optional, like ``AudioObserver``)."""

    def client_input(self, info: SessionInfo, event: ClientInput | None, accepted: bool, at: float) -> None:
        """A client event as received at ``at`` (epoch seconds) and whether the server accepted
        it; ``None`` for a frame that did not parse."""

    def caller_audio(self, info: SessionInfo, pcm: PcmAudio, at: float) -> None:
        """Caller audio of a media call (WebRTC, SIP) as received, 24 kHz."""

    def played_audio(self, info: SessionInfo, response_id: str, item_id: str, pcm: PcmAudio) -> None:
        """Assistant speech as it was actually played out to a media caller."""

    def dtmf(self, info: SessionInfo, digit: str) -> None:
        """A SIP caller pressed a key."""

    def note(self, info: SessionInfo, kind: str, data: dict[str, Any]) -> None:
        """Something the session did outside the protocol's events (``disclosure``)."""


class Observers:
    """Fans each notification out to several observers; one failing never affects the rest."""

    def __init__(self, observers: Sequence[SessionObserver] = ()) -> None:
        self.observers = list(observers)

    def _each(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            notify = getattr(observer, method, None)
            if notify is None:
                continue
            try:
                notify(*args)
            except Exception:
                log.exception("session observer %s.%s failed", type(observer).__name__, method)

    def session_started(self, info: SessionInfo) -> None:
        self._each("session_started", info)

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        self._each("client_event", info, event_type)

    def server_event(self, info: SessionInfo, event: ServerEvent) -> None:
        self._each("server_event", info, event)

    def output_audio(self, info: SessionInfo, audio: OutputAudio) -> None:
        self._each("output_audio", info, audio)

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        self._each("turn_timings", info, record)

    def speculation(self, info: SessionInfo, outcome: str, wasted_tokens: int, wasted_seconds: float) -> None:
        """A guessed answer was ``started``, released (``hit``) or discarded (``miss`` at
        commit, ``abandoned`` before), with the compute a discarded one spent."""
        self._each("speculation", info, outcome, wasted_tokens, wasted_seconds)

    def session_ended(self, info: SessionInfo) -> None:
        self._each("session_ended", info)

    def client_input(self, info: SessionInfo, event: ClientInput | None, accepted: bool, at: float) -> None:
        self._each("client_input", info, event, accepted, at)

    def caller_audio(self, info: SessionInfo, pcm: PcmAudio, at: float) -> None:
        self._each("caller_audio", info, pcm, at)

    def played_audio(self, info: SessionInfo, response_id: str, item_id: str, pcm: PcmAudio) -> None:
        self._each("played_audio", info, response_id, item_id, pcm)

    def dtmf(self, info: SessionInfo, digit: str) -> None:
        self._each("dtmf", info, digit)

    def note(self, info: SessionInfo, kind: str, data: dict[str, Any]) -> None:
        self._each("note", info, kind, data)
