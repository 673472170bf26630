"""WebRTC calls: ``POST /v1/realtime/calls`` (SDP offer → answer), ``…/{call_id}/hangup``,
and sideband WebSockets (``/v1/realtime?call_id=``) attached to a live call (WebRTC or SIP).

Two request shapes (spec §4.1): raw ``application/sdp`` with an ``ek_`` key (the session bound
to the key) or an API key (defaults), and ``multipart/form-data`` with ``sdp`` + ``session``
parts, the way a backend relays a browser's offer.

The same offer is taken at Azure's ``/openai/v1/realtime/calls`` (with ``?webrtcfilter=on`` the
data channel carries only Azure's short list of events), and, speaking the beta shape on the
data channel, at the beta ``POST /v1/realtime?model=…`` and Azure's preview ``/v1/realtimertc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from ..protocol.beta import BETA_EXTRAS_KEY, BetaShape
from ..protocol.errors import RealtimeError
from ..protocol.ids import new_id
from ..protocol.session import AnySession, RealtimeSession
from ..protocol.shape import GA_SHAPE, EventShape, FilteredShape
from ..runtime.port import SessionClient
from ..runtime.session_runtime import SessionRuntime
from ..telemetry.logs import session_id_var
from ..transports.webrtc import WebRTCCall, addresses_for_bind
from ..transports.websocket import WebSocketConnection
from .auth import Principal
from .call_registry import LiveCall
from .dialects import AZURE_WEBRTC_FILTER
from .http import http_error
from .session_factory import new_session_runtime
from .sessions import build_session, restore_session
from .state import AnyKey, ServerState, State, api_key

log = logging.getLogger("openrealtime.calls")

MAX_SDP_BYTES = 64 * 1024
CALL_ID_PREFIX = "rtc_"


class _BadRequest(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


async def _text_part(part: UploadFile | str | None) -> str | None:
    if part is None:
        return None
    raw = await part.read() if isinstance(part, UploadFile) else part.encode()
    if len(raw) > MAX_SDP_BYTES:
        raise _BadRequest("invalid_value", "A request part is too large.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRequest("invalid_value", "Request parts must be UTF-8 text.") from None


async def _read_offer(request: Request) -> tuple[str, Any, bool]:
    """The SDP offer, the ``session`` config (or None) and whether a session part was sent."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/sdp":
        body = await request.body()
        if len(body) > MAX_SDP_BYTES:
            raise _BadRequest("invalid_value", "The SDP offer is too large.", "sdp")
        try:
            return body.decode("utf-8"), None, False
        except UnicodeDecodeError:
            raise _BadRequest("invalid_value", "The SDP offer must be UTF-8 text.", "sdp") from None
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except Exception:
            raise _BadRequest("invalid_request_error", "The multipart body could not be parsed.") from None
        sdp = await _text_part(form.get("sdp"))
        if not sdp:
            raise _BadRequest("missing_required_parameter", "Missing required parameter: 'sdp'.", "sdp")
        raw_session = await _text_part(form.get("session"))
        if raw_session is None:
            return sdp, None, False
        try:
            return sdp, json.loads(raw_session), True
        except json.JSONDecodeError:
            raise _BadRequest("invalid_json", "The 'session' part is not valid JSON.", "session") from None
    raise _BadRequest(
        "unsupported_content_type",
        "Send the SDP offer as 'application/sdp', or as 'multipart/form-data' with 'sdp' and 'session' parts.",
    )


def _check_offer(sdp: str) -> None:
    if not sdp.lstrip().startswith("v=0") or "\nm=" not in sdp.replace("\r\n", "\n"):
        raise _BadRequest("invalid_offer", "The SDP offer is not valid SDP (no 'v=0' or no media).", "sdp")
    if "m=audio" not in sdp and "m=application" not in sdp:
        raise _BadRequest(
            "invalid_offer", "The SDP offer needs an audio track or an 'oai-events' data channel.", "sdp"
        )


def _initial_session(state: ServerState, principal: Principal, config: Any, sent: bool) -> AnySession:
    """The session the call starts from: the ``session`` part, else the key's bound session."""
    if sent:
        return build_session(config, param="session", voice_check=state.engines.voice_problem)
    if principal.session is not None:
        return restore_session(principal.session)
    return RealtimeSession()


async def start_call(
    state: ServerState, principal: Principal, sdp: str, session: AnySession, shape: EventShape = GA_SHAPE
) -> tuple[WebRTCCall, str]:
    """Create the call, answer the offer and register it; returns the call and the answer.
    ``shape`` is what the data channel speaks (sidebands always speak GA)."""
    call_id = new_id(CALL_ID_PREFIX)
    model = session.model if isinstance(session, RealtimeSession) else ""

    def make_runtime(client: SessionClient) -> SessionRuntime:
        return new_session_runtime(
            state, session, key_id=principal.key_id, transport="webrtc", model=model or "", client=client
        )

    def ended(call: WebRTCCall) -> None:
        if state.calls.get(call.call_id) is call:
            state.calls.remove(call)
            state.limits.release(principal.key_id)

    call = WebRTCCall(
        call_id,
        principal.key_id,
        make_runtime,
        on_ended=ended,
        ice_hosts=addresses_for_bind(state.settings.host),
        shape=shape,
    )
    inner = shape.inner if isinstance(shape, FilteredShape) else shape
    if isinstance(inner, BetaShape):
        inner.conversation_id = call.runtime.core.responses.conversation_id
    state.calls.add(call)
    session_id_var.set(call.runtime.core.session.id)  # the call's tasks log under it
    try:
        answer = await call.answer(sdp)
    except BaseException:
        await call.close()
        raise
    return call, answer


