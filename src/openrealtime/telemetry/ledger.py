"""The usage ledger: every response's and transcription's usage, written durably with its cost.

An observer of every session (see ``runtime/observer.py``): on ``response.done`` and on
``…input_audio_transcription.completed`` it turns the event's ``usage`` into a
``UsageRecord``, prices it, charges the key's budget and queues it. A background task writes
whatever is queued in one transaction as soon as it is there, so a ``kill -9`` loses only the
records of the last few milliseconds, never half a record; the record id (the response id) is
the primary key, so nothing is ever counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypedDict

from ..auth_records import key_id as key_id_of
from ..config import Settings
from ..protocol import server_events as se
from ..runtime.observer import SessionInfo
from ..storage import database_url, open_storage
from ..storage.base import Storage, UsageRecord
from .budget import BudgetPolicy, BudgetTracker
from .prices import PriceTable, load_prices

log = logging.getLogger("openrealtime.ledger")

MAX_BATCH = 1000
RETRY_SECONDS_MAX = 5.0


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def response_record(
    info: SessionInfo, response_id: str, status: str, usage: dict[str, Any] | None, at: float
) -> UsageRecord:
    """A ledger row from a ``response.done`` usage object (spec §9.3)."""
    usage = usage or {}
    details = usage.get("input_token_details") or {}
    cached = details.get("cached_tokens_details") or {}
    out = usage.get("output_token_details") or {}
    return UsageRecord(
        id=response_id,
        kind="response",
        key_id=info.key_id,
        session_id=info.session_id,
        transport=info.transport,
        model=info.model,
        status=status,
        created_at=at,
        day=day_of(at),
        input_text_tokens=_int(details.get("text_tokens")),
        input_audio_tokens=_int(details.get("audio_tokens")),
        input_image_tokens=_int(details.get("image_tokens")),
        cached_text_tokens=_int(cached.get("text_tokens")),
        cached_audio_tokens=_int(cached.get("audio_tokens")),
        cached_image_tokens=_int(cached.get("image_tokens")),
        output_text_tokens=_int(out.get("text_tokens")),
        output_audio_tokens=_int(out.get("audio_tokens")),
    )


def transcription_record(
    info: SessionInfo, item_id: str, usage: dict[str, Any] | None, at: float
) -> UsageRecord:
    """A ledger row from a transcription ``usage`` (``tokens`` or ``duration`` shape)."""
    usage = usage or {}
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        audio = round(float(seconds) * 10) if isinstance(seconds, int | float) else 0
        text_in, audio_in, text_out = 0, audio, 0
    else:
        details = usage.get("input_token_details") or {}
        text_in = _int(details.get("text_tokens"))
        audio_in = _int(details.get("audio_tokens"))
        text_out = _int(usage.get("output_tokens"))
    return UsageRecord(
        id=f"transcription:{item_id}",
        kind="transcription",
        key_id=info.key_id,
        session_id=info.session_id,
        transport=info.transport,
        model=info.model,
        status="completed",
        created_at=at,
        day=day_of(at),
        input_text_tokens=text_in,
        input_audio_tokens=audio_in,
        output_text_tokens=text_out,
    )


class UsageLedger:
    """Records usage durably off the event loop's hot path; keeps budgets current."""

    def __init__(
        self,
        storage: Storage,
        prices: PriceTable,
        budget: BudgetTracker | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 30.0,
    ) -> None:
        self.storage = storage
        self.prices = prices
        self.budget = budget
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self._queue: asyncio.Queue[UsageRecord | None] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._writer: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.budget is not None:
            await self._reload_budget()
            self._refresher = asyncio.create_task(self._refresh_loop(), name="budget-refresh")
        self._writer = asyncio.create_task(self._write_loop(), name="usage-ledger-writer")

    async def close(self) -> None:
        """Write everything queued, then stop."""
        self._closing = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None

    async def flush(self) -> None:
        """Wait until every record queued so far is committed."""
        await self._queue.join()

    async def _reload_budget(self) -> None:
        assert self.budget is not None
        try:
            self.budget.load(await self.storage.spend_by_key(self.budget.window[0]))
        except Exception:
            log.exception("could not read spend from storage; budgets count from memory")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self._reload_budget()

    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            batch: list[UsageRecord] = []
            taken = 1
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                record = self._queue.get_nowait()
                taken += 1
                if record is None:
                    stop = True
                else:
                    batch.append(record)
            try:
                await self._write(batch)
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    async def _write(self, batch: list[UsageRecord]) -> None:
        attempt = 0
        while batch:
            try:
                await self.storage.add_usage(batch)
                self.written += len(batch)
                return
            except Exception:
                attempt += 1
                if self._closing and attempt >= 3:
                    log.exception("usage ledger: %d record(s) could not be written and are lost", len(batch))
                    return
                log.exception("usage ledger write failed (attempt %d); retrying", attempt)
                await asyncio.sleep(min(RETRY_SECONDS_MAX, 0.1 * 2**attempt))

    # ------------------------------------------------------------------ recording

    def record(self, record: UsageRecord) -> None:
        """Price, charge and queue a record (callable from any thread)."""
        priced = replace(record, cost_usd=self.prices.cost(record))
        if self._loop is None or self._closing:
            log.warning("usage ledger not running; record %s dropped", record.id)
            return
        if threading.get_ident() == self._loop_thread:
            self._accept(priced)
        else:
            self._loop.call_soon_threadsafe(self._accept, priced)

    def _accept(self, record: UsageRecord) -> None:
        if self.budget is not None:
            self.budget.charge(record.key_id, record.id, record.cost_usd, record.created_at)
        self._queue.put_nowait(record)

    # ------------------------------------------------------------------ SessionObserver

    def session_started(self, info: SessionInfo) -> None:
        pass

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        pass

    def server_event(self, info: SessionInfo, event: se.ServerEvent) -> None:
        if isinstance(event, se.ResponseDone):
            response = event.response
            self.record(
                response_record(
                    info,
                    str(response.get("id")),
                    str(response.get("status")),
                    response.get("usage"),
                    self.clock(),
                )
            )
        elif isinstance(event, se.TranscriptionCompleted):
            self.record(transcription_record(info, event.item_id, event.usage, self.clock()))

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        pass

    def session_ended(self, info: SessionInfo) -> None:
        pass

    # ------------------------------------------------------------------ session core hooks

    def budget_check(self, key_id: str) -> Callable[[], str | None] | None:
        """For ``SessionCore(budget_check=...)``: why the key may not start a response."""
        budget = self.budget
        if budget is None or budget.policy.limit_for(key_id) is None:
            return None
        return lambda: budget.refusal(key_id)

    def budget_rate_limit(self, key_id: str) -> Callable[[str, dict[str, Any]], dict[str, Any] | None] | None:
        """For ``SessionCore(budget_rate_limit=...)``: the budget entry of ``rate_limits.updated``
        right after a response, this response's cost included."""
        budget = self.budget
        if budget is None or budget.policy.limit_for(key_id) is None:
            return None
        owner = SessionInfo(session_id="", key_id=key_id, transport="", model="")

        def entry(response_id: str, usage: dict[str, Any]) -> dict[str, Any] | None:
            row = response_record(owner, response_id, "completed", usage, self.clock())
            budget.charge(key_id, response_id, self.prices.cost(row), row.created_at)
            return budget.rate_limit(key_id)

        return entry


