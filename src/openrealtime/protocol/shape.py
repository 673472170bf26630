"""The wire shape a connection speaks: a small hook between a transport's frames and the session.

The session core speaks the GA shape only. A transport hands every client frame to its shape's
``receive`` (which passes it on, translated, to the session, or refuses it with an OpenAI-shaped
error) and turns every server event into text frames with ``send``. ``GaShape`` passes both ways
unchanged; ``protocol.beta.BetaShape`` translates the retired beta shape; ``FilteredShape``
keeps only some event types (Azure's ``?webrtcfilter=on``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

from .errors import RealtimeError

Deliver = Callable[[str | bytes], None]
"""Passes one (GA) client frame to the session."""
Refuse = Callable[[RealtimeError], None]
"""Reports a client frame the shape could not translate (the session sends the ``error``)."""


class WireEvent(Protocol):
    """A server event as the session emits it (``protocol.server_events``)."""

    @property
    def type(self) -> str: ...

    def to_json(self) -> str: ...


class EventShape(Protocol):
    def receive(self, frame: str | bytes, deliver: Deliver, refuse: Refuse) -> None:
        """Hand one client frame to ``deliver`` (translated) or to ``refuse``; called once per
        frame, in order, and ``deliver`` runs synchronously inside the call."""
        ...

    def send(self, event: WireEvent) -> list[str]:
        """The text frames for one server event (none when the shape drops it)."""
        ...


class GaShape:
    """The GA shape: frames and events pass unchanged."""

    def receive(self, frame: str | bytes, deliver: Deliver, refuse: Refuse) -> None:
        deliver(frame)

    def send(self, event: WireEvent) -> list[str]:
        return [event.to_json()]


GA_SHAPE = GaShape()


class FilteredShape:
    """Another shape whose server events are limited to some GA event types; client frames
    are not filtered."""

    def __init__(self, inner: EventShape, allowed: Collection[str]) -> None:
        self.inner = inner
        self.allowed = frozenset(allowed)

    def receive(self, frame: str | bytes, deliver: Deliver, refuse: Refuse) -> None:
        self.inner.receive(frame, deliver, refuse)

    def send(self, event: WireEvent) -> list[str]:
        return self.inner.send(event) if event.type in self.allowed else []
