"""``GET /metrics`` and the wiring of metrics, traces and log context into a running server.

``/metrics`` serves the Prometheus text format. It needs an API key (never an ``ek_`` key:
those are handed to browsers) unless ``metrics_auth`` is false, for a scraper on a private
network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from ..telemetry.logs import LogContextObserver
from ..telemetry.metrics import CONTENT_TYPE, MetricsObserver, list_price_cost
from ..telemetry.prices import load_prices
from ..telemetry.tracing import TurnTracer
from .auth import credential_from_headers
from .http import http_error

if TYPE_CHECKING:
    from .app import ServerState


class Telemetry:
    """The server's observers: Prometheus metrics, per-turn traces (when configured), log ids."""

    def __init__(self) -> None:
        self.metrics = MetricsObserver()
        self.tracer: TurnTracer | None = None

    def attach(self, state: ServerState) -> None:
        """Start observing the server's sessions and engine queues."""
        self.tracer = TurnTracer.from_settings(state.settings.otlp_endpoint)
        self.metrics.cost = list_price_cost(load_prices(state.settings.prices))
        observers = state.observers.observers
        observers.extend([self.metrics, LogContextObserver()])
        if self.tracer is not None:
            observers.append(self.tracer)
        scheduler = state.scheduler
        for queue in (scheduler.llm, scheduler.asr, scheduler.tts, scheduler.vad):
            queue.on_wait = self.metrics.observe_queue_wait

    def shutdown(self) -> None:
        """Export the traces still buffered."""
        if self.tracer is not None:
            self.tracer.shutdown()
            self.tracer = None

    def router(self, state: Callable[[], ServerState]) -> APIRouter:
        api = APIRouter()

        @api.get("/metrics", response_model=None)
        async def metrics(request: Request) -> Response:
            server = state()
            if server.settings.metrics_auth:
                credential = credential_from_headers(request.headers)
                key = credential.key if credential is not None else None
                if await server.auth.authenticate(key, allow_ephemeral=False) is None:
                    return http_error(401, "invalid_api_key", "Incorrect API key provided.")
            return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

        return api
