"""The schema, as numbered migrations shared by SQLite and PostgreSQL.

Each backend records the highest applied version in ``schema_version`` and applies the rest
in one transaction on open. Types are written so that both dialects accept them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import GROUP_COLUMNS, RECORDING_COLUMNS, TOKEN_COLUMNS, USAGE_COLUMNS, RecordingQuery, UsageQuery

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: client secrets and the usage ledger
        """CREATE TABLE client_secrets (
            key_hash TEXT PRIMARY KEY,
            parent_key_id TEXT NOT NULL,
            session TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )""",
        "CREATE INDEX client_secrets_expires_at ON client_secrets (expires_at)",
        """CREATE TABLE usage_records (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            key_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            transport TEXT NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            input_text_tokens BIGINT NOT NULL,
            input_audio_tokens BIGINT NOT NULL,
            input_image_tokens BIGINT NOT NULL,
            cached_text_tokens BIGINT NOT NULL,
            cached_audio_tokens BIGINT NOT NULL,
            cached_image_tokens BIGINT NOT NULL,
            output_text_tokens BIGINT NOT NULL,
            output_audio_tokens BIGINT NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX usage_records_key_time ON usage_records (key_id, created_at)",
        "CREATE INDEX usage_records_time ON usage_records (created_at)",
        "CREATE INDEX usage_records_session ON usage_records (session_id)",
    ),
    (  # 2: the index of session recordings (their encrypted files are on disk)
        """CREATE TABLE recordings (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            key_id TEXT NOT NULL,
            mode TEXT NOT NULL,
            transport TEXT NOT NULL,
            model TEXT NOT NULL,
            encryption_key TEXT NOT NULL,
            path TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            status TEXT NOT NULL,
            events_bytes BIGINT NOT NULL,
            caller_bytes BIGINT NOT NULL,
            assistant_bytes BIGINT NOT NULL,
            caller_audio_ms BIGINT NOT NULL,
            assistant_audio_ms BIGINT NOT NULL
        )""",
        "CREATE INDEX recordings_key_time ON recordings (key_id, started_at)",
        "CREATE INDEX recordings_time ON recordings (started_at)",
        "CREATE INDEX recordings_session ON recordings (session_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

INSERT_SECRET_COLUMNS = ("key_hash", "parent_key_id", "session", "created_at", "expires_at")


def insert_usage_sql(placeholders: Sequence[str], *, sqlite: bool) -> str:
    columns = ", ".join(USAGE_COLUMNS)
    values = ", ".join(placeholders)
    if sqlite:
        return f"INSERT OR IGNORE INTO usage_records ({columns}) VALUES ({values})"
    return f"INSERT INTO usage_records ({columns}) VALUES ({values}) ON CONFLICT (id) DO NOTHING"


def aggregate_sql(query: UsageQuery, placeholder: Placeholders) -> tuple[str, list[object]]:
    """The aggregate ``SELECT`` for ``query`` (group columns come from a fixed whitelist)."""
    groups = [GROUP_COLUMNS[name] for name in dict.fromkeys(query.group_by)]
    if "session_id" in groups and "key_id" not in groups:
        groups.insert(0, "key_id")  # a session belongs to one key: show it
    selected = [f"{c} AS {c}" if c in groups else f"NULL AS {c}" for c in ("key_id", "session_id", "day")]
    sums = [f"CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}" for c in TOKEN_COLUMNS]
    where: list[str] = []
    args: list[object] = []
    if query.key_ids is not None:
        if not query.key_ids:
            where.append("1 = 0")
        else:
            marks = ", ".join(placeholder.next() for _ in query.key_ids)
            where.append(f"key_id IN ({marks})")
            args.extend(query.key_ids)
    if query.start is not None:
        where.append(f"created_at >= {placeholder.next()}")
        args.append(float(query.start))
    if query.end is not None:
        where.append(f"created_at < {placeholder.next()}")
        args.append(float(query.end))
    sql = (
        "SELECT "
        + ", ".join(
            [
                *selected,
                "CAST(SUM(CASE WHEN kind = 'response' THEN 1 ELSE 0 END) AS BIGINT) AS responses",
                "CAST(SUM(CASE WHEN kind = 'transcription' THEN 1 ELSE 0 END) AS BIGINT) AS transcriptions",
                *sums,
                "COALESCE(SUM(cost_usd), 0) AS cost_usd",
                "MIN(created_at) AS first_at",
                "MAX(created_at) AS last_at",
            ]
        )
        + " FROM usage_records"
        + (" WHERE " + " AND ".join(where) if where else "")
        + (" GROUP BY " + ", ".join(groups) + " ORDER BY " + ", ".join(groups) if groups else "")
    )
    return sql, args


def upsert_recording_sql(placeholders: Sequence[str]) -> str:
    """Insert or replace one index entry (both dialects accept ``ON CONFLICT … DO UPDATE``)."""
    columns = ", ".join(RECORDING_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in RECORDING_COLUMNS if c != "id")
    return (
        f"INSERT INTO recordings ({columns}) VALUES ({', '.join(placeholders)}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def list_recordings_sql(query: RecordingQuery, placeholder: Placeholders) -> tuple[str, list[object]]:
    """The ``SELECT`` of one page of recordings, newest (or oldest) first, keyset-paginated."""
    where: list[str] = []
    args: list[object] = []
    if query.key_ids is not None:
        if not query.key_ids:
            where.append("1 = 0")
        else:
            where.append(f"key_id IN ({', '.join(placeholder.next() for _ in query.key_ids)})")
            args.extend(query.key_ids)
    if query.session_id is not None:
        where.append(f"session_id = {placeholder.next()}")
        args.append(query.session_id)
    if query.start is not None:
        where.append(f"started_at >= {placeholder.next()}")
        args.append(float(query.start))
    if query.end is not None:
        where.append(f"started_at < {placeholder.next()}")
        args.append(float(query.end))
    if query.after is not None:
        at, rid = query.after
        op = ">" if query.oldest_first else "<"
        first, second, third = placeholder.next(), placeholder.next(), placeholder.next()
        where.append(f"(started_at {op} {first} OR (started_at = {second} AND id {op} {third}))")
        args.extend([float(at), float(at), rid])
    order = "ASC" if query.oldest_first else "DESC"
    sql = (
        f"SELECT {', '.join(RECORDING_COLUMNS)} FROM recordings"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY started_at {order}, id {order} LIMIT {placeholder.next()}"
    )
    args.append(max(0, int(query.limit)))
    return sql, args


class Placeholders:
    """Numbers parameters the way the dialect wants: ``?`` (SQLite) or ``$1, $2…`` (asyncpg)."""

    def __init__(self, *, numbered: bool) -> None:
        self.numbered = numbered
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"${self.count}" if self.numbered else "?"

    def many(self, n: int) -> list[str]:
        return [self.next() for _ in range(n)]
