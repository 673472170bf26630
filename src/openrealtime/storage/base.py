"""What is persisted and the one async interface every backend implements.

Three things outlive a process: ephemeral client secrets (an ``ek_`` key minted before a
restart must still work after it), the usage ledger (what each key spent, row by row) and the
index of session recordings (their encrypted files live on disk, see ``recording/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, Protocol

from ..auth_records import ClientSecret

GroupColumn = Literal["key", "session", "day"]
GROUP_COLUMNS: dict[str, str] = {"key": "key_id", "session": "session_id", "day": "day"}

TOKEN_COLUMNS = (
    "input_text_tokens",
    "input_audio_tokens",
    "input_image_tokens",
    "cached_text_tokens",
    "cached_audio_tokens",
    "cached_image_tokens",
    "output_text_tokens",
    "output_audio_tokens",
)


@dataclass(frozen=True)
class UsageRecord:
    """One billed unit: a response (``kind="response"``) or an input transcription.

    ``id`` is the response id (or ``transcription:<item id>``): the ledger's primary key, so a
    record written twice is stored once.
    """

    id: str
    kind: str
    key_id: str
    session_id: str
    transport: str
    model: str
    status: str
    created_at: float
    day: str
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    cached_image_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


USAGE_COLUMNS = tuple(f.name for f in fields(UsageRecord))


@dataclass(frozen=True)
class UsageAggregate:
    """Sums over the records of one group (the group's columns are set, the others None)."""

    key_id: str | None
    session_id: str | None
    day: str | None
    responses: int
    transcriptions: int
    input_text_tokens: int
    input_audio_tokens: int
    input_image_tokens: int
    cached_text_tokens: int
    cached_audio_tokens: int
    cached_image_tokens: int
    output_text_tokens: int
    output_audio_tokens: int
    cost_usd: float
    first_at: float
    last_at: float

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UsageQuery:
    """Which records to aggregate: ``key_ids=None`` means every key (admins only)."""

    group_by: Sequence[GroupColumn] = ("key",)
    key_ids: Sequence[str] | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class RecordingMeta:
    """The index entry of one session recording: ids, times and sizes, never content.

    ``path`` is the recording's folder relative to the recordings directory; ``encryption_key``
    the id of the key that encrypted its files. Sizes are bytes on disk; audio in ms.
    """

    id: str
    session_id: str
    key_id: str
    mode: str
    transport: str
    model: str
    encryption_key: str
    path: str
    started_at: float
    ended_at: float | None = None
    status: str = "recording"
    events_bytes: int = 0
    caller_bytes: int = 0
    assistant_bytes: int = 0
    caller_audio_ms: int = 0
    assistant_audio_ms: int = 0

    @property
    def size_bytes(self) -> int:
        return self.events_bytes + self.caller_bytes + self.assistant_bytes


RECORDING_COLUMNS = tuple(f.name for f in fields(RecordingMeta))


@dataclass(frozen=True)
class RecordingQuery:
    """Which recordings to list: ``key_ids=None`` means every key's (admins only). ``start`` /
    ``end`` bound ``started_at`` (end exclusive); ``after`` is the ``(started_at, id)`` of the
    last row of the previous page; newest first unless ``oldest_first``."""

    key_ids: Sequence[str] | None = None
    session_id: str | None = None
    start: float | None = None
    end: float | None = None
    after: tuple[float, str] | None = None
    oldest_first: bool = False
    limit: int = 100


class Storage(Protocol):
    """Persistence behind one async interface (SQLite or PostgreSQL)."""

    url: str

    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    async def close(self) -> None: ...

    async def put_client_secret(self, secret: ClientSecret) -> None: ...

    async def get_client_secret(self, key_hash: str) -> ClientSecret | None: ...

    async def prune_client_secrets(self, now: float) -> int:
        """Delete expired secrets; returns how many went."""

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        """Insert records in one transaction, ignoring ids already stored."""

    async def usage_records(
        self, *, key_id: str | None = None, session_id: str | None = None, limit: int = 10_000
    ) -> list[UsageRecord]:
        """Raw rows, oldest first (tests, exports)."""

    async def aggregate_usage(self, query: UsageQuery) -> list[UsageAggregate]: ...

    async def spend_by_key(self, since: float) -> dict[str, float]:
        """Cost per key of the records at or after ``since`` (budgets)."""

    async def put_recording(self, meta: RecordingMeta) -> None:
        """Insert or replace a recording's index entry."""

    async def get_recording(self, recording_id: str) -> RecordingMeta | None: ...

    async def list_recordings(self, query: RecordingQuery) -> list[RecordingMeta]: ...

    async def delete_recording(self, recording_id: str) -> bool:
        """Remove an index entry; False when there was none."""