def router() -> APIRouter:
    """The WebRTC call routes."""
    api = APIRouter()

    @api.post("/v1/realtime/calls", response_model=None)
    async def create_call(request: Request, server: State, principal: AnyKey) -> Response:
        return await answer_offer(request, server, principal, "/v1/realtime/calls")

    @api.post("/openai/v1/realtime/calls", response_model=None)
    async def azure_create_call(request: Request, server: State, principal: AnyKey) -> Response:
        """Azure's GA route; ``?webrtcfilter=on`` keeps the session (and its instructions), tool
        calls and errors off the browser's data channel."""
        filtered = request.query_params.get("webrtcfilter", "").lower() == "on"
        shape = FilteredShape(GA_SHAPE, AZURE_WEBRTC_FILTER) if filtered else GA_SHAPE
        return await answer_offer(request, server, principal, "/openai/v1/realtime/calls", shape=shape)

    @api.post("/v1/realtime", response_model=None)
    @api.post("/v1/realtimertc", response_model=None)  # Azure's preview WebRTC route
    async def beta_create_call(request: Request, server: State, principal: AnyKey) -> Response:
        """The beta WebRTC offer (``?model=``): the data channel speaks the beta shape."""
        return await answer_offer(request, server, principal, "/v1/realtime/calls", beta=True)

    async def answer_offer(
        request: Request,
        server: ServerState,
        principal: Principal,
        location: str,
        *,
        shape: EventShape = GA_SHAPE,
        beta: bool = False,
    ) -> Response:
        if beta and not server.settings.beta_shape:
            return http_error(
                400,
                "beta_api_shape_disabled",
                "The beta Realtime API shape is turned off on this server; use POST /v1/realtime/calls.",
            )
        try:
            sdp, config, sent = await _read_offer(request)
            _check_offer(sdp)
            session = _initial_session(server, principal, config, sent)
            model = request.query_params.get("model")
            if beta and model and isinstance(session, RealtimeSession):
                session.model = model
        except _BadRequest as bad:
            return http_error(400, bad.code, bad.message, bad.param)
        except RealtimeError as err:
            return http_error(400, err.code, err.message, err.param)
        refused = await server.limits.admit_shared(principal.key_id)
        if refused is not None:
            body = {"message": refused.message, "type": refused.type, "param": None, "code": refused.code}
            unavailable = refused.code == "shared_state_unavailable"
            return JSONResponse({"error": body}, status_code=503 if unavailable else 429)
        if beta:
            bound = (principal.session or {}).get(BETA_EXTRAS_KEY)
            shape = BetaShape(temperature=bound.get("temperature") if isinstance(bound, dict) else None)
        try:
            call, answer = await start_call(server, principal, sdp, session, shape)
        except Exception as exc:
            log.info("WebRTC offer refused: %s", exc)
            return http_error(400, "invalid_offer", f"The SDP offer could not be used: {exc}", "sdp")
        await server.calls.published(call.call_id)
        return Response(
            content=answer,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"{location}/{call.call_id}"},
        )

    @api.post("/v1/realtime/calls/{call_id}/hangup", response_model=None, dependencies=[Depends(api_key)])
    @api.post(  # Azure
        "/openai/v1/realtime/calls/{call_id}/hangup", response_model=None, dependencies=[Depends(api_key)]
    )
    async def hangup(call_id: str, request: Request, server: State) -> Response:
        call = server.calls.get(call_id)
        if call is None:
            from .cluster import forward_call_request

            forwarded = await forward_call_request(server, request, call_id)
            if forwarded is not None:  # the call lives on another gateway
                return forwarded
            return http_error(404, "call_not_found", f"No call with id '{call_id}' is active.", "call_id")
        await call.close()
        return Response(status_code=200)

    return api


def live_call(state: ServerState, call_id: str, principal: Principal) -> LiveCall | None:
    """The call a sideband may attach to: live, and the caller holds an API key (not ``ek_``)."""
    if principal.ephemeral:
        return None
    call = state.calls.get(call_id)
    return call if call is not None and not call.closed else None


async def serve_sideband(call: LiveCall, websocket: WebSocket) -> None:
    """Relay a sideband WebSocket (already accepted) to ``call`` until either side ends."""
    connection = WebSocketConnection(websocket)
    connection.wire.input_format = lambda: call.input_format
    await call.attach(connection)
    writer = asyncio.create_task(connection._writer(), name="sideband-writer")

    async def read() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            call.receive_frame(text if text is not None else message.get("bytes") or b"", connection.wire)

    reader = asyncio.create_task(read(), name="sideband-reader")
    try:
        await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        call.detach(connection)
        reader.cancel()
        writer.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(reader, writer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await websocket.close(1000)
