"""Persistence behind one async interface: SQLite by default, PostgreSQL for several nodes.

``open_storage(url)`` picks the backend from the URL (``OPENREALTIME_DATABASE_URL``):
``sqlite:////absolute/file.db`` (``sqlite:///relative.db``) or ``postgresql://user:pass@host:port/db``.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    GROUP_COLUMNS,
    RecordingMeta,
    RecordingQuery,
    Storage,
    UsageAggregate,
    UsageQuery,
    UsageRecord,
)

DEFAULT_FILE = "openrealtime.db"

__all__ = [
    "DEFAULT_FILE",
    "GROUP_COLUMNS",
    "RecordingMeta",
    "RecordingQuery",
    "Storage",
    "UsageAggregate",
    "UsageQuery",
    "UsageRecord",
    "database_url",
    "make_storage",
    "open_storage",
]


def database_url(configured: str | None, data_dir: Path) -> str:
    """The configured URL, else the SQLite file in the data dir."""
    return configured or f"sqlite:///{(data_dir / DEFAULT_FILE).resolve()}"


def make_storage(url: str) -> Storage:
    """A backend for ``url`` (not yet opened). Raises ``ValueError`` on an unknown scheme."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return PostgresStorage(url)
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStorage

        return SqliteStorage(Path(url[len("sqlite:///") :]))  # sqlite:////abs.db, sqlite:///relative.db
    raise ValueError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}")


async def open_storage(url: str) -> Storage:
    storage = make_storage(url)
    await storage.open()
    return storage
