"""``GET /v1/usage``: token usage and cost from the ledger, aggregated per key, session or day.

API keys only (never an ``ek_`` key: those are handed to browsers). A key sees its own
usage; keys listed in ``OPENREALTIME_USAGE_ADMIN_KEYS`` see every key's and may filter with
``key_id``. ``group_by`` is ``key``, ``session`` or ``day``, or a comma list such as
``key,day``; ``start``/``end`` bound ``created_at`` (epoch seconds, end exclusive).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..storage.base import GROUP_COLUMNS, GroupColumn, UsageAggregate, UsageQuery
from ..telemetry.ledger import UsageLedger
from .auth import Principal, key_id
from .http import http_error
from .state import State, require_principal


def admin_key_ids(configured: list[str]) -> set[str]:
    """Admin entries may be keys or key ids (``key_…``); compare by id."""
    return {entry if entry.startswith("key_") else key_id(entry) for entry in configured}


def aggregate_wire(row: UsageAggregate) -> dict[str, Any]:
    """One aggregate in the shape of a Realtime ``usage`` object, plus grouping and cost."""
    return {
        "object": "realtime.usage.aggregate",
        "key_id": row.key_id,
        "session_id": row.session_id,
        "day": row.day,
        "start_time": row.first_at,
        "end_time": row.last_at,
        "responses": row.responses,
        "transcriptions": row.transcriptions,
        "total_tokens": row.total_tokens,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "input_token_details": {
            "text_tokens": row.input_text_tokens,
            "audio_tokens": row.input_audio_tokens,
            "image_tokens": row.input_image_tokens,
            "cached_tokens": row.cached_text_tokens + row.cached_audio_tokens + row.cached_image_tokens,
            "cached_tokens_details": {
                "text_tokens": row.cached_text_tokens,
                "audio_tokens": row.cached_audio_tokens,
                "image_tokens": row.cached_image_tokens,
            },
        },
        "output_token_details": {
            "text_tokens": row.output_text_tokens,
            "audio_tokens": row.output_audio_tokens,
        },
        "amount": {"value": round(row.cost_usd, 6), "currency": "usd"},
    }


class BadQuery(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def parse_group_by(raw: str | None) -> list[GroupColumn]:
    names = [part.strip() for part in (raw or "key").split(",") if part.strip()]
    allowed = ", ".join(f"'{name}'" for name in GROUP_COLUMNS)
    groups: list[GroupColumn] = []
    for name in names or ["key"]:
        if name == "key":
            groups.append("key")
        elif name == "session":
            groups.append("session")
        elif name == "day":
            groups.append("day")
        else:
            raise BadQuery("group_by", f"Invalid value: '{name}'. Supported values are: {allowed}.")
    return groups


def parse_time(raw: str | None, param: str) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadQuery(param, f"Invalid '{param}': expected epoch seconds, got '{raw}'.") from None
    if not math.isfinite(value) or value < 0:
        raise BadQuery(param, f"Invalid '{param}': expected epoch seconds, got '{raw}'.")
    return value


def budget_wire(ledger: UsageLedger, owner: str) -> dict[str, Any] | None:
    budget = ledger.budget
    if budget is None:
        return None
    limit = budget.policy.limit_for(owner)
    left = budget.remaining(owner)
    if limit is None or left is None:
        return None
    return {
        "key_id": owner,
        "period": budget.policy.period,
        "limit": {"value": limit, "currency": "usd"},
        "spent": {"value": round(limit - left, 6), "currency": "usd"},
        "remaining": {"value": round(max(0.0, left), 6), "currency": "usd"},
        "resets_at": int(budget.window[1]),
    }


reading_key = require_principal(
    api_keys_only=True, ephemeral_refusal="Ephemeral keys cannot read usage; use an API key."
)


def router() -> APIRouter:
    """The ``/v1/usage`` route."""
    api = APIRouter()

    @api.get("/v1/usage", response_model=None)
    async def usage(
        request: Request,
        server: State,
        principal: Annotated[Principal, Depends(reading_key)],
    ) -> dict[str, Any] | JSONResponse:
        ledger = server.usage_ledger
        params = request.query_params
        try:
            groups = parse_group_by(params.get("group_by"))
            start = parse_time(params.get("start"), "start")
            end = parse_time(params.get("end"), "end")
        except BadQuery as err:
            return http_error(400, "invalid_value", str(err), err.param)
        is_admin = principal.key_id in admin_key_ids(server.settings.usage_admin_keys)
        wanted = params.get("key_id")
        if wanted is not None and wanted != principal.key_id and not is_admin:
            return http_error(403, "permission_denied", "This key may read only its own usage.", "key_id")
        key_ids = [wanted] if wanted is not None else (None if is_admin else [principal.key_id])
        with contextlib.suppress(TimeoutError):  # what this server already recorded is in the answer
            await asyncio.wait_for(ledger.flush(), 5.0)
        rows = await ledger.storage.aggregate_usage(
            UsageQuery(group_by=groups, key_ids=key_ids, start=start, end=end)
        )
        body: dict[str, Any] = {
            "object": "list",
            "group_by": groups,
            "start": start,
            "end": end,
            "data": [aggregate_wire(row) for row in rows],
        }
        budget = budget_wire(ledger, principal.key_id)
        if budget is not None:
            body["budget"] = budget
        return body

    return api
