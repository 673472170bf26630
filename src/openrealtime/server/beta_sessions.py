"""Ephemeral keys the beta way: ``POST /v1/realtime/sessions`` and
``/v1/realtime/transcription_sessions`` (and Azure's preview ``/openai/realtimeapi/sessions``).

The body is a flat beta session; it is translated (``protocol.beta``) and validated like a GA
session, and the ``ek_`` key minted for it is bound to the GA session, as with
``client_secrets``. The answer is the beta session with ``client_secret: {value, expires_at}``.
Keys live one minute unless ``client_secret.expires_after.seconds`` asks otherwise (10-7200 s).
Only API keys may mint.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..protocol import beta
from ..protocol.errors import RealtimeError
from ..protocol.ids import new_id
from .auth import Principal
from .client_secrets import ttl_of
from .dialects import api_version_shape
from .http import http_error
from .sessions import build_session
from .state import ServerState, State, require_principal

BETA_TTL_SECONDS = 60
"""OpenAI's beta keys lived one minute."""


def _flat_param(param: str | None) -> str | None:
    """A beta ``session.…`` path as the top-level field of the flat request body."""
    mapped = beta.param_to_beta(param)
    if mapped and mapped.startswith("session."):
        return mapped[len("session.") :]
    return None if mapped == "session" else mapped


async def mint_beta_session(
    state: ServerState, parent: Principal, body: Any, kind: Literal["realtime", "transcription"]
) -> dict[str, Any]:
    """Translate and validate a beta sessions body, mint its key; the beta response body.

    Raises ``RealtimeError`` naming the body's (beta) field."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise RealtimeError("invalid_type", "Invalid type for the request body: expected an object.")
    patch, temperature, secret = beta.session_to_ga(body, kind=kind, param="")
    expiry = (secret or {}).get("expires_after") or (secret or {}).get("expires_at")
    ttl = BETA_TTL_SECONDS
    if isinstance(expiry, dict) and expiry.get("seconds") is not None:
        try:
            ttl = ttl_of({"anchor": "created_at", "seconds": expiry["seconds"]})
        except RealtimeError as err:
            field = "expires_after" if (secret or {}).get("expires_after") else "expires_at"
            raise RealtimeError(
                err.code,
                err.message.replace("expires_after", f"client_secret.{field}"),
                param=f"client_secret.{field}.seconds",
            ) from None
    try:
        session = build_session(patch, param="session", voice_check=state.engines.voice_problem)
    except RealtimeError as err:
        param = _flat_param(err.param)
        message = err.message.replace(str(err.param), str(param)) if err.param and param else err.message
        raise RealtimeError(err.code, message, param=param) from None
    wire = session.model_dump(mode="json", exclude_none=False)
    bound = {**wire, beta.BETA_EXTRAS_KEY: {"temperature": temperature}} if temperature is not None else wire
    value, expires_at = await state.auth.mint(parent, bound, ttl)
    shown = {**wire, "id": new_id("sess_")}
    answer = (
        beta.session_to_beta(shown, temperature=temperature or beta.DEFAULT_TEMPERATURE)
        if kind == "realtime"
        else beta.transcription_session_to_beta(shown)
    )
    return {**answer, "client_secret": {"value": value, "expires_at": expires_at}}


OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "responses": {
        "200": {"description": "The beta session with its ephemeral key in 'client_secret'."},
        "400": {"description": "A field is invalid, or the beta shape is turned off."},
        "401": {"description": "Missing or invalid API key (ephemeral keys cannot mint)."},
    },
}


minting_key = require_principal(
    api_keys_only=True, ephemeral_refusal="Ephemeral keys cannot mint keys; use an API key."
)
MintingKey = Annotated[Principal, Depends(minting_key)]


def router() -> APIRouter:
    """The beta minting routes (OpenAI's and Azure's)."""
    api = APIRouter()

    async def mint(
        request: Request, server: ServerState, parent: Principal, kind: Literal["realtime", "transcription"]
    ) -> dict[str, Any] | JSONResponse:
        if not server.settings.beta_shape:
            return http_error(
                400,
                "beta_api_shape_disabled",
                "The beta Realtime API shape is turned off on this server; use POST /v1/realtime/client_secrets.",
            )
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return http_error(400, "invalid_json", "The request body is not valid JSON.")
        try:
            return await mint_beta_session(server, parent, body, kind)
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)

    @api.post("/v1/realtime/sessions", response_model=None, openapi_extra=OPENAPI)
    async def sessions(request: Request, server: State, parent: MintingKey) -> dict[str, Any] | JSONResponse:
        return await mint(request, server, parent, "realtime")

    @api.post("/v1/realtime/transcription_sessions", response_model=None, openapi_extra=OPENAPI)
    async def transcription_sessions(
        request: Request, server: State, parent: MintingKey
    ) -> dict[str, Any] | JSONResponse:
        return await mint(request, server, parent, "transcription")

    @api.post("/openai/realtimeapi/sessions", response_model=None, openapi_extra=OPENAPI)
    async def azure_sessions(
        request: Request, server: State, parent: MintingKey
    ) -> dict[str, Any] | JSONResponse:
        """Azure's preview route: the same, with an ``api-version`` (checked after the key)."""
        try:
            api_version_shape(request.query_params.get("api-version"))
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)
        return await mint(request, server, parent, "realtime")

    return api
