"""Phone calls: the SIP listener's glue to the server, and the app's call control routes
``POST /v1/realtime/calls/{call_id}/accept | reject | refer`` (spec §4.3).

An INVITE becomes a ringing call with an ``rtc_`` id, announced to the app by the signed
``realtime.call.incoming`` webhook. The app accepts it with a session config (validated like
``session.update``), rejects it with a SIP status, or later transfers it. Hang-up and the
sideband socket (``/v1/realtime?call_id=``) go through the shared call registry, the same
way as WebRTC calls. These routes take API keys only (never ``ek_``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ..config import Settings
from ..protocol.errors import RealtimeError
from ..protocol.session import RealtimeSession
from ..runtime.port import SessionClient
from ..runtime.session_runtime import SessionRuntime
from ..transports.sip import webhook
from ..transports.sip.call import CallStateError, SipCall
from ..transports.sip.server import SipServer as SipServer
from ..transports.sip.tls import TlsConfig
from .call_registry import CallRegistry
from .http import http_error
from .limits import SessionLimits
from .session_factory import new_session_runtime
from .sessions import build_session
from .state import ApiKey, ServerState, State, api_key

log = logging.getLogger("openrealtime.sip_calls")

_TARGET = re.compile(r"^(sip|sips|tel):[^\s<>\"]+$", re.IGNORECASE)


async def start_sip(settings: Settings, calls: CallRegistry, limits: SessionLimits) -> SipServer | None:
    """Start the SIP listener when ``sip_enabled``; its calls join ``calls``."""
    if not settings.sip_enabled:
        return None

    async def announce(call: SipCall) -> bool:
        calls.add(call)
        url, secret = settings.webhook_url, settings.webhook_secret
        if not url or not secret:
            log.warning("SIP call %s: no webhook_url/webhook_secret configured", call.call_id)
            return False
        event = webhook.incoming_call_event(
            call.call_id, call.invite, media_security=call.negotiated.media_security
        )
        return await webhook.deliver(url, secret, event)

    def ended(call: SipCall) -> None:
        if calls.get(call.call_id) is call:
            calls.remove(call)
        if call.runtime is not None:
            limits.release(call.key_id)

    tls = (
        TlsConfig(
            settings.sip_tls_certfile,
            settings.sip_tls_keyfile,
            settings.sip_tls_cafile,
            settings.sip_tls_require_client_cert,
        )
        if settings.sip_tls_certfile is not None
        else None
    )
    server = SipServer(
        settings.sip_host,
        settings.sip_port,
        allowed_sources=settings.sip_allowed_sources,
        digest_user=settings.sip_digest_user,
        digest_password=settings.sip_digest_password,
        ring_timeout_s=settings.sip_ring_timeout_s,
        on_incoming=announce,
        on_ended=ended,
        transports=settings.sip_listeners,
        tls=tls,
        tls_port=settings.sip_tls_port,
        media_security=settings.sip_media_security,
    )
    await server.start()
    return server


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RealtimeError("invalid_json", "The request body is not valid JSON.") from None


def router() -> APIRouter:
    """The SIP call-control routes (API keys only); ``ServerState.sip`` is the running
    listener or None."""
    api = APIRouter()

    async def sip_call(server: ServerState, request: Request, call_id: str) -> SipCall | Response:
        listener = server.sip
        call = listener.calls.get(call_id) if listener is not None else None
        if call is None:
            from .cluster import forward_call_request

            forwarded = await forward_call_request(server, request, call_id)
            if forwarded is not None:  # the call rings on another gateway
                return forwarded
            return http_error(404, "call_not_found", f"No SIP call with id '{call_id}' is active.", "call_id")
        return call

    @api.post("/v1/realtime/calls/{call_id}/accept", response_model=None)
    @api.post("/openai/v1/realtime/calls/{call_id}/accept", response_model=None)  # Azure
    async def accept(
        call_id: str,
        request: Request,
        server: State,
        principal: ApiKey,
    ) -> Response:
        call = await sip_call(server, request, call_id)
        if isinstance(call, Response):
            return call
        try:
            config = await _body(request)
            if config is None:
                raise RealtimeError(
                    "missing_required_parameter", "Missing required parameter: 'type'.", param="type"
                )
            if isinstance(config, dict) and "type" not in config:
                raise RealtimeError(
                    "missing_required_parameter", "Missing required parameter: 'type'.", param="type"
                )
            session = build_session(config, param="session", voice_check=server.engines.voice_problem)
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)
        model = session.model if isinstance(session, RealtimeSession) else ""

        def make_runtime(client: SessionClient) -> SessionRuntime:
            return new_session_runtime(
                server, session, key_id=principal.key_id, transport="sip", model=model or "", client=client
            )

        refused = await server.limits.admit_shared(principal.key_id)
        if refused is not None:
            unavailable = refused.code == "shared_state_unavailable"
            return http_error(503 if unavailable else 429, refused.code, refused.message)
        try:
            await call.accept(make_runtime, principal.key_id)
        except CallStateError as err:
            server.limits.release(principal.key_id)
            return http_error(409, "call_not_ringing", str(err), "call_id")
        except Exception:
            log.exception("SIP call %s could not be answered", call_id)
            if call.runtime is None:
                server.limits.release(principal.key_id)
            return http_error(500, "server_error", "The call could not be answered; it was ended.")
        return Response(status_code=200)

    @api.post("/v1/realtime/calls/{call_id}/reject", response_model=None, dependencies=[Depends(api_key)])
    @api.post(
        "/openai/v1/realtime/calls/{call_id}/reject", response_model=None, dependencies=[Depends(api_key)]
    )  # Azure
    async def reject(call_id: str, request: Request, server: State) -> Response:
        call = await sip_call(server, request, call_id)
        if isinstance(call, Response):
            return call
        try:
            body = await _body(request) or {}
            if not isinstance(body, dict):
                raise RealtimeError("invalid_type", "Invalid type for the request body: expected an object.")
            status = body.get("status_code", 603)
            if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 699:
                raise RealtimeError(
                    "invalid_value",
                    "'status_code' must be a SIP error status (400-699).",
                    param="status_code",
                )
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)
        try:
            call.reject(status)
        except CallStateError as err:
            return http_error(409, "call_not_ringing", str(err), "call_id")
        return Response(status_code=200)

    @api.post("/v1/realtime/calls/{call_id}/refer", response_model=None, dependencies=[Depends(api_key)])
    @api.post(
        "/openai/v1/realtime/calls/{call_id}/refer", response_model=None, dependencies=[Depends(api_key)]
    )  # Azure
    async def refer(call_id: str, request: Request, server: State) -> Response:
        call = await sip_call(server, request, call_id)
        if isinstance(call, Response):
            return call
        try:
            body = await _body(request)
            target = body.get("target_uri") if isinstance(body, dict) else None
            if not isinstance(target, str) or not target:
                raise RealtimeError(
                    "missing_required_parameter",
                    "Missing required parameter: 'target_uri'.",
                    param="target_uri",
                )
            if not _TARGET.match(target) or len(target) > 512:
                raise RealtimeError(
                    "invalid_value",
                    "'target_uri' must be a 'sip:', 'sips:' or 'tel:' URI.",
                    param="target_uri",
                )
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)
        try:
            answer = await call.refer(target)
        except CallStateError as err:
            return http_error(409, "call_not_active", str(err), "call_id")
        if answer is None or not 200 <= answer.status < 300:
            detail = f"{answer.status} {answer.reason}" if answer is not None else "no answer"
            return http_error(502, "refer_failed", f"The caller's side refused the transfer ({detail}).")
        return Response(status_code=200)

    return api
