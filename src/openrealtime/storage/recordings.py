"""The recordings index on each backend (mixed into ``SqliteStorage`` and ``PostgresStorage``).

Only the index lives in the database: ids, times and sizes of each session recording, never
its content (the encrypted files are on disk, see ``recording/``). The SQL is shared
(``schema.py``); these mixins only run it the way each backend runs queries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import astuple
from typing import Any, TypeVar

from .base import RECORDING_COLUMNS, RecordingMeta, RecordingQuery
from .schema import Placeholders, list_recordings_sql, upsert_recording_sql

T = TypeVar("T")

_SELECT_ONE = f"SELECT {', '.join(RECORDING_COLUMNS)} FROM recordings WHERE id = "


class SqliteRecordingIndex:
    """``Storage``'s recording methods on SQLite (queries run on the storage's own thread)."""

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # SqliteStorage runs work on its database thread

    async def put_recording(self, meta: RecordingMeta) -> None:
        sql = upsert_recording_sql(["?"] * len(RECORDING_COLUMNS))
        row = astuple(meta)

        def put(db: sqlite3.Connection) -> None:
            db.execute(sql, row)

        await self._run(put)

    async def get_recording(self, recording_id: str) -> RecordingMeta | None:
        def get(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = db.execute(_SELECT_ONE + "?", (recording_id,)).fetchone()
            return row

        row = await self._run(get)
        return None if row is None else RecordingMeta(*row)

    async def list_recordings(self, query: RecordingQuery) -> list[RecordingMeta]:
        sql, args = list_recordings_sql(query, Placeholders(numbered=False))

        def read(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(sql, args).fetchall()

        return [RecordingMeta(*row) for row in await self._run(read)]

    async def delete_recording(self, recording_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,)).rowcount > 0

        return await self._run(delete)


class PostgresRecordingIndex:
    """``Storage``'s recording methods on PostgreSQL (asyncpg pool)."""

    @property
    def pool(self) -> Any:
        raise NotImplementedError  # PostgresStorage's connection pool

    async def put_recording(self, meta: RecordingMeta) -> None:
        sql = upsert_recording_sql(Placeholders(numbered=True).many(len(RECORDING_COLUMNS)))
        await self.pool.execute(sql, *astuple(meta))

    async def get_recording(self, recording_id: str) -> RecordingMeta | None:
        row = await self.pool.fetchrow(_SELECT_ONE + "$1", recording_id)
        return None if row is None else RecordingMeta(*tuple(row))

    async def list_recordings(self, query: RecordingQuery) -> list[RecordingMeta]:
        sql, args = list_recordings_sql(query, Placeholders(numbered=True))
        return [RecordingMeta(*tuple(row)) for row in await self.pool.fetch(sql, *args)]

    async def delete_recording(self, recording_id: str) -> bool:
        status: str = await self.pool.execute("DELETE FROM recordings WHERE id = $1", recording_id)
        return int(status.rsplit(" ", 1)[-1]) > 0
