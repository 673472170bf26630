"""The ASGI application: routes, authentication and session admission."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Settings
from ..engines.registry import EngineSet
from ..protocol.beta import BETA_EXTRAS_KEY, BetaShape
from ..protocol.errors import RealtimeError
from ..protocol.server_events import ErrorEvent
from ..protocol.session import RealtimeSession, TranscriptionSession
from ..protocol.shape import GA_SHAPE, EventShape
from ..runtime.scheduler import Scheduler
from ..storage.redis_state import SharedStateUnavailable
from ..telemetry.logs import session_id_var
from ..transports.websocket import WebSocketConnection
from . import (
    audio,
    beta_sessions,
    calls,
    client_secrets,
    cluster,
    metrics,
    playground,
    recordings,
    sip_calls,
    usage,
)
from .auth import KeyStore, SecretStore, credential_from_headers
from .dialects import AzureCredentials, RealtimeRequest, azure_request, openai_request
from .http import BodySizeLimit, RouteCors, http_error
from .session_factory import new_session_runtime
from .sessions import restore_session
from .state import ServerState, State, Unauthorized, any_key, close_server_state, open_server_state

log = logging.getLogger("openrealtime.server")

REALTIME_MODEL_ALIASES = (
    "gpt-realtime",
    "gpt-realtime-2025-08-28",
    "gpt-realtime-mini",
    "gpt-realtime-1.5",
    "gpt-realtime-2",
    "gpt-realtime-2.1",
    "gpt-realtime-2.1-mini",
    "gpt-4o-realtime-preview",
    "gpt-4o-mini-realtime-preview",
)


def create_app(
    settings: Settings,
    *,
    keys: KeyStore,
    engines: EngineSet | Callable[[], EngineSet],
    scheduler: Scheduler | None = None,
    secrets: SecretStore | None = None,
) -> FastAPI:
    """Build the app. ``engines`` may be a factory, called once at startup; the server state is
    built once in the lifespan (``state.open_server_state``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine_set = engines() if callable(engines) else engines
        state = await open_server_state(
            settings, keys=keys, engines=engine_set, scheduler=scheduler, secrets=secrets
        )
        app.state.server = state
        try:
            yield
        finally:
            await close_server_state(state)

    # no /docs, /redoc or /openapi.json: every route but /healthz needs a key (tests build the
    # schema in-process with ``app.openapi()``)
    app = FastAPI(
        title="openrealtime",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, path_limits=audio.upload_limits(settings)
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Framework errors (404, 405, ...) in OpenAI's error shape too."""
        codes = {404: "not_found", 405: "method_not_allowed"}
        return http_error(exc.status_code, codes.get(exc.status_code), str(exc.detail))

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return http_error(401, "invalid_api_key", exc.message)

    @app.exception_handler(SharedStateUnavailable)
    async def shared_state_unavailable(_: Request, exc: SharedStateUnavailable) -> JSONResponse:
        return http_error(503, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_exception(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return http_error(400, "invalid_value", str(first.get("msg", "Invalid request.")), param)

    # browser apps on any origin may open WebRTC calls with ek_ keys; other routes only from
    # the listed origins (none by default)
    app.add_middleware(RouteCors, listed_origins=settings.cors_origins)
    app.add_middleware(AzureCredentials)  # outermost: ``?api-key=`` never travels further

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=None, dependencies=[Depends(any_key)])
    async def models(state: State) -> dict[str, Any]:
        created = int(time.time())
        engine = state.engines.llm.name
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "openrealtime", "engine": engine}
            for name in REALTIME_MODEL_ALIASES
        ]
        return {"object": "list", "data": data}

    @app.get("/v1/voices", response_model=None, dependencies=[Depends(any_key)])
    async def voices(state: State) -> dict[str, Any]:
        table = state.engines.voices
        if table is None:
            return {"object": "list", "data": [], "languages": {}}
        languages = getattr(table, "languages", None)
        return {
            "object": "list",
            "data": table.describe(),
            # language -> engines speaking it, neural first (a session voice speaks the
            # session's language with a stand-in voice of those engines)
            "languages": languages() if callable(languages) else {},
        }

    app.include_router(client_secrets.router())
    app.include_router(beta_sessions.router())
    app.include_router(usage.router())
    app.include_router(recordings.router())
    app.include_router(audio.router())
    app.include_router(calls.router())
    app.include_router(sip_calls.router())
    app.include_router(metrics.router())
    app.include_router(
        playground.router(
            enabled=settings.playground_enabled, lifetime_seconds=settings.playground_session_hours * 3600
        )
    )

    async def realtime_socket(websocket: WebSocket, state: ServerState, request: RealtimeRequest) -> None:
        try:
            await serve_realtime(state, websocket, request)
        except SharedStateUnavailable as unavailable:  # e.g. an ek_ key while Redis is down
            await cluster.refuse_websocket(websocket, unavailable.error)

    # OpenAI's path, and Azure's two (real routes each: a WebSocket upgrade is never redirected)
    @app.websocket("/v1/realtime")
    @app.websocket("/openai/v1/realtime")
    async def realtime(websocket: WebSocket, state: State) -> None:
        offered = list(websocket.scope.get("subprotocols") or [])
        request = openai_request(websocket.query_params, websocket.headers, offered)
        await realtime_socket(websocket, state, request)

    @app.websocket("/openai/realtime")
    async def azure_realtime(websocket: WebSocket, state: State) -> None:
        offered = list(websocket.scope.get("subprotocols") or [])
        await realtime_socket(
            websocket, state, azure_request(websocket.query_params, websocket.headers, offered)
        )

    return app


async def _reject(connection: WebSocketConnection, error: RealtimeError, code: int) -> None:
    connection.send(ErrorEvent(error=error.as_dict()))
    await connection.close(code, error.code or "error")


async def serve_realtime(
    state: ServerState, websocket: WebSocket, request: RealtimeRequest | None = None
) -> None:
    """Admit a WebSocket connection, then run its session to the end."""
    offered = list(websocket.scope.get("subprotocols") or [])
    credential = credential_from_headers(websocket.headers, offered)
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    request = request or openai_request(websocket.query_params, websocket.headers, offered)
    params = {
        key: value
        for key, value in (("model", request.model), ("intent", request.intent), ("call_id", request.call_id))
        if value
    }
    problem: tuple[RealtimeError, int] | None = None
    principal = await state.auth.authenticate(credential.key) if credential is not None else None
    if principal is None:
        problem = (
            RealtimeError(
                "invalid_api_key",
                "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
                fatal=True,
            ),
            1008,
        )
    elif request.problem is not None:
        problem = (request.problem, 1008)
    elif request.shape == "beta" and not state.settings.beta_shape:
        problem = (
            RealtimeError(
                "beta_api_shape_disabled",
                "The beta Realtime API shape is not supported; remove the 'OpenAI-Beta: realtime=v1' header.",
                fatal=True,
            ),
            4000,
        )
    elif request.shape == "beta" and params.get("call_id"):
        problem = (
            RealtimeError(
                "beta_api_shape_unsupported",
                "Sideband connections ('call_id') speak the GA shape only; connect without the beta shape.",
                param="call_id",
                fatal=True,
            ),
            1008,
        )
    elif params.get("intent") == "transcription" and params.get("model"):
        problem = (
            RealtimeError(
                "invalid_request_error",
                "You must not provide a model parameter for transcription sessions.",
                param="model",
                fatal=True,
            ),
            1008,
        )
    elif params.get("call_id"):
        call = calls.live_call(state, params["call_id"], principal)
        if call is not None:
            await calls.serve_sideband(call, websocket)
            return
        if not principal.ephemeral and await cluster.forward_sideband(
            state, websocket, params["call_id"], credential
        ):
            return
        problem = (
            RealtimeError(
                "call_not_found",
                f"No call with id '{params['call_id']}' is active.",
                param="call_id",
                fatal=True,
            ),
            1008,
        )
    elif params.get("intent") != "transcription" and not params.get("model"):
        problem = (
            RealtimeError("missing_model", "Missing required parameter: 'model'.", param="model", fatal=True),
            1008,
        )
    if problem is None and principal is not None:
        refused = await state.limits.admit_shared(principal.key_id)
        if refused is not None:
            problem = (refused, 1013)  # try again later
    if problem is not None:
        writer = WebSocketConnection(websocket)
        await _reject(writer, *problem)
        await writer._writer()
        return

    assert principal is not None  # checked above
    session: RealtimeSession | TranscriptionSession
    if principal.session is not None:  # an ephemeral key's bound config is the starting point
        session = restore_session(principal.session)
        if isinstance(session, RealtimeSession) and params.get("model"):
            session.model = params["model"]
    elif params.get("intent") == "transcription":
        session = TranscriptionSession()
    else:
        session = RealtimeSession(model=params["model"])
    shape: EventShape = GA_SHAPE
    if request.shape == "beta":
        bound = (principal.session or {}).get(BETA_EXTRAS_KEY)
        shape = BetaShape(temperature=bound.get("temperature") if isinstance(bound, dict) else None)
    connection = WebSocketConnection(
        websocket, state.settings.max_send_queue_bytes, state.settings.idle_connection_seconds, shape
    )
    runtime = new_session_runtime(
        state,
        session,
        key_id=principal.key_id,
        transport="websocket",
        model=params.get("model") or "",
        client=connection,
    )
    if isinstance(shape, BetaShape):
        shape.conversation_id = runtime.core.responses.conversation_id
    session_id_var.set(runtime.core.session.id)  # log records of this connection's tasks carry it
    try:
        await connection.serve(runtime)
    finally:
        state.limits.release(principal.key_id)
