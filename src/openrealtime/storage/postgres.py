"""PostgreSQL storage through asyncpg, for several server nodes sharing one ledger.

asyncpg is asyncio-native (no thread hop, no libpq to install: wheels carry everything) and
is the driver the project's design names. Schema migrations run under an advisory lock so
that nodes starting together do not race.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ..auth_records import ClientSecret
from .base import USAGE_COLUMNS, UsageAggregate, UsageQuery, UsageRecord
from .recordings import PostgresRecordingIndex
from .schema import MIGRATIONS, VERSION_TABLE, Placeholders, aggregate_sql, insert_usage_sql

MIGRATION_LOCK = 0x6F72_7473  # any constant shared by every node


class PostgresStorage(PostgresRecordingIndex):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self._sizes = (min_size, max_size)
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=self._sizes[0], max_size=self._sizes[1])
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(VERSION_TABLE)
            current = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ------------------------------------------------------------------ client secrets

    async def put_client_secret(self, secret: ClientSecret) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM client_secrets WHERE expires_at <= $1", secret.created_at)
            await conn.execute(
                "INSERT INTO client_secrets (key_hash, parent_key_id, session, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO UPDATE SET "
                "parent_key_id = EXCLUDED.parent_key_id, session = EXCLUDED.session, "
                "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
                secret.key_hash,
                secret.parent_key_id,
                json.dumps(secret.session),
                secret.created_at,
                secret.expires_at,
            )

    async def get_client_secret(self, key_hash: str) -> ClientSecret | None:
        row = await self.pool.fetchrow(
            "SELECT key_hash, parent_key_id, session, created_at, expires_at "
            "FROM client_secrets WHERE key_hash = $1",
            key_hash,
        )
        if row is None:
            return None
        return ClientSecret(row[0], row[1], json.loads(row[2]), int(row[3]), int(row[4]))

    async def prune_client_secrets(self, now: float) -> int:
        status: str = await self.pool.execute("DELETE FROM client_secrets WHERE expires_at <= $1", int(now))
        return int(status.rsplit(" ", 1)[-1])

    # ------------------------------------------------------------------ usage

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        sql = insert_usage_sql(Placeholders(numbered=True).many(len(USAGE_COLUMNS)), sqlite=False)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(sql, [astuple(record) for record in records])

    async def usage_records(
        self, *, key_id: str | None = None, session_id: str | None = None, limit: int = 10_000
    ) -> list[UsageRecord]:
        marks = Placeholders(numbered=True)
        clauses: list[str] = []
        args: list[object] = []
        if key_id is not None:
            clauses.append(f"key_id = {marks.next()}")
            args.append(key_id)
        if session_id is not None:
            clauses.append(f"session_id = {marks.next()}")
            args.append(session_id)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = await self.pool.fetch(
            f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage_records{where} "
            f"ORDER BY created_at, id LIMIT {marks.next()}",
            *args,
            limit,
        )
        return [UsageRecord(*tuple(row)) for row in rows]

    async def aggregate_usage(self, query: UsageQuery) -> list[UsageAggregate]:
        sql, args = aggregate_sql(query, Placeholders(numbered=True))
        rows = await self.pool.fetch(sql, *args)
        return [UsageAggregate(*tuple(row)) for row in rows if row["last_at"] is not None]

    async def spend_by_key(self, since: float) -> dict[str, float]:
        rows = await self.pool.fetch(
            "SELECT key_id, SUM(cost_usd) FROM usage_records WHERE created_at >= $1 GROUP BY key_id",
            float(since),
        )
        return {str(row[0]): float(row[1]) for row in rows}
