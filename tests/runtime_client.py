"""A ``SessionClient`` for unit tests of one session runtime: what a WebSocket client would
receive, decoded into the harness's ``events`` (the harness has ``events``, ``wire`` and
``arrived``)."""

from __future__ import annotations

import json
from typing import Any

from openrealtime.runtime.port import ClientOutput


class Client:
    """The runtime's ``SessionClient``: what a WebSocket client would receive."""

    def __init__(self, harness: Any) -> None:
        self.harness = harness

    def send(self, output: ClientOutput) -> None:
        self.harness.events.extend(json.loads(frame) for frame in self.harness.wire.encode(output))
        self.harness.arrived.set()

    async def close(self, code: int, reason: str) -> None:
        return None