def budget_policy(settings: Settings) -> BudgetPolicy:
    """The budget settings; per-key entries may name a key id or the key itself."""
    per_key = {
        (name if name.startswith("key_") else key_id_of(name)): float(limit)
        for name, limit in settings.key_budgets_usd.items()
    }
    return BudgetPolicy(
        default_usd=settings.budget_usd,
        per_key_usd=per_key,
        period=settings.budget_period,
        warn_fraction=settings.budget_warn_fraction,
    )


async def open_ledger(settings: Settings) -> UsageLedger:
    """Open the configured storage and start a ledger on it (with budgets if configured)."""
    prices = load_prices(settings.prices)
    storage = await open_storage(database_url(settings.database_url, settings.data_dir))
    await storage.prune_client_secrets(time.time())
    policy = budget_policy(settings)
    ledger = UsageLedger(storage, prices, BudgetTracker(policy) if policy.enabled else None)
    await ledger.start()
    return ledger


class BudgetHooks(TypedDict, total=False):
    budget_check: Callable[[], str | None] | None
    budget_rate_limit: Callable[[str, dict[str, Any]], dict[str, Any] | None] | None


def budget_hooks(ledger: UsageLedger | None, key_id: str) -> BudgetHooks:
    """``SessionCore`` keyword arguments for ``key_id``'s budget (none without a ledger)."""
    if ledger is None:
        return {}
    return {
        "budget_check": ledger.budget_check(key_id),
        "budget_rate_limit": ledger.budget_rate_limit(key_id),
    }
