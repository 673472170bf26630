"""The REST error body every HTTP route answers with (spec §12): ``{"error": {...}}``,
the request-size limit and cross-origin (CORS) access."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EPHEMERAL_KEY_ROUTES = frozenset(
    {
        "/v1/realtime/calls",
        "/openai/v1/realtime/calls",  # Azure
        "/v1/realtime",  # beta WebRTC (POST with the SDP offer)
        "/v1/realtimertc",  # Azure's preview WebRTC
    }
)
"""Routes a browser app calls itself with an ``ek_`` key (spec §3, §4.1, §13)."""


def http_error(status: int, code: str | None, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


class BodySizeLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` get 413 before a route reads them
    (declared ``Content-Length`` checked up front; chunked bodies counted as they stream).
    ``path_limits`` give single routes their own limit (audio uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._too_large(scope, receive, send, limit)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = http_error(
            413, "request_too_large", f"The request body is larger than the limit of {limit} bytes."
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class RouteCors:
    """ASGI middleware: cross-origin access decided per route.

    The routes made for ephemeral keys answer any origin, as OpenAI's API does: a web app on
    its own origin posts its SDP offer to ``/v1/realtime/calls`` with ``Authorization: Bearer
    ek_…``. They never honour cookies or other ambient credentials, and the grant is made
    without ``Access-Control-Allow-Credentials``, so a page can do there only what the key it
    already holds lets it do. Every other route (API keys, usage, admin, the playground's
    cookie sign-in) answers only the origins listed in ``OPENREALTIME_CORS_ORIGINS``: none by
    default.
    """

    def __init__(self, app: ASGIApp, listed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.any_origin = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["POST"],
            # agents-js adds its SDK header to the offer
            allow_headers=["Authorization", "Content-Type", "X-OpenAI-Agents-SDK"],
            expose_headers=["Location"],
            max_age=600,
        )
        self.listed: ASGIApp = (
            CORSMiddleware(
                app,
                allow_origins=list(listed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Location"],
            )
            if listed_origins
            else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in EPHEMERAL_KEY_ROUTES:
            await self.any_origin(scope, receive, send)
        else:
            await self.listed(scope, receive, send)
