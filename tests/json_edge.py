"""A session core behind the JSON edge, as a transport sees it: frames in, frames out.

Unit tests of the core drive it with the client's own JSON (and the base64 audio in it) and
check the frames a client would receive, so the core is wrapped in the same ``EventWire`` the
transports use. Everything else (``receive``, ``chat_request``, the parts' state) is the
core's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from openrealtime.core.session import SessionCore
from openrealtime.protocol.errors import RealtimeError
from openrealtime.transports.wire import EventWire


def pcm_of(data: bytes) -> npt.NDArray[np.int16]:
    """Speech as the engines report it: 24 kHz int16 (whole samples of ``data``)."""
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)


@dataclass(frozen=True)
class Frame:
    """One frame a client receives."""

    raw: str

    def to_json(self) -> str:
        return self.raw

    def __getattr__(self, name: str) -> Any:
        """The event's fields (``frame.type``, ``frame.error``)."""
        data = json.loads(self.raw)
        if name not in data:
            raise AttributeError(name)
        return data[name]


class JsonCore:
    """``core`` with ``handle`` taking frames and ``take_events`` giving frames."""

    def __init__(self, core: SessionCore) -> None:
        self.core = core
        self.wire = EventWire(lambda: core.input_format)

    def handle(self, frame: str | bytes) -> None:
        try:
            events = self.wire.inputs(frame)
        except RealtimeError as err:
            self.core.reject(err)
        else:
            for event in events:
                self.core.handle(event)

    def take_events(self) -> list[Frame]:
        return [Frame(raw) for output in self.core.take_events() for raw in self.wire.encode(output)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)
