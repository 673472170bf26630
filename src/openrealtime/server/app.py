"""The ASGI application: routes, authentication and session admission."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from ..config import Settings
from ..core.session import Limits, SessionCore
from ..protocol.errors import RealtimeError
from ..protocol.server_events import ErrorEvent
from ..protocol.session import RealtimeSession, TranscriptionSession
from ..runtime.engines import EngineSet
from ..runtime.scheduler import Scheduler
from ..runtime.session_runtime import SessionRuntime
from ..transports.websocket import WebSocketConnection
from .auth import KeyStore, credential_from_headers

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


@dataclass
class ServerState:
    settings: Settings
    keys: KeyStore
    engines: EngineSet
    scheduler: Scheduler
    active_sessions: int = 0


def error_body(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


def create_app(
    settings: Settings,
    *,
    keys: KeyStore,
    engines: EngineSet | Callable[[], EngineSet],
    scheduler: Scheduler | None = None,
) -> FastAPI:
    """Build the app. ``engines`` may be a factory, called once at startup."""
    holder: dict[str, ServerState] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine_set = engines() if callable(engines) else engines
        holder["state"] = ServerState(
            settings=settings,
            keys=keys,
            engines=engine_set,
            scheduler=scheduler or Scheduler(llm_workers=1, asr_workers=1, tts_workers=1, vad_workers=1),
        )
        yield

    app = FastAPI(title="openrealtime", version="0.1.0", lifespan=lifespan)

    def state() -> ServerState:
        return holder["state"]

    def authorized(request: Request) -> bool:
        credential = credential_from_headers(request.headers)
        return credential is not None and state().keys.is_valid(credential.key)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=None)
    async def models(request: Request) -> dict[str, Any] | JSONResponse:
        if not authorized(request):
            return error_body(401, "invalid_api_key", "Incorrect API key provided.")
        created = int(time.time())
        engine = state().engines.llm.name
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "openrealtime", "engine": engine}
            for name in REALTIME_MODEL_ALIASES
        ]
        return {"object": "list", "data": data}

    @app.get("/v1/voices", response_model=None)
    async def voices(request: Request) -> dict[str, Any] | JSONResponse:
        if not authorized(request):
            return error_body(401, "invalid_api_key", "Incorrect API key provided.")
        table = state().engines.voices
        return {"object": "list", "data": table.describe() if table is not None else []}

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        await serve_realtime(state(), websocket)

    return app


async def _reject(connection: WebSocketConnection, error: RealtimeError, code: int) -> None:
    connection.send(ErrorEvent(error=error.as_dict()).to_json())
    await connection.close(code, error.code or "error")


async def serve_realtime(state: ServerState, websocket: WebSocket) -> None:
    """Admit a WebSocket connection, then run its session to the end."""
    offered = list(websocket.scope.get("subprotocols") or [])
    credential = credential_from_headers(websocket.headers, offered)
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    connection = WebSocketConnection(websocket)
    params = websocket.query_params
    problem: tuple[RealtimeError, int] | None = None
    if credential is None or not state.keys.is_valid(credential.key):
        problem = (
            RealtimeError(
                "invalid_api_key",
                "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
                fatal=True,
            ),
            1008,
        )
    elif (
        websocket.headers.get("openai-beta", "").startswith("realtime")
        or "openai-beta.realtime-v1" in offered
    ):
        problem = (
            RealtimeError(
                "beta_api_shape_disabled",
                "The beta Realtime API shape is not supported; remove the 'OpenAI-Beta: realtime=v1' header.",
                fatal=True,
            ),
            4000,
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
    if problem is not None:
        writer = WebSocketConnection(websocket)
        await _reject(writer, *problem)
        await writer._writer()
        return

    settings = state.settings
    session: RealtimeSession | TranscriptionSession
    if params.get("intent") == "transcription":
        session = TranscriptionSession()
    else:
        session = RealtimeSession(model=params["model"])
    limits = Limits(
        max_input_buffer_ms=settings.max_input_buffer_seconds * 1000,
        max_context_tokens=settings.llm_context,
        max_session_minutes=settings.max_session_minutes,
    )
    core = SessionCore(
        session,
        count_tokens=state.engines.llm.count_tokens,
        created_at=int(time.time()),
        limits=limits,
        voice_check=state.engines.voice_problem,
    )
    runtime = SessionRuntime(core, state.engines, state.scheduler, connection.send, connection.close)
    state.active_sessions += 1
    try:
        await connection.serve(runtime)
    finally:
        state.active_sessions -= 1
