"""The URL families Realtime clients arrive by, OpenAI's and Azure OpenAI's, reduced to one
request the session admission understands: which model, which intent, which call, which
shape (GA or beta), and a problem to report instead when the URL cannot be served.

Azure serves the same API under ``/openai``: ``/openai/realtime?api-version=…&deployment=NAME``
(the shape follows the api-version: previews up to ``2025-04-01-preview`` speak beta,
``2025-08-28`` and later GA), ``/openai/v1/realtime?model=NAME`` (GA), REST routes under
``/openai/v1/realtime/…`` and ``/openai/realtimeapi/sessions``, and the preview WebRTC route
``/v1/realtimertc``. A deployment name is the model name. Keys come as ``api-key`` headers,
``Authorization: Bearer`` or, from browsers, ``?api-key=`` in the query (``AzureCredentials``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from ..protocol.errors import RealtimeError

Shape = Literal["ga", "beta"]

LAST_BETA_API_VERSION = date(2025, 4, 1)
FIRST_BETA_API_VERSION = date(2024, 10, 1)
FIRST_GA_API_VERSION = date(2025, 8, 28)
_API_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(-preview)?$")

AZURE_WEBRTC_FILTER = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.added",
        "conversation.item.created",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
    }
)
"""What a browser's data channel gets with Azure's ``?webrtcfilter=on``: no session (its
instructions stay private), no tool calls, no errors."""


def api_version_shape(version: str | None) -> Shape:
    """The shape an Azure ``api-version`` speaks; ``RealtimeError`` for one without realtime."""
    if not version:
        raise RealtimeError(
            "missing_required_parameter",
            "Missing required query parameter: 'api-version' (e.g. '2025-04-01-preview' for the "
            "preview protocol, '2025-08-28' for GA; or use '/openai/v1/realtime?model=…').",
            param="api-version",
        )
    match = _API_VERSION.match(version)
    when: date | None = None
    if match is not None:
        try:
            when = date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            when = None
    if when is not None and when >= FIRST_GA_API_VERSION:
        return "ga"
    preview = match is not None and bool(match[4])
    if when is not None and preview and FIRST_BETA_API_VERSION <= when <= LAST_BETA_API_VERSION:
        return "beta"
    raise RealtimeError(
        "unsupported_api_version",
        f"Unsupported api-version '{version[:40]}' for the Realtime API: preview versions from "
        "'2024-10-01-preview' to '2025-04-01-preview' speak the preview (beta) protocol, "
        "'2025-08-28' and later the GA protocol.",
        param="api-version",
    )


def wants_beta(headers: Mapping[str, str], subprotocols: list[str]) -> bool:
    """The client asked for the beta shape (header, or browser subprotocol)."""
    return headers.get("openai-beta", "").startswith("realtime") or "openai-beta.realtime-v1" in subprotocols


@dataclass(frozen=True)
class RealtimeRequest:
    """What a ``/realtime`` WebSocket asks for, whichever URL family it came by."""

    model: str | None
    intent: str | None
    call_id: str | None
    shape: Shape
    problem: RealtimeError | None = None
    """Set when the URL itself cannot be served (reported after the upgrade, then closed)."""


def openai_request(
    query: Mapping[str, str], headers: Mapping[str, str], subprotocols: list[str]
) -> RealtimeRequest:
    """``/v1/realtime?model=…`` (and ``/openai/v1/realtime``: Azure's v1 surface is OpenAI's)."""
    return RealtimeRequest(
        model=query.get("model") or query.get("deployment") or None,
        intent=query.get("intent"),
        call_id=query.get("call_id"),
        shape="beta" if wants_beta(headers, subprotocols) else "ga",
    )


def azure_request(
    query: Mapping[str, str], headers: Mapping[str, str], subprotocols: list[str]
) -> RealtimeRequest:
    """``/openai/realtime?api-version=…&deployment=…``: the api-version picks the shape. On a
    transcription socket a deployment names the transcription deployment, not a session model."""
    model = query.get("deployment") or query.get("model") or None
    if query.get("intent") == "transcription":
        model = None
    problem: RealtimeError | None = None
    shape: Shape = "beta" if wants_beta(headers, subprotocols) else "ga"
    try:
        if api_version_shape(query.get("api-version")) == "beta":
            shape = "beta"
    except RealtimeError as err:
        problem = RealtimeError(err.code, err.message, param=err.param, fatal=True)
    if (
        problem is None
        and model is None
        and query.get("intent") != "transcription"
        and not query.get("call_id")
    ):
        problem = RealtimeError(
            "missing_model",
            "Missing required parameter: 'deployment'.",
            param="deployment",
            fatal=True,
        )
    return RealtimeRequest(
        model=model,
        intent=query.get("intent"),
        call_id=query.get("call_id"),
        shape=shape,
        problem=problem,
    )


def is_azure_path(path: str) -> bool:
    return path.startswith("/openai/") or path == "/v1/realtimertc"


class AzureCredentials:
    """ASGI middleware for Azure's routes: a key sent as ``?api-key=`` (browsers cannot set
    headers on a WebSocket) becomes the ``api-key`` header and leaves the query string, so that
    nothing after this point (access logs included) sees it; and the ``api-key`` header is
    the credential there even beside an ``Authorization`` header (Azure's own rule: the
    ``openai`` SDK pointed at ``/openai/v1`` with ``default_headers={"api-key": …}`` still
    sends its placeholder ``api_key`` as a bearer token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and is_azure_path(scope.get("path", "")):
            headers = list(scope.get("headers") or [])
            raw: bytes = scope.get("query_string", b"")
            if b"api-key=" in raw:
                pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
                keys = [value for name, value in pairs if name == "api-key" and value]
                scope["query_string"] = urlencode([(n, v) for n, v in pairs if n != "api-key"]).encode(
                    "latin-1"
                )
                if keys and not any(name.lower() == b"api-key" for name, _ in headers):
                    headers.append((b"api-key", keys[0].encode("latin-1")))
            if any(name.lower() == b"api-key" for name, _ in headers):
                headers = [(name, value) for name, value in headers if name.lower() != b"authorization"]
            scope["headers"] = headers
        await self.app(scope, receive, send)
