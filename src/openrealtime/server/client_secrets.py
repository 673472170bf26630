"""``POST /v1/realtime/client_secrets``: short-lived ``ek_`` keys for browsers and apps.

A backend holding the API key mints a key bound to a session config; the browser uses it on
the WebSocket or on ``/calls`` and never sees the API key. Only API keys may mint (never an
``ek_`` key); what is stored is the key's hash (see ``auth.Authenticator``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..protocol.errors import RealtimeError
from .auth import Principal
from .http import http_error
from .sessions import build_session
from .state import ServerState, State, require_principal

DEFAULT_TTL_SECONDS = 600
MIN_TTL_SECONDS = 10
MAX_TTL_SECONDS = 7200
_FIELDS = {"expires_after", "session"}


def ttl_of(expires_after: Any) -> int:
    """Seconds until expiry from ``expires_after`` (``{anchor: "created_at", seconds}``)."""
    if expires_after is None:
        return DEFAULT_TTL_SECONDS
    if not isinstance(expires_after, dict):
        raise RealtimeError(
            "invalid_type", "Invalid type for 'expires_after': expected an object.", param="expires_after"
        )
    unknown = set(expires_after) - {"anchor", "seconds"}
    if unknown:
        name = sorted(unknown)[0]
        raise RealtimeError(
            "unknown_parameter", f"Unknown parameter: 'expires_after.{name}'.", param=f"expires_after.{name}"
        )
    anchor = expires_after.get("anchor", "created_at")
    if anchor != "created_at":
        raise RealtimeError(
            "invalid_value",
            f"Invalid value: '{anchor}'. Supported values are: 'created_at'.",
            param="expires_after.anchor",
        )
    seconds = expires_after.get("seconds", DEFAULT_TTL_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise RealtimeError(
            "invalid_type",
            "Invalid type for 'expires_after.seconds': expected an integer.",
            param="expires_after.seconds",
        )
    if seconds < MIN_TTL_SECONDS:
        raise RealtimeError(
            "integer_below_min_value",
            f"Invalid 'expires_after.seconds': integer below minimum value. Expected a value >= {MIN_TTL_SECONDS}, but got {seconds} instead.",
            param="expires_after.seconds",
        )
    if seconds > MAX_TTL_SECONDS:
        raise RealtimeError(
            "integer_above_max_value",
            f"Invalid 'expires_after.seconds': integer above maximum value. Expected a value <= {MAX_TTL_SECONDS}, but got {seconds} instead.",
            param="expires_after.seconds",
        )
    return seconds


async def mint_client_secret(state: ServerState, parent: Principal, body: Any) -> dict[str, Any]:
    """Validate a ``client_secrets`` request body and mint the key; returns the response body.

    Raises ``RealtimeError`` (with ``param``) for a bad body."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise RealtimeError("invalid_type", "Invalid type for the request body: expected an object.")
    unknown = set(body) - _FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise RealtimeError("unknown_parameter", f"Unknown parameter: '{name}'.", param=name)
    ttl = ttl_of(body.get("expires_after"))
    session = build_session(body.get("session"), voice_check=state.engines.voice_problem)
    wire = session.model_dump(mode="json", exclude_none=False)
    value, expires_at = await state.auth.mint(parent, wire, ttl)
    return {"value": value, "expires_at": expires_at, "session": wire}


OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "expires_after": {
                            "type": "object",
                            "properties": {
                                "anchor": {"type": "string", "enum": ["created_at"]},
                                "seconds": {
                                    "type": "integer",
                                    "minimum": MIN_TTL_SECONDS,
                                    "maximum": MAX_TTL_SECONDS,
                                },
                            },
                        },
                        "session": {"type": "object"},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {"description": "The minted key, its expiry and the bound session."},
        "400": {"description": "A field is invalid."},
        "401": {"description": "Missing or invalid API key (ephemeral keys cannot mint)."},
    },
}
"""The route reads its body itself (to answer with OpenAI's errors); this documents it."""


minting_key = require_principal(
    api_keys_only=True, ephemeral_refusal="Ephemeral keys cannot mint client secrets; use an API key."
)


def router() -> APIRouter:
    """The ``client_secrets`` route."""
    api = APIRouter()

    @api.post("/v1/realtime/client_secrets", response_model=None, openapi_extra=OPENAPI)
    @api.post("/openai/v1/realtime/client_secrets", response_model=None, openapi_extra=OPENAPI)  # Azure
    async def client_secrets(
        request: Request,
        server: State,
        parent: Annotated[Principal, Depends(minting_key)],
    ) -> dict[str, Any] | JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return http_error(400, "invalid_json", "The request body is not valid JSON.")
        try:
            return await mint_client_secret(server, parent, body)
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)

    return api
