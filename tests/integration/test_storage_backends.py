"""The storage contract on both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openrealtime.server.auth import ClientSecret
from openrealtime.storage import Storage, UsageQuery, UsageRecord, make_storage
from tests.postgres_support import run_postgres

DAY = datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with run_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = make_storage(url)
    await store.open()
    if request.param == "postgresql":  # one cluster per module: start every test empty
        pool = store.pool  # type: ignore[attr-defined]
        await pool.execute("TRUNCATE usage_records, client_secrets")
    yield store
    await store.close()


def row(rid: str, key: str, session: str, at: float, cost: float, **tokens: int) -> UsageRecord:
    return UsageRecord(
        id=rid,
        kind="transcription" if rid.startswith("transcription:") else "response",
        key_id=key,
        session_id=session,
        transport="websocket",
        model="gpt-realtime",
        status="completed",
        created_at=at,
        day=datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d"),
        cost_usd=cost,
        **tokens,
    )


async def test_usage_rows_are_idempotent_and_aggregate_alike(storage: Storage) -> None:
    later = DAY + 86_400
    rows = [
        row(
            "r1", "key_a", "s1", DAY, 0.25, input_text_tokens=100, cached_text_tokens=64, output_text_tokens=9
        ),
        row("r2", "key_a", "s1", DAY + 5, 0.5, input_audio_tokens=31, output_audio_tokens=80),
        row("transcription:i1", "key_a", "s1", DAY + 6, 0.01, input_audio_tokens=31, output_text_tokens=6),
        row("r3", "key_b", "s2", later, 1.0, input_text_tokens=7, input_image_tokens=3),
    ]
    await storage.add_usage(rows)
    await storage.add_usage(rows[:2])  # a replay after a restart: nothing doubles
    stored = await storage.usage_records()
    assert [r.id for r in stored] == ["r1", "r2", "transcription:i1", "r3"]
    assert stored == rows
    by_key = await storage.aggregate_usage(UsageQuery(group_by=["key"]))
    assert [(a.key_id, a.responses, a.transcriptions, a.total_tokens) for a in by_key] == [
        ("key_a", 2, 1, 100 + 9 + 31 + 80 + 31 + 6),
        ("key_b", 1, 0, 10),
    ]
    assert by_key[0].cost_usd == pytest.approx(0.76) and by_key[0].cached_text_tokens == 64
    by_session_day = await storage.aggregate_usage(UsageQuery(group_by=["session", "day"], key_ids=["key_b"]))
    assert [(a.key_id, a.session_id, a.day) for a in by_session_day] == [("key_b", "s2", "2026-11-27")]
    window = await storage.aggregate_usage(UsageQuery(group_by=["day"], start=DAY + 1, end=DAY + 6))
    assert [(a.day, a.responses, a.first_at, a.last_at) for a in window] == [
        ("2026-11-26", 1, DAY + 5, DAY + 5)
    ]
    assert await storage.spend_by_key(DAY + 1) == {"key_a": pytest.approx(0.51), "key_b": pytest.approx(1.0)}


async def test_client_secrets_persist_and_expire(storage: Storage) -> None:
    secret = ClientSecret("hash1", "key_a", {"type": "realtime", "model": "gpt-realtime"}, 1000, 1600)
    await storage.put_client_secret(secret)
    await storage.put_client_secret(ClientSecret("hash2", "key_b", {"type": "transcription"}, 1000, 1100))
    assert await storage.get_client_secret("hash1") == secret
    assert await storage.get_client_secret("missing") is None
    assert await storage.prune_client_secrets(1200) == 1
    assert await storage.get_client_secret("hash2") is None
    assert await storage.get_client_secret("hash1") == secret


async def test_postgres_nodes_opening_together_migrate_once(postgres_url: str) -> None:
    nodes = [make_storage(postgres_url) for _ in range(3)]
    await asyncio.gather(*(node.open() for node in nodes))  # the advisory lock serialises them
    try:
        pool = nodes[0].pool  # type: ignore[attr-defined]
        assert await pool.fetch("SELECT version FROM schema_version") == [(1,)]
        await pool.execute("TRUNCATE usage_records")
        await nodes[1].add_usage([row("shared", "key_a", "s", DAY, 0.1)])
        assert [r.id for r in await nodes[2].usage_records(key_id="key_a")] == ["shared"]
    finally:
        await asyncio.gather(*(node.close() for node in nodes))
