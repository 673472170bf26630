"""The server's state, built once at start-up, and how routes reach it.

``open_server_state`` is the composition root: it decides, before anything is constructed,
whether limits and the call registry are local or shared with other gateways (Redis), opens
the usage ledger, starts telemetry and the SIP listener, and returns one ``ServerState`` that
nothing replaces afterwards. Routes get it, and the caller's ``Principal``, through FastAPI
dependencies (``server_state``, ``require_principal``) instead of looking them up by hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from ..auth_records import EPHEMERAL_PREFIX, Principal
from ..config import Settings
from ..engines.registry import EngineSet
from ..protocol.session import RealtimeSession
from ..recording import RecordingService, open_recording_service
from ..recording.observer import RecordingObserver
from ..runtime.disclosure import prepare_disclosure, voice_name
from ..runtime.observer import Observers, SessionObserver
from ..runtime.scheduler import Scheduler
from ..safety import Moderation, build_moderation
from ..telemetry.ledger import UsageLedger, open_ledger
from ..telemetry.metrics import ModerationMetrics
from ..telemetry.observers import Telemetry
from ..transports.sip.server import SipServer
from . import cluster as cluster_module
from .auth import Authenticator, KeyStore, SecretStore, credential_from_headers
from .call_registry import CallRegistry
from .limits import SessionLimits

log = logging.getLogger("openrealtime.server")
_background: set[asyncio.Future[None]] = set()


@dataclass(frozen=True)
class ServerState:
    """Everything the routes share, for the life of the process."""

    settings: Settings
    keys: KeyStore
    auth: Authenticator
    engines: EngineSet
    scheduler: Scheduler
    observers: Observers
    limits: SessionLimits
    calls: CallRegistry
    usage_ledger: UsageLedger
    telemetry: Telemetry
    sip: SipServer | None = None
    cluster: cluster_module.Cluster | None = None
    """This gateway's membership when replicas share state through Redis (``redis_url``)."""
    recordings: RecordingService | None = None
    """Encrypted session recordings (``None`` when recording is off for every key)."""
    moderation: Moderation | None = None
    """Content safety in the speech path (``None`` for ``moderation=none``)."""


async def open_server_state(
    settings: Settings,
    *,
    keys: KeyStore,
    engines: EngineSet,
    scheduler: Scheduler | None = None,
    secrets: SecretStore | None = None,
) -> ServerState:
    """Build the server state (storage, shared state, telemetry, recordings, moderation, SIP)
    in dependency order."""
    from .sip_calls import start_sip  # the SIP routes depend on this module

    ledger = await open_ledger(settings)  # storage: usage ledger and ephemeral keys
    shared = await cluster_module.start_cluster(settings)  # None without redis_url
    limits: SessionLimits
    calls: CallRegistry
    if shared is not None:
        limits = cluster_module.SharedLimits.for_cluster(settings, shared)
        calls = cluster_module.SharedCallRegistry(shared)
    else:
        limits = SessionLimits(
            max_sessions=settings.max_sessions,
            max_sessions_per_key=settings.max_sessions_per_key,
            events_per_second=settings.max_events_per_second,
            event_burst=settings.event_burst,
        )
        calls = CallRegistry()
    # one worker per engine in this process; remote engines take several requests at once
    scheduler = scheduler or Scheduler(
        llm_workers=engines.in_flight.get("llm", 1),
        asr_workers=engines.in_flight.get("asr", 1),
        tts_workers=engines.in_flight.get("tts", 1),
        max_text_responses=settings.max_text_responses,
        partial_share=settings.partial_asr_share,
    )
    telemetry = Telemetry.start(settings, scheduler)
    moderation = build_moderation(settings, ModerationMetrics(telemetry.metrics.registry))
    # the retention sweeper runs inside the service (at start-up, then periodically)
    recordings = await open_recording_service(settings, ledger.storage)
    observers: list[SessionObserver] = [*telemetry.observers, ledger]
    if recordings is not None:
        observers.append(RecordingObserver(recordings, opt_out_key=settings.recording_opt_out_dtmf))
    secret_store = secrets or (shared.redis if shared is not None else None) or ledger.storage
    sip = await start_sip(settings, calls, limits)
    if shared is not None:
        shared.start(limits, calls)
    if settings.disclosure and engines.voices is not None:
        voice = voice_name(RealtimeSession().audio.output.voice)  # the default voice's sound, ready
        warm = asyncio.ensure_future(prepare_disclosure(engines, scheduler, settings.disclosure, voice))
        _background.add(warm)
        warm.add_done_callback(_background.discard)
    return ServerState(
        settings=settings,
        keys=keys,
        auth=Authenticator(keys, secret_store),
        engines=engines,
        scheduler=scheduler,
        observers=Observers(observers),
        limits=limits,
        calls=calls,
        usage_ledger=ledger,
        telemetry=telemetry,
        sip=sip,
        cluster=shared,
        recordings=recordings,
        moderation=moderation,
    )


async def close_server_state(state: ServerState) -> None:
    """Stop in reverse order: calls, SIP, shared state, telemetry, storage."""
    if state.sip is not None:
        await state.sip.stop()
    await state.calls.close_all()
    if state.cluster is not None:
        await state.cluster.close()
    state.telemetry.shutdown()
    if state.recordings is not None:
        await state.recordings.close()
    if state.moderation is not None:
        await state.moderation.close()
    await state.usage_ledger.close()
    await state.usage_ledger.storage.close()


# --------------------------------------------------------------------------- dependencies


def server_state(connection: HTTPConnection) -> ServerState:
    """The running server's state (set by the app's lifespan)."""
    state: ServerState = connection.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]
"""A route parameter receiving the server state."""


class Unauthorized(Exception):
    """No acceptable key: answered with 401 ``invalid_api_key`` and ``message``."""

    def __init__(self, message: str = "Incorrect API key provided.") -> None:
        super().__init__(message)
        self.message = message


ANONYMOUS = Principal(key_id="")
"""Who a request acts for on a route whose key check the settings waived (``metrics_auth``)."""


def require_principal(
    *,
    api_keys_only: bool = False,
    ephemeral_refusal: str | None = None,
    unless: Callable[[Settings], bool] | None = None,
) -> Callable[..., Awaitable[Principal]]:
    """The FastAPI dependency every authenticated route uses: the ``Principal`` of the key the
    request presents, or a 401. ``api_keys_only`` refuses ``ek_`` keys (administration and
    minting), with ``ephemeral_refusal`` as the message when one was presented; ``unless``
    waives the check (``ANONYMOUS``) when the settings say so."""

    async def principal(request: Request, state: State) -> Principal:
        if unless is not None and unless(state.settings):
            return ANONYMOUS
        credential = credential_from_headers(request.headers)
        key = credential.key if credential is not None else None
        found = await state.auth.authenticate(key, allow_ephemeral=not api_keys_only)
        if found is None:
            if api_keys_only and ephemeral_refusal and key and key.startswith(EPHEMERAL_PREFIX):
                raise Unauthorized(ephemeral_refusal)
            raise Unauthorized()
        return found

    return principal


any_key = require_principal()
"""An API key or a live ephemeral key."""
api_key = require_principal(api_keys_only=True)
"""An API key (never an ``ek_`` key)."""

AnyKey = Annotated[Principal, Depends(any_key)]
ApiKey = Annotated[Principal, Depends(api_key)]
