"""Server-wide limits that span sessions: how many sessions run at once (in all and per key)
and how fast one key may send events. Per-session limits (buffer length, context, session
duration) live in ``core.session.Limits``.

Everything here is plain and synchronous (one event loop owns it), with the clock passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol.errors import RealtimeError


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


@dataclass
class SessionLimits:
    """Admission and event-rate control shared by every transport.

    ``max_sessions`` / ``max_sessions_per_key``: concurrent sessions in all and per API key
    (an ephemeral key counts against its parent). ``events_per_second`` / ``event_burst``:
    client events per key across its sessions (0 disables).
    """

    max_sessions: int = 100
    max_sessions_per_key: int = 20
    events_per_second: float = 200.0
    event_burst: float = 1000.0
    clock: Callable[[], float] = time.monotonic
    active: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.active.values())

    def admit(self, key_id: str) -> RealtimeError | None:
        """Count a new session in, or say why not (the caller sends the error and closes)."""
        if self.total >= self.max_sessions:
            return RealtimeError(
                "session_limit_reached",
                f"The server is at its limit of {self.max_sessions} concurrent sessions; try again later.",
                type="server_error",
                fatal=True,
            )
        if self.active.get(key_id, 0) >= self.max_sessions_per_key:
            return RealtimeError(
                "session_limit_reached",
                f"This API key already has {self.max_sessions_per_key} concurrent sessions, the most allowed.",
                type="invalid_request_error",
                fatal=True,
            )
        self.active[key_id] = self.active.get(key_id, 0) + 1
        return None

    async def admit_shared(self, key_id: str) -> RealtimeError | None:
        """``admit`` for callers that can wait; gateway replicas (server/cluster.py) also count
        the key's sessions on the other gateways here."""
        return self.admit(key_id)

    def release(self, key_id: str) -> None:
        left = self.active.get(key_id, 0) - 1
        if left > 0:
            self.active[key_id] = left
        else:
            self.active.pop(key_id, None)
            if self.events_per_second:
                self._buckets.pop(key_id, None)

    def allow_event(self, key_id: str) -> bool:
        """Whether one more client event from ``key_id`` is within its rate."""
        if not self.events_per_second:
            return True
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.events_per_second, self.event_burst, self.clock)
        return bucket.take()
