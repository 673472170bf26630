"""The usage ledger's parts on a real SQLite file: storage, prices, budgets, the ledger
observer and the session core's budget hooks (no server, no models)."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from openrealtime.core.events import GenerationFinished, TextGenerated
from openrealtime.core.session import SessionCore
from openrealtime.protocol import server_events as se
from openrealtime.protocol.session import RealtimeSession
from openrealtime.runtime.observer import SessionInfo
from openrealtime.server.auth import ClientSecret
from openrealtime.storage import UsageQuery, UsageRecord, database_url, make_storage
from openrealtime.storage.schema import SCHEMA_VERSION
from openrealtime.storage.sqlite import SqliteStorage
from openrealtime.telemetry.budget import BudgetPolicy, BudgetTracker, window_of
from openrealtime.telemetry.ledger import UsageLedger, response_record, transcription_record
from openrealtime.telemetry.prices import PriceTable, load_prices
from tests.json_edge import JsonCore

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
INFO = SessionInfo(session_id="sess_1", key_id="key_a", transport="websocket", model="gpt-realtime")
DAY = datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp()


def usage_wire(
    text_in: int, cached: int, audio_in: int, text_out: int, audio_out: int, image_in: int = 0
) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + image_in + text_out + audio_out,
        "input_tokens": text_in + audio_in + image_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": image_in,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def record(
    rid: str, *, key: str = "key_a", session: str = "sess_1", at: float = DAY, **tokens: int
) -> UsageRecord:
    return UsageRecord(
        id=rid,
        kind="response",
        key_id=key,
        session_id=session,
        transport="websocket",
        model="gpt-realtime",
        status="completed",
        created_at=at,
        day=datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d"),
        cost_usd=0.5,
        **tokens,
    )


@pytest.fixture
async def storage(tmp_path: Path) -> Any:
    store = SqliteStorage(tmp_path / "ledger.db")
    await store.open()
    yield store
    await store.close()


# ------------------------------------------------------------------ storage


async def test_schema_is_versioned_and_wal_and_reopening_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "data" / "openrealtime.db"
    first = SqliteStorage(path)
    await first.open()
    await first.add_usage([record("resp_1", input_text_tokens=10)])
    await first.close()
    second = SqliteStorage(path)
    await second.open()  # migrating an up-to-date schema is a no-op
    assert [r.id for r in await second.usage_records()] == ["resp_1"]
    await second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]  # each applied once


async def test_records_are_idempotent_by_id(storage: SqliteStorage) -> None:
    await storage.add_usage([record("resp_1", input_text_tokens=10), record("resp_2", output_text_tokens=3)])
    await storage.add_usage([record("resp_1", input_text_tokens=999), record("resp_3")])
    rows = {r.id: r for r in await storage.usage_records()}
    assert sorted(rows) == ["resp_1", "resp_2", "resp_3"]
    assert rows["resp_1"].input_text_tokens == 10  # the first write wins, nothing is doubled


async def test_aggregates_by_key_session_and_day_within_a_time_range(storage: SqliteStorage) -> None:
    later = DAY + 86_400
    await storage.add_usage(
        [
            record(
                "r1",
                key="key_a",
                session="s1",
                input_text_tokens=100,
                cached_text_tokens=40,
                output_text_tokens=5,
            ),
            record("r2", key="key_a", session="s2", input_audio_tokens=30, output_audio_tokens=60),
            record("r3", key="key_b", session="s3", at=later, input_text_tokens=7),
        ]
    )
    by_key = await storage.aggregate_usage(UsageQuery(group_by=["key"]))
    assert [(r.key_id, r.responses, r.input_tokens, r.output_tokens) for r in by_key] == [
        ("key_a", 2, 130, 65),
        ("key_b", 1, 7, 0),
    ]
    assert by_key[0].cached_text_tokens == 40 and by_key[0].cost_usd == pytest.approx(1.0)
    by_session = await storage.aggregate_usage(UsageQuery(group_by=["session"], key_ids=["key_a"]))
    assert [(r.key_id, r.session_id, r.total_tokens) for r in by_session] == [
        ("key_a", "s1", 105),
        ("key_a", "s2", 90),
    ]
    by_day = await storage.aggregate_usage(UsageQuery(group_by=["day"]))
    assert [(r.day, r.key_id, r.responses) for r in by_day] == [
        ("2026-11-26", None, 2),
        ("2026-11-27", None, 1),
    ]
    in_range = await storage.aggregate_usage(UsageQuery(group_by=["key"], start=later, end=later + 1))
    assert [r.key_id for r in in_range] == ["key_b"]
    assert await storage.aggregate_usage(UsageQuery(group_by=["key"], key_ids=[])) == []
    assert await storage.spend_by_key(later) == {"key_b": pytest.approx(0.5)}


async def test_client_secrets_round_trip_and_expired_ones_are_pruned(storage: SqliteStorage) -> None:
    live = ClientSecret("h1", "key_a", {"type": "realtime", "instructions": "hi"}, 100, 700)
    stale = ClientSecret("h2", "key_a", {"type": "realtime"}, 0, 50)
    await storage.put_client_secret(stale)
    await storage.put_client_secret(live)  # minting prunes what expired before it
    assert await storage.get_client_secret("h2") is None
    assert await storage.get_client_secret("h1") == live
    assert await storage.prune_client_secrets(800) == 1
    assert await storage.get_client_secret("h1") is None


def test_database_url_defaults_to_the_data_dir_and_rejects_unknown_schemes(tmp_path: Path) -> None:
    url = database_url(None, tmp_path)
    assert url == f"sqlite:////{str(tmp_path.resolve()).lstrip('/')}/openrealtime.db"
    store = make_storage(url)
    assert isinstance(store, SqliteStorage) and store.path == tmp_path.resolve() / "openrealtime.db"
    assert make_storage("postgresql://u@127.0.0.1:1/db").url.startswith("postgresql://")
    with pytest.raises(ValueError, match="mysql"):
        make_storage("mysql://x")


# ------------------------------------------------------------------ prices


def test_cost_uses_list_prices_per_token_type() -> None:
    prices = PriceTable()
    row = record(
        "r",
        input_text_tokens=1_000_000,
        cached_text_tokens=250_000,
        input_audio_tokens=100_000,
        output_text_tokens=10_000,
        output_audio_tokens=50_000,
        input_image_tokens=2_000,
    )
    expected = (750_000 * 4 + 250_000 * 0.4 + 100_000 * 32 + 10_000 * 16 + 50_000 * 64 + 2_000 * 5) / 1e6
    assert prices.cost(row) == pytest.approx(expected)
    transcription = UsageRecord(**{**row.__dict__, "kind": "transcription"})
    assert prices.cost(transcription) == pytest.approx((1_000_000 * 2.5 + 100_000 * 6 + 10_000 * 10) / 1e6)


def test_prices_are_configurable_from_json_text_or_files(tmp_path: Path) -> None:
    assert load_prices(None) == PriceTable()
    assert load_prices('{"audio_output": 20}').audio_output == 20.0
    (tmp_path / "p.toml").write_text("text_input = 1.5\n")
    assert load_prices(str(tmp_path / "p.toml")).text_input == 1.5
    (tmp_path / "p.json").write_text(json.dumps({"cached_text_input": 0.1}))
    assert load_prices(str(tmp_path / "p.json")).cached_text_input == 0.1
    with pytest.raises(ValueError, match="unknown price 'audio_in'"):
        load_prices({"audio_in": 1})
    with pytest.raises(ValueError, match="non-negative"):
        load_prices({"audio_input": -1})


# ------------------------------------------------------------------ budgets


def test_budget_windows_are_utc_days_and_months() -> None:
    assert window_of("day", DAY) == (DAY - 12 * 3600, DAY + 12 * 3600)
    start, end = window_of("month", DAY)
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(end, UTC) == datetime(2026, 12, 1, tzinfo=UTC)


def test_budget_charges_once_per_record_refuses_past_the_limit_and_resets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [DAY]
    tracker = BudgetTracker(
        BudgetPolicy(default_usd=1.0, per_key_usd={"key_vip": 10.0}), clock=lambda: now[0]
    )
    tracker.charge("key_a", "r1", 0.5)
    tracker.charge("key_a", "r1", 0.5)  # the same record again: not counted twice
    assert tracker.remaining("key_a") == pytest.approx(0.5)
    assert tracker.refusal("key_a") is None
    with caplog.at_level("WARNING", logger="openrealtime.budget"):
        tracker.charge("key_a", "r2", 0.35)
        assert "budget warning: key key_a" in caplog.text
        tracker.charge("key_a", "r3", 0.2)
        assert "budget exhausted: key key_a" in caplog.text
    refusal = tracker.refusal("key_a")
    assert (
        refusal is not None and "exceeded your current quota" in refusal and "2026-11-27 00:00 UTC" in refusal
    )
    entry = tracker.rate_limit("key_a")
    assert entry == {"name": "requests", "limit": 1_000_000, "remaining": 0, "reset_seconds": 43200.0}
    tracker.charge("key_vip", "r4", 5.0)
    assert tracker.refusal("key_vip") is None
    now[0] = DAY + 86_400  # a new day: spend starts again
    assert tracker.refusal("key_a") is None and tracker.remaining("key_a") == pytest.approx(1.0)
    tracker.load({"key_a": 0.25})
    assert tracker.remaining("key_a") == pytest.approx(0.75)
    assert BudgetTracker(BudgetPolicy()).rate_limit("key_a") is None


# ------------------------------------------------------------------ the ledger observer


async def test_ledger_records_each_response_once_with_its_cost(storage: SqliteStorage) -> None:
    ledger = UsageLedger(storage, PriceTable())
    await ledger.start()
    done = se.ResponseDone(
        response={"id": "resp_9", "status": "cancelled", "usage": usage_wire(120, 64, 20, 7, 60)}
    )
    ledger.server_event(INFO, done)
    ledger.server_event(INFO, done)  # replayed: still one row
    ledger.server_event(
        INFO,
        se.TranscriptionCompleted(
            item_id="item_1",
            transcript="hi",
            usage={
                "type": "tokens",
                "input_tokens": 16,
                "output_tokens": 8,
                "total_tokens": 24,
                "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
            },
        ),
    )
    ledger.server_event(INFO, se.RateLimitsUpdated(rate_limits=[]))  # not a usage event
    await ledger.close()
    rows = {r.id: r for r in await storage.usage_records()}
    assert sorted(rows) == ["resp_9", "transcription:item_1"]
    response = rows["resp_9"]
    assert (response.status, response.key_id, response.session_id) == ("cancelled", "key_a", "sess_1")
    assert (response.input_text_tokens, response.cached_text_tokens, response.input_audio_tokens) == (
        120,
        64,
        20,
    )
    assert (response.output_text_tokens, response.output_audio_tokens) == (7, 60)
    assert response.cost_usd == pytest.approx((56 * 4 + 64 * 0.4 + 20 * 32 + 7 * 16 + 60 * 64) / 1e6)
    transcription = rows["transcription:item_1"]
    assert (transcription.kind, transcription.input_audio_tokens, transcription.output_text_tokens) == (
        "transcription",
        16,
        8,
    )
    assert transcription.cost_usd == pytest.approx((16 * 6 + 8 * 10) / 1e6)


def test_records_tolerate_missing_or_odd_usage() -> None:
    assert response_record(INFO, "r", "failed", None, DAY).total_tokens == 0
    duration = transcription_record(INFO, "i", {"type": "duration", "seconds": 2.5}, DAY)
    assert duration.input_audio_tokens == 25


# ------------------------------------------------------------------ the session core's hooks


def core_with_budget(tracker: BudgetTracker, ledger: UsageLedger) -> JsonCore:
    core = JsonCore(
        SessionCore(
            RealtimeSession(output_modalities=["text"]),
            count_tokens=lambda s: len(s.split()),
            created_at=0,
            budget_check=ledger.budget_check("key_a"),
            budget_rate_limit=ledger.budget_rate_limit("key_a"),
        )
    )
    core.start()
    core.take_events()
    return core


def wire_events(core: JsonCore) -> list[dict[str, Any]]:
    out = []
    for event in core.take_events():
        raw = event.to_json()
        SERVER_EVENT.validate_json(raw)  # the budget entry must keep the SDK's shape
        out.append(json.loads(raw))
    return out


async def test_core_refuses_new_responses_past_the_budget_and_reports_it(storage: SqliteStorage) -> None:
    tracker = BudgetTracker(BudgetPolicy(default_usd=0.002))
    ledger = UsageLedger(storage, PriceTable(), tracker)
    core = core_with_budget(tracker, ledger)
    core.handle(json.dumps({"type": "response.create"}))
    created = wire_events(core)
    response_id = created[0]["response"]["id"]
    core.receive(TextGenerated(response_id, "hello there"))
    core.receive(
        GenerationFinished(response_id, "stop", prompt_tokens=200, cached_tokens=0, completion_tokens=20)
    )
    events = wire_events(core)
    limits = events[-1]
    assert limits["type"] == "rate_limits.updated"
    budget = limits["rate_limits"][1]
    spent = (200 * 4 + 20 * 16) / 1e6
    assert budget["name"] == "requests" and budget["limit"] == 2000
    assert budget["remaining"] == math.floor((0.002 - spent) * 1e6)
    core.handle(json.dumps({"type": "response.create"}))
    second = wire_events(core)[0]["response"]["id"]
    core.receive(GenerationFinished(second, "stop", prompt_tokens=300, cached_tokens=0, completion_tokens=5))
    assert wire_events(core)[-1]["rate_limits"][1]["remaining"] == 0
    core.handle(json.dumps({"type": "response.create", "event_id": "evt_3"}))
    refused = wire_events(core)
    assert [e["type"] for e in refused] == ["error"]
    error = refused[0]["error"]
    assert (error["type"], error["code"], error["event_id"]) == (
        "insufficient_quota",
        "insufficient_quota",
        "evt_3",
    )
    assert not core.closed  # the session goes on
    core.handle(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "still here"}],
                },
            }
        )
    )
    assert [e["type"] for e in wire_events(core)] == ["conversation.item.added", "conversation.item.done"]


class FailingFirstWrites:
    """A real SQLite storage whose first ``failures`` writes raise (a database restarting)."""

    def __init__(self, inner: SqliteStorage, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def add_usage(self, records: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        await self.inner.add_usage(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_failed_write_is_retried_not_lost(
    storage: SqliteStorage, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FailingFirstWrites(storage, failures=2)
    ledger = UsageLedger(flaky, PriceTable())  # type: ignore[arg-type]
    await ledger.start()
    ledger.server_event(
        INFO,
        se.ResponseDone(response={"id": "resp_r", "status": "completed", "usage": usage_wire(5, 0, 0, 1, 0)}),
    )
    await ledger.flush()
    assert [r.id for r in await storage.usage_records()] == ["resp_r"]
    assert "usage ledger write failed (attempt 2)" in caplog.text
    await ledger.close()
    ledger.server_event(
        INFO, se.ResponseDone(response={"id": "resp_late", "status": "completed", "usage": None})
    )
    assert [r.id for r in await storage.usage_records()] == [
        "resp_r"
    ]  # after close: refused, not half-written
