"""The browser playground: the page at ``/``, its static files, and a cookie sign-in.

The operator pastes an API key once; the server checks it and answers with an HttpOnly,
SameSite=Strict cookie naming a random server-side session (never the key). The page then
asks ``/playground/session`` for a short-lived ``ek_`` key bound to its chosen session
config and uses that on ``/v1/realtime/calls``, so the API key never reaches the page's
JavaScript. State-changing routes also require the ``X-Playground`` header and, when the
browser sends one, a same-origin ``Origin``: a cross-site form cannot set the header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..protocol.errors import RealtimeError
from ..protocol.session import RealtimeSession
from .auth import Principal
from .client_secrets import mint_client_secret
from .http import http_error
from .state import State

COOKIE_NAME = "openrealtime_playground"
CSRF_HEADER = "x-playground"
EPHEMERAL_TTL_SECONDS = 60
"""An ``ek_`` minted for the page only has to live until the page opens its call."""
MAX_SESSIONS = 1024
MAX_BODY_BYTES = 256 * 1024

STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class PlaygroundLogin:
    """A signed-in browser: whose API key it proved, and until when."""

    principal: Principal
    expires_at: float


class PlaygroundSessions:
    """Server-side sign-ins keyed by the SHA-256 of their cookie token (the token itself is
    kept only by the browser), each expiring after ``lifetime_seconds``."""

    def __init__(
        self,
        lifetime_seconds: float,
        *,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime_seconds = lifetime_seconds
        self.limit = limit
        self.clock = clock
        self._logins: dict[str, PlaygroundLogin] = {}

    def __len__(self) -> int:
        return len(self._logins)

    def open(self, principal: Principal) -> tuple[str, PlaygroundLogin]:
        """A new random token for ``principal``; the oldest sign-in goes when full."""
        self._prune()
        while len(self._logins) >= self.limit:
            oldest = min(self._logins, key=lambda name: self._logins[name].expires_at)
            del self._logins[oldest]
        token = secrets.token_urlsafe(32)
        login = PlaygroundLogin(principal, self.clock() + self.lifetime_seconds)
        self._logins[_token_hash(token)] = login
        return token, login

    def find(self, token: str | None) -> PlaygroundLogin | None:
        if not token:
            return None
        wanted = _token_hash(token)
        found: PlaygroundLogin | None = None
        for stored, login in list(self._logins.items()):  # constant-time compare of every entry
            if hmac.compare_digest(stored, wanted):
                found = login
        if found is None:
            return None
        if found.expires_at <= self.clock():
            self._logins.pop(wanted, None)
            return None
        return found

    def close(self, token: str | None) -> None:
        if token:
            self._logins.pop(_token_hash(token), None)

    def _prune(self) -> None:
        now = self.clock()
        for name in [name for name, login in self._logins.items() if login.expires_at <= now]:
            del self._logins[name]


def _static(name: str) -> bytes:
    return resources.files("openrealtime").joinpath("web", name).read_bytes()


def same_origin(request: Request) -> bool:
    """True when the request carries the playground header and, if the browser sent an
    ``Origin``, it names this server: its ``Host``, or the ``X-Forwarded-Host`` a reverse proxy
    passes on (host and port; the scheme may differ behind a TLS proxy). The custom header
    alone already needs a CORS preflight this server never grants; the origin check is a
    second line."""
    if request.headers.get(CSRF_HEADER) != "1":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    claimed = urlsplit(origin).netloc.lower().encode()
    names = [request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")]
    matches = [hmac.compare_digest(claimed, name.lower().encode()) for name in names if name]
    return any(matches)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise RealtimeError("request_too_large", "The request body is too large.")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RealtimeError("invalid_json", "The request body is not valid JSON.") from None


def router(*, enabled: bool = True, lifetime_seconds: float = 12 * 3600) -> APIRouter:
    """The playground routes (answering 404 when the playground is not ``enabled``)."""
    api = APIRouter(include_in_schema=False)
    logins = PlaygroundSessions(lifetime_seconds)

    def login_of(request: Request) -> PlaygroundLogin | None:
        return logins.find(request.cookies.get(COOKIE_NAME))

    def not_found() -> JSONResponse:
        return http_error(404, "not_found", "The playground is disabled on this server.")

    def forbidden() -> JSONResponse:
        return http_error(
            403, "csrf_check_failed", "Send the 'X-Playground: 1' header from the playground's own origin."
        )

    def signed_out() -> JSONResponse:
        return http_error(401, "not_signed_in", "Sign in to the playground with an API key first.")

    @api.get("/")
    async def page() -> Response:
        if not enabled:
            return not_found()
        return Response(
            _static("index.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
        )

    @api.get("/playground/static/{name}")
    async def static(name: str) -> Response:
        if not enabled:
            return not_found()
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            return http_error(404, "not_found", f"No static file '{name}'.")
        return Response(_static(name), media_type=media_type, headers=SECURITY_HEADERS)

    @api.get("/playground/me", response_model=None)
    async def me(request: Request) -> dict[str, Any] | JSONResponse:
        if not enabled:
            return not_found()
        login = login_of(request)
        if login is None:
            return signed_out()
        defaults = RealtimeSession().model_dump(mode="json")
        return {"signed_in": True, "expires_at": int(login.expires_at), "defaults": defaults}

    @api.post("/playground/login", response_model=None)
    async def login(request: Request, server: State) -> dict[str, Any] | JSONResponse:
        if not enabled:
            return not_found()
        if not same_origin(request):
            return forbidden()
        try:
            body = await _json_body(request)
        except RealtimeError as err:
            return http_error(400, err.code, err.message)
        key = body.get("api_key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key.strip():
            return http_error(400, "missing_required_parameter", "Missing 'api_key'.", "api_key")
        principal = await server.auth.authenticate(key.strip(), allow_ephemeral=False)
        if principal is None:
            return http_error(401, "invalid_api_key", "Incorrect API key provided.")
        logins.close(request.cookies.get(COOKIE_NAME))
        token, opened = logins.open(principal)
        response = JSONResponse({"signed_in": True, "expires_at": int(opened.expires_at)})
        response.set_cookie(
            COOKIE_NAME,
            token,
            max_age=int(lifetime_seconds),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @api.post("/playground/logout", response_model=None)
    async def logout(request: Request) -> dict[str, Any] | JSONResponse:
        if not enabled:
            return not_found()
        if not same_origin(request):
            return forbidden()
        logins.close(request.cookies.get(COOKIE_NAME))
        response = JSONResponse({"signed_in": False})
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response

    @api.get("/playground/voices", response_model=None)
    async def voices(request: Request, server: State) -> dict[str, Any] | JSONResponse:
        if not enabled:
            return not_found()
        if login_of(request) is None:
            return signed_out()
        table = server.engines.voices
        return {"object": "list", "data": table.describe() if table is not None else []}

    @api.post("/playground/session", response_model=None)
    async def session(request: Request, server: State) -> dict[str, Any] | JSONResponse:
        if not enabled:
            return not_found()
        signed_in = login_of(request)
        if signed_in is None:
            return signed_out()
        if not same_origin(request):
            return forbidden()
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise RealtimeError("invalid_type", "Invalid type for the request body: expected an object.")
            request_body = {
                "expires_after": {"anchor": "created_at", "seconds": EPHEMERAL_TTL_SECONDS},
                "session": body.get("session"),
            }
            minted: dict[str, Any] = await mint_client_secret(server, signed_in.principal, request_body)
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)
        return minted

    return api
