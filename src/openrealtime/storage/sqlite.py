"""SQLite storage (the default): one file in the data dir, WAL mode, one worker thread.

Every call runs on a single dedicated thread that owns the connection, so the event loop
never blocks on disk and SQLite sees one writer. WAL lets ``openrealtime usage`` read while
the server writes; ``synchronous=NORMAL`` keeps every committed transaction across a process
crash (only a power loss can drop the last few).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple
from pathlib import Path
from typing import Any, TypeVar

from ..auth_records import ClientSecret
from .base import USAGE_COLUMNS, UsageAggregate, UsageQuery, UsageRecord
from .recordings import SqliteRecordingIndex
from .schema import MIGRATIONS, VERSION_TABLE, Placeholders, aggregate_sql, insert_usage_sql

T = TypeVar("T")


class SqliteStorage(SqliteRecordingIndex):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise RuntimeError("storage is not open")
            return work(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            _migrate(db)
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ client secrets

    async def put_client_secret(self, secret: ClientSecret) -> None:
        row = (
            secret.key_hash,
            secret.parent_key_id,
            json.dumps(secret.session),
            secret.created_at,
            secret.expires_at,
        )

        def put(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("DELETE FROM client_secrets WHERE expires_at <= ?", (secret.created_at,))
                db.execute(
                    "INSERT OR REPLACE INTO client_secrets "
                    "(key_hash, parent_key_id, session, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    row,
                )

        await self._run(put)

    async def get_client_secret(self, key_hash: str) -> ClientSecret | None:
        def get(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            cursor = db.execute(
                "SELECT key_hash, parent_key_id, session, created_at, expires_at "
                "FROM client_secrets WHERE key_hash = ?",
                (key_hash,),
            )
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row

        row = await self._run(get)
        if row is None:
            return None
        return ClientSecret(row[0], row[1], json.loads(row[2]), int(row[3]), int(row[4]))

    async def prune_client_secrets(self, now: float) -> int:
        def prune(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM client_secrets WHERE expires_at <= ?", (now,)).rowcount

        return await self._run(prune)

    # ------------------------------------------------------------------ usage

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        sql = insert_usage_sql(["?"] * len(USAGE_COLUMNS), sqlite=True)
        rows = [astuple(record) for record in records]

        def add(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(sql, rows)

        await self._run(add)

    async def usage_records(
        self, *, key_id: str | None = None, session_id: str | None = None, limit: int = 10_000
    ) -> list[UsageRecord]:
        where, args = _record_filter(key_id, session_id)
        sql = f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage_records{where} ORDER BY created_at, id LIMIT ?"

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(sql, (*args, limit)).fetchall()

        return [UsageRecord(*row) for row in await self._run(read)]

    async def aggregate_usage(self, query: UsageQuery) -> list[UsageAggregate]:
        sql, args = aggregate_sql(query, Placeholders(numbered=False))

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(sql, args).fetchall()

        return [UsageAggregate(*row) for row in await self._run(read) if row[-1] is not None]

    async def spend_by_key(self, since: float) -> dict[str, float]:
        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                "SELECT key_id, SUM(cost_usd) FROM usage_records WHERE created_at >= ? GROUP BY key_id",
                (since,),
            ).fetchall()

        return {str(key): float(cost) for key, cost in await self._run(read)}


def _record_filter(key_id: str | None, session_id: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if key_id is not None:
        clauses.append("key_id = ?")
        args.append(key_id)
    if session_id is not None:
        clauses.append("session_id = ?")
        args.append(session_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _migrate(db: sqlite3.Connection) -> None:
    with _transaction(db):
        db.execute(VERSION_TABLE)
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
