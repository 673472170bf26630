"""``GET /metrics``: the Prometheus text format of the server's metrics.

It needs an API key (never an ``ek_`` key: those are handed to browsers) unless
``metrics_auth`` is false, for a scraper on a private network.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from ..telemetry.metrics import CONTENT_TYPE
from .state import State, require_principal

scraping_key = require_principal(api_keys_only=True, unless=lambda settings: not settings.metrics_auth)


def router() -> APIRouter:
    api = APIRouter()

    @api.get("/metrics", response_model=None, dependencies=[Depends(scraping_key)])
    async def metrics(server: State) -> Response:
        return Response(server.telemetry.metrics.exposition(), media_type=CONTENT_TYPE)

    return api
