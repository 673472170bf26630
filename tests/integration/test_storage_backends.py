"""The storage contract on both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openrealtime.server.auth import ClientSecret
from openrealtime.storage import (
    RecordingMeta,
    RecordingQuery,
    Storage,
    UsageQuery,
    UsageRecord,
    make_storage,
)
from openrealtime.storage.schema import SCHEMA_VERSION
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
        await pool.execute("TRUNCATE usage_records, client_secrets, recordings")
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
        versions = await pool.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [tuple(v) for v in versions] == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        await pool.execute("TRUNCATE usage_records")
        await nodes[1].add_usage([row("shared", "key_a", "s", DAY, 0.1)])
        assert [r.id for r in await nodes[2].usage_records(key_id="key_a")] == ["shared"]
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


def recording(rid: str, key: str, session: str, at: float, **more: object) -> RecordingMeta:
    return RecordingMeta(
        id=rid,
        session_id=session,
        key_id=key,
        mode="full",
        transport="websocket",
        model="gpt-realtime",
        encryption_key="rk_1",
        path=f"2026/11/26/{rid}",
        started_at=at,
        **more,  # type: ignore[arg-type]
    )


async def test_recordings_index_lists_pages_and_deletes_alike(storage: Storage) -> None:
    rows = [
        recording("rec_1", "key_a", "s1", DAY),
        recording("rec_2", "key_a", "s2", DAY + 10),
        recording("rec_3", "key_b", "s3", DAY + 10),
        recording("rec_4", "key_b", "s4", DAY + 20),
    ]
    for row_ in rows:
        await storage.put_recording(row_)
    finished = recording(
        "rec_1", "key_a", "s1", DAY, ended_at=DAY + 5, status="complete", events_bytes=10, caller_bytes=2000,
        assistant_bytes=1000, caller_audio_ms=4000, assistant_audio_ms=2000,
    )  # fmt: skip
    await storage.put_recording(finished)  # the entry is updated when the session ends
    assert await storage.get_recording("rec_1") == finished
    assert finished.size_bytes == 3010
    assert await storage.get_recording("missing") is None

    newest = await storage.list_recordings(RecordingQuery())
    assert [r.id for r in newest] == ["rec_4", "rec_3", "rec_2", "rec_1"]
    assert [r.id for r in await storage.list_recordings(RecordingQuery(key_ids=["key_a"]))] == [
        "rec_2",
        "rec_1",
    ]
    assert await storage.list_recordings(RecordingQuery(key_ids=[])) == []
    assert [r.id for r in await storage.list_recordings(RecordingQuery(session_id="s3"))] == ["rec_3"]
    window = RecordingQuery(start=DAY + 1, end=DAY + 20, oldest_first=True)
    assert [r.id for r in await storage.list_recordings(window)] == ["rec_2", "rec_3"]
    # keyset pages, with two rows at the same instant
    pages: list[str] = []
    after = None
    while True:
        page = await storage.list_recordings(RecordingQuery(after=after, limit=1))
        if not page:
            break
        pages.extend(r.id for r in page)
        after = (page[-1].started_at, page[-1].id)
    assert pages == ["rec_4", "rec_3", "rec_2", "rec_1"]
    first = await storage.list_recordings(RecordingQuery(oldest_first=True, limit=2))
    rest = await storage.list_recordings(
        RecordingQuery(oldest_first=True, after=(first[-1].started_at, first[-1].id))
    )
    assert [r.id for r in first + rest] == ["rec_1", "rec_2", "rec_3", "rec_4"]

    assert await storage.delete_recording("rec_2")
    assert not await storage.delete_recording("rec_2")
    assert [r.id for r in await storage.list_recordings(RecordingQuery())] == ["rec_4", "rec_3", "rec_1"]


async def test_recording_service_on_each_backend(storage: Storage, tmp_path: Path) -> None:
    """Recordings work the same on SQLite and PostgreSQL: indexed, exported, swept."""
    from openrealtime.recording import (
        RecordingPolicy,
        RecordingService,
        generate_key,
        load_keyring,
        read_bundle,
    )
    from tests.unit.test_recording_service import T0, TRANSCRIPT, play_session

    now = [T0]
    service = RecordingService(
        storage, load_keyring(generate_key()), tmp_path / "rec", RecordingPolicy("full"), clock=lambda: now[0]
    )
    await service.start()
    recorder = service.start_session(session_id="sess_pg", key_id="key_a", transport="sip", model="m")
    assert recorder is not None
    play_session(recorder)
    recorder.close()
    await service.flush()
    [meta] = await service.list(RecordingQuery(session_id="sess_pg"))
    assert meta.status == "complete" and meta.caller_audio_ms == 2000
    out = io.BytesIO()
    await service.export(meta.id, out)
    with read_bundle(out.getvalue()) as bundle:
        assert bundle.turns[0].transcript == TRANSCRIPT
    now[0] = T0 + 31 * 86_400
    assert await service.sweep() == 1
    assert await service.list(RecordingQuery()) == []
    await service.close()
