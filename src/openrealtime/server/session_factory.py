"""Building a live session (core + runtime) the same way for every transport."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import Settings
from ..core.session import Limits, SessionCore
from ..protocol.session import AnySession
from ..runtime.mcp import McpPolicy
from ..runtime.observer import SessionInfo
from ..runtime.port import SessionClient
from ..runtime.responding import Cascade, Responder
from ..runtime.session_runtime import SessionRuntime
from ..runtime.upstream import UpstreamConfig, UpstreamResponder
from ..telemetry.ledger import budget_hooks
from .state import ServerState


def new_session_runtime(
    state: ServerState,
    session: AnySession,
    *,
    key_id: str,
    transport: str,
    model: str,
    client: SessionClient,
) -> SessionRuntime:
    """A session starting from ``session`` with the server's limits, budgets, engines and
    observers (admission, ``state.limits.admit``, is the caller's to do first)."""
    settings = state.settings
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
        server_playback=transport != "websocket",  # WebRTC and SIP play the answers out themselves
        llm_sees_images=state.engines.llm_vision,
        voice_check=state.engines.voice_problem,
        **budget_hooks(state.usage_ledger, key_id),
    )
    info = SessionInfo(session_id="", key_id=key_id, transport=transport, model=model)
    return SessionRuntime(
        core,
        state.engines,
        state.scheduler,
        client,
        observers=state.observers,
        info=info,
        admit_event=lambda: state.limits.allow_event(key_id),
        mcp_policy=McpPolicy.from_settings(settings.mcp_allowed_hosts, settings.mcp_timeout_seconds),
        responder=responder_for(settings),
        moderation=state.moderation,
        disclosure=settings.disclosure if transport != "websocket" else None,  # said on calls
    )


def responder_for(settings: Settings) -> Callable[[SessionRuntime], Responder]:
    """Who answers a session: the upstream Realtime API when ``upstream_url`` is set (the
    local cascade as its fallback), else the local cascade."""
    if not settings.upstream_url:
        return Cascade
    config = UpstreamConfig(
        url=settings.upstream_url,
        api_key=settings.upstream_api_key,
        model=settings.upstream_model,
        fallback=settings.upstream_fallback,
        connect_timeout_s=settings.upstream_connect_timeout_seconds,
        stall_s=settings.upstream_stall_seconds,
    )
    return lambda runtime: UpstreamResponder(runtime, config)
