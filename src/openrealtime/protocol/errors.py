"""OpenAI-shaped errors: the ``error`` object every failure is reported with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RealtimeError(Exception):
    """A failure to report to the client as an ``error`` event (or a REST error body).

    ``fatal`` errors are followed by closing the connection.
    """

    code: str | None
    message: str
    param: str | None = None
    type: str = "invalid_request_error"
    event_id: str | None = None
    fatal: bool = False

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": self.event_id,
        }


def server_overloaded(event_id: str | None, retry_after_s: float) -> RealtimeError:
    """A ``response.create`` refused because the server has too much work queued already."""
    return RealtimeError(
        "server_overloaded",
        f"The server is at capacity and did not create the response; try again in about {retry_after_s:g} s.",
        type="server_error",
        event_id=event_id,
    )


def rate_limited(event_id: str | None) -> RealtimeError:
    """A client event refused because its key sends events faster than allowed."""
    return RealtimeError(
        "rate_limit_exceeded",
        "Too many client events: this API key is sending faster than allowed; the event was not processed.",
        event_id=event_id,
    )
