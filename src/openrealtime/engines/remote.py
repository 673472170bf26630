"""What the remote speech engines share: one OpenAI-compatible audio endpoint, how its
failures are told apart, and how long a failed endpoint is skipped.

A remote transcriber or synthesizer (another openrealtime, speaches, Kokoro-FastAPI, vLLM's
transcription endpoint) can fail in ways a local engine cannot: the host is down, the
request times out or the stream stalls, the key is wrong. Every such failure is a
``RemoteEngineError``; the failover wrappers answer that request with the local engine and,
unless the error was about this one request, skip the endpoint for a while (as the LLM
failover does) so that the following turns do not each wait for a dead host first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

__all__ = ["Cooldown", "RemoteEndpoint", "RemoteEngineError", "error_from_response", "error_from_transport"]

REQUEST_SPECIFIC_STATUSES = frozenset({400, 413, 415, 422})
"""Statuses that speak about the request (audio the endpoint refused, text too long), not
about the endpoint: the request falls back to the local engine, later ones still go remote."""


class RemoteEngineError(RuntimeError):
    """A remote speech engine failed; ``cooldown`` says whether to skip the endpoint a while."""

    def __init__(self, message: str, *, cooldown: bool = True) -> None:
        super().__init__(message)
        self.cooldown = cooldown


def error_from_transport(endpoint: str, exc: httpx.HTTPError) -> RemoteEngineError:
    """A connect error, timeout, stall or broken stream (always worth a cooldown)."""
    if isinstance(exc, httpx.TimeoutException):
        return RemoteEngineError(f"{endpoint} timed out ({type(exc).__name__})")
    return RemoteEngineError(f"{endpoint} failed: {type(exc).__name__}: {exc}")


def error_from_response(endpoint: str, status: int, body: bytes) -> RemoteEngineError:
    """An HTTP error status, with the endpoint's own error message when it sent one."""
    text = body[:300].decode("utf-8", "replace").strip()
    return RemoteEngineError(
        f"{endpoint} answered HTTP {status}: {text or 'no body'}",
        cooldown=status not in REQUEST_SPECIFIC_STATUSES,
    )


@dataclass(frozen=True)
class RemoteEndpoint:
    """An OpenAI-compatible audio API: ``base_url`` ends in ``/v1`` (e.g. ``http://gpu:8000/v1``)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 10.0
    """Connect timeout and the longest wait for the next bytes of an answer (a stall)."""

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def client(self, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        """A pooled client for worker threads (httpx clients are thread-safe). The key is only
        ever in this header, never in logs or error messages."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0)),
            headers=headers,
            transport=transport,
        )


class Cooldown:
    """After a failure the endpoint is skipped for ``seconds``; thread-safe."""

    def __init__(self, seconds: float = 30.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._until = 0.0
        self._lock = threading.Lock()
        self.failures = 0
        """Requests that fell back to the local engine (for tests and benchmarks)."""

    @property
    def active(self) -> bool:
        with self._lock:
            return self.clock() < self._until

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if not isinstance(error, RemoteEngineError) or error.cooldown:
                self._until = self.clock() + self.seconds
