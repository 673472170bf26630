"""Recording sessions: who is recorded, the writer thread, the index, retention.

``RecordingService`` is built once per server. An observer asks it for a ``SessionRecorder``
when a session starts (``None`` when the key's mode is ``off``) and hands the recorder what it
sees. The recorder only queues: every call returns at once, from any thread. One writer thread
turns the queue into journal lines and audio, encrypts them into append-only chunks every
``flush_interval_s`` (so a ``kill -9`` loses at most that much) and syncs them to disk every
second; the index entry (ids, times, sizes, never content) goes to the storage backend from
the event loop, like the usage ledger's rows. A sweeper deletes what is older than the
retention period at start-up and then periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from ..config import RecordingMode, Settings
from ..server.auth import key_id as key_id_of
from ..storage.base import RecordingMeta, RecordingQuery, Storage
from .bundle import ASSISTANT_FILE, CALLER_FILE, EVENTS_FILE, write_bundle
from .crypto import EncryptedAppender, KeyRing, load_keyring
from .journal import RATE, SessionJournal, pcm_bytes

__all__ = [
    "RecordingMissing",
    "RecordingPolicy",
    "RecordingService",
    "SessionRecorder",
    "open_recording_service",
]

log = logging.getLogger("openrealtime.recording")

FLUSH_LIMIT_BYTES = 1024 * 1024
"""A recording whose unwritten data passes this is written at once, not at the next tick."""


class RecordingMissing(LookupError):
    """The recording is indexed but its files are gone (or it is not indexed at all)."""


@dataclass(frozen=True)
class RecordingPolicy:
    """The recording mode of each API key: ``default`` unless ``per_key`` names the key's id."""

    default: RecordingMode = "off"
    per_key: Mapping[str, RecordingMode] = field(default_factory=dict)

    def mode_for(self, key_id: str) -> RecordingMode:
        return self.per_key.get(key_id, self.default)

    @property
    def enabled(self) -> bool:
        return self.default != "off" or any(mode != "off" for mode in self.per_key.values())

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingPolicy:
        """Per-key entries may name the key itself or its id (``key_…``), as budgets do."""
        per_key = {
            (name if name.startswith("key_") else key_id_of(name)): mode
            for name, mode in settings.recording_keys.items()
        }
        return cls(settings.recording, per_key)


# --------------------------------------------------------------------------- writer thread


@dataclass
class _Open:
    meta: RecordingMeta
    config: dict[str, Any] | None
    at: float


@dataclass
class _Event:
    recording_id: str
    direction: Literal["client", "server"]
    event: Mapping[str, Any]
    at: float
    pcm: bytes | None
    accepted: bool = True


@dataclass
class _CallerAudio:
    recording_id: str
    pcm: bytes
    at: float


@dataclass
class _AssistantAudio:
    recording_id: str
    response_id: str
    item_id: str
    pcm: bytes
    at: float


@dataclass
class _Note:
    recording_id: str
    kind: str
    data: Mapping[str, Any]
    at: float


@dataclass
class _Close:
    recording_id: str
    at: float
    discard: bool = False


@dataclass
class _Barrier:
    done: Callable[[], None]


_Op = _Open | _Event | _CallerAudio | _AssistantAudio | _Note | _Close | _Barrier | None
_TICK = _Barrier(lambda: None)


@dataclass
class _Live:
    meta: RecordingMeta
    folder: Path
    journal: SessionJournal
    events: EncryptedAppender
    caller: EncryptedAppender | None
    assistant: EncryptedAppender | None
    synced_at: float = 0.0
    dirty: bool = False

    def files(self) -> list[EncryptedAppender]:
        return [f for f in (self.events, self.caller, self.assistant) if f is not None]


class _Writer:
    """The one thread that encrypts and writes every recording (all disk I/O happens here)."""

    def __init__(
        self,
        root: Path,
        keys: KeyRing,
        report: Callable[[RecordingMeta, bool], None],
        *,
        flush_interval_s: float,
        sync_interval_s: float,
    ) -> None:
        self.root = root
        self.keys = keys
        self.report = report
        """Called (on this thread) with the final index entry of a closed recording, or with
        ``discarded=True`` when its files were deleted."""
        self.flush_interval_s = flush_interval_s
        self.sync_interval_s = sync_interval_s
        self.queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self.live: dict[str, _Live] = {}
        self.thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self.queued_bytes = 0
        self._lock = threading.Lock()

    def submit(self, op: _Op, size: int = 0) -> None:
        if size:
            with self._lock:
                self.queued_bytes += size
        self.queue.put(op)

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        running = True
        while running:
            try:
                op = self.queue.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                op = _TICK  # nothing came: write what waits
            while True:
                if op is None:
                    running = False
                    break
                if op is not _TICK:
                    self._apply(op)
                try:
                    op = self.queue.get_nowait()
                except queue.Empty:
                    break
            if time.monotonic() >= next_flush or not running:
                self._flush_all()
                next_flush = time.monotonic() + self.flush_interval_s
        for recording_id in list(self.live):
            self._close(recording_id, time.time(), discard=False)

    def _apply(self, op: _Op) -> None:
        try:
            if isinstance(op, _Open):
                self._open(op)
            elif isinstance(op, _Barrier):
                self._flush_all()
                op.done()
            elif isinstance(op, _Close):
                self._close(op.recording_id, op.at, discard=op.discard)
            else:
                self._record(op)
        except Exception:
            log.exception("recording writer: %s failed", type(op).__name__)

    def _open(self, op: _Open) -> None:
        meta = op.meta
        folder = self.root / meta.path
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.keys.current
        full = meta.mode == "full"
        live = _Live(
            meta=meta,
            folder=folder,
            journal=SessionJournal("full" if full else "metadata"),
            events=EncryptedAppender(folder / EVENTS_FILE, key),
            caller=EncryptedAppender(folder / CALLER_FILE, key) if full else None,
            assistant=EncryptedAppender(folder / ASSISTANT_FILE, key) if full else None,
            synced_at=time.monotonic(),
        )
        self.live[meta.id] = live
        started = {
            "recording_id": meta.id,
            "session_id": meta.session_id,
            "key_id": meta.key_id,
            "transport": meta.transport,
            "model": meta.model,
            "mode": meta.mode,
            "config": op.config,
        }
        live.journal.note("session_started", started, op.at)

    def _record(self, op: _Op) -> None:
        size = 0
        recording_id = getattr(op, "recording_id", "")
        live = self.live.get(recording_id)
        if isinstance(op, _Event):
            size = len(op.pcm or b"")
            if live is not None:
                if op.direction == "client":
                    live.journal.client_event(op.event, op.at, op.pcm, accepted=op.accepted)
                else:
                    live.journal.server_event(op.event, op.at, op.pcm)
        elif isinstance(op, _CallerAudio):
            size = len(op.pcm)
            if live is not None:
                live.journal.caller_audio(op.pcm, op.at)
        elif isinstance(op, _AssistantAudio):
            size = len(op.pcm)
            if live is not None:
                live.journal.assistant_audio(op.response_id, op.item_id, op.pcm, op.at)
        elif isinstance(op, _Note) and live is not None:
            live.journal.note(op.kind, op.data, op.at)
        if size:
            with self._lock:
                self.queued_bytes -= size
        if live is not None and live.journal.pending_bytes >= FLUSH_LIMIT_BYTES:
            self._flush(live)

    def _flush(self, live: _Live) -> None:
        lines, caller, assistant = live.journal.take()
        for appender, data in ((live.events, lines), (live.caller, caller), (live.assistant, assistant)):
            if appender is not None and data:
                appender.append(data)
                live.dirty = True

    def _flush_all(self) -> None:
        now = time.monotonic()
        for live in list(self.live.values()):
            try:
                self._flush(live)
                if live.dirty and now - live.synced_at >= self.sync_interval_s:
                    for appender in live.files():
                        appender.sync()
                    live.synced_at = now
                    live.dirty = False
            except Exception:
                log.exception("recording writer: writing %s failed", live.meta.id)

    def _close(self, recording_id: str, at: float, *, discard: bool) -> None:
        live = self.live.pop(recording_id, None)
        if live is None:
            return
        if discard:
            for appender in live.files():
                appender.abandon()
            shutil.rmtree(live.folder, ignore_errors=True)
            self.report(live.meta, True)
            return
        live.journal.note("session_ended", {}, at)
        self._flush(live)
        for appender in live.files():
            appender.close()
        caller_samples = live.journal.caller.samples
        assistant_samples = live.journal.assistant.samples
        meta = replace(
            live.meta,
            ended_at=at,
            status="complete",
            events_bytes=live.events.size,
            caller_bytes=live.caller.size if live.caller else 0,
            assistant_bytes=live.assistant.size if live.assistant else 0,
            caller_audio_ms=caller_samples * 1000 // RATE,
            assistant_audio_ms=assistant_samples * 1000 // RATE,
        )
        self.report(meta, False)


# --------------------------------------------------------------------------- the recorder


class SessionRecorder:
    """What an observer feeds for one session. Every method only queues and returns at once;
    it may be called from any thread. After ``close`` or ``opt_out`` calls are ignored.

    ``at`` is the event's time in epoch seconds (default: now). ``pcm`` is 24 kHz mono int16
    (bytes or an array): pass it with an event when the runtime has already decoded the
    payload; without it the recorder decodes the event's base64 in the session's format.
    """

    def __init__(self, service: RecordingService, meta: RecordingMeta) -> None:
        self.service = service
        self.meta = meta
        self.closed = False

    @property
    def recording_id(self) -> str:
        return self.meta.id

    @property
    def mode(self) -> str:
        return self.meta.mode

    def _at(self, at: float | None) -> float:
        return self.service.clock() if at is None else at

    def client_event(
        self,
        event: Mapping[str, Any],
        *,
        at: float | None = None,
        pcm: bytes | np.ndarray[Any, Any] | None = None,
        accepted: bool = True,
    ) -> None:
        """A client event as received (its wire JSON as a dict the caller no longer changes);
        ``accepted=False`` when the server refused it (its audio then stays out of the track)."""
        if not self.closed:
            data = None if pcm is None else pcm_bytes(pcm)
            op = _Event(self.meta.id, "client", event, self._at(at), data, accepted)
            self.service._submit(op, len(data or b""))

    def server_event(
        self,
        event: Mapping[str, Any],
        *,
        at: float | None = None,
        pcm: bytes | np.ndarray[Any, Any] | None = None,
    ) -> None:
        """A server event as sent."""
        if not self.closed:
            data = None if pcm is None else pcm_bytes(pcm)
            self.service._submit(_Event(self.meta.id, "server", event, self._at(at), data), len(data or b""))

    def caller_audio(self, pcm: bytes | np.ndarray[Any, Any], *, at: float | None = None) -> None:
        """Caller audio that arrived without an event (WebRTC, SIP), as received."""
        if not self.closed and self.mode == "full":
            data = pcm_bytes(pcm)
            self.service._submit(_CallerAudio(self.meta.id, data, self._at(at)), len(data))
        elif not self.closed:  # metadata: only how much, for the timeline
            data = pcm_bytes(pcm)
            self.service._submit(_CallerAudio(self.meta.id, data, self._at(at)))

    def assistant_audio(
        self, response_id: str, item_id: str, pcm: bytes | np.ndarray[Any, Any], *, at: float | None = None
    ) -> None:
        """Assistant speech as it leaves for the caller (WebRTC/SIP playout)."""
        if not self.closed:
            data = pcm_bytes(pcm)
            self.service._submit(
                _AssistantAudio(self.meta.id, response_id, item_id, data, self._at(at)), len(data)
            )

    def truncated(self, item_id: str, audio_end_ms: int, *, at: float | None = None) -> None:
        """Playback of ``item_id`` stopped after ``audio_end_ms`` (barge-in, clear)."""
        self.note("truncated", {"item_id": item_id, "audio_end_ms": int(audio_end_ms)}, at=at)

    def turn_timings(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        """A response's stage timings (the runtime's ``turn timings`` record)."""
        self.note("turn_timings", dict(record), at=at)

    def note(self, kind: str, data: Mapping[str, Any], *, at: float | None = None) -> None:
        """Anything else worth keeping, e.g. ``disclosure`` with the sentence spoken."""
        if not self.closed:
            self.service._submit(_Note(self.meta.id, kind, dict(data), self._at(at)))

    def close(self, *, at: float | None = None) -> None:
        """The session ended: finish the files and the index entry."""
        if not self.closed:
            self.closed = True
            self.service._finish(self, _Close(self.meta.id, self._at(at)))

    def opt_out(self) -> None:
        """The caller asked not to be recorded: stop, and delete everything kept of the session."""
        if not self.closed:
            self.closed = True
            self.service._finish(self, _Close(self.meta.id, self._at(None), discard=True))


# --------------------------------------------------------------------------- the service


def _day_path(started_at: float, recording_id: str) -> str:
    return datetime.fromtimestamp(started_at, UTC).strftime("%Y/%m/%d/") + recording_id


class RecordingService:
    """Recordings of the sessions of one server: start, list, export, delete, retention."""

    def __init__(
        self,
        storage: Storage,
        keys: KeyRing,
        root: Path,
        policy: RecordingPolicy,
        *,
        retention_days: float = 30.0,
        sweep_interval_s: float = 3600.0,
        flush_interval_s: float = 0.2,
        sync_interval_s: float = 1.0,
        max_queued_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.keys = keys
        self.root = root
        self.policy = policy
        self.retention_days = retention_days
        self.sweep_interval_s = sweep_interval_s
        self.max_queued_bytes = max_queued_bytes
        self.clock = clock
        self.live: dict[str, SessionRecorder] = {}
        self._writer = _Writer(
            root, keys, self._written, flush_interval_s=flush_interval_s, sync_interval_s=sync_interval_s
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._index: asyncio.Queue[tuple[RecordingMeta, bool]] = asyncio.Queue()
        self._index_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._dropping: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, sweep: bool = True) -> None:
        """Start the writer and the index task; sweep expired recordings now and periodically."""
        self._loop = asyncio.get_running_loop()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._writer.thread.start()
        self._index_task = asyncio.create_task(self._index_loop(), name="recording-index")
        if sweep and self.retention_days > 0:
            await self._sweep_logged()
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="recording-retention")

    async def close(self) -> None:
        """Finish every live recording, write everything, stop."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for recorder in list(self.live.values()):
            recorder.close()
        if self._writer.thread.is_alive():
            self._writer.submit(None)
            await asyncio.to_thread(self._writer.thread.join)
        if self._index_task is not None:
            await self._index.join()
            self._index_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._index_task

    async def flush(self) -> None:
        """Wait until everything recorded so far is on disk and every index entry is stored."""
        if self._loop is None or not self._writer.thread.is_alive():
            return
        done = self._loop.create_future()
        loop = self._loop

        def resolve() -> None:
            loop.call_soon_threadsafe(_resolve, done)

        self._writer.submit(_Barrier(resolve))
        await done
        await self._index.join()

    # ------------------------------------------------------------------ recording

    def start_session(
        self,
        *,
        session_id: str,
        key_id: str,
        transport: str,
        model: str,
        config: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> SessionRecorder | None:
        """A recorder for a new session, or ``None`` when the key's mode is ``off``. Returns at
        once: the files are created on the writer thread, the index entry by the index task."""
        mode = self.policy.mode_for(key_id)
        if mode == "off" or self._loop is None:
            return None
        started = self.clock() if at is None else at
        recording_id = "rec_" + secrets.token_hex(12)
        meta = RecordingMeta(
            id=recording_id,
            session_id=session_id,
            key_id=key_id,
            mode=mode,
            transport=transport,
            model=model,
            encryption_key=self.keys.current.id,
            path=_day_path(started, recording_id),
            started_at=started,
        )
        recorder = SessionRecorder(self, meta)
        self.live[recording_id] = recorder
        self._index.put_nowait((meta, False))
        self._writer.submit(_Open(meta, dict(config) if config is not None else None, started))
        return recorder

    def _submit(self, op: _Op, size: int = 0) -> None:
        if size and self._writer.queued_bytes + size > self.max_queued_bytes:
            recording_id = getattr(op, "recording_id", "")
            if recording_id not in self._dropping:
                self._dropping.add(recording_id)
                log.error("recording %s: the writer is %d bytes behind; audio dropped", recording_id, size)
                self._writer.submit(_Note(recording_id, "audio_dropped", {}, self.clock()))
            return
        self._writer.submit(op, size)

    def _finish(self, recorder: SessionRecorder, op: _Close) -> None:
        self.live.pop(recorder.recording_id, None)
        self._dropping.discard(recorder.recording_id)
        self._writer.submit(op)

    def _written(self, meta: RecordingMeta, discarded: bool) -> None:
        """(writer thread) A recording was closed or discarded: update the index."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._index.put_nowait, (meta, discarded))

    async def _index_loop(self) -> None:
        while True:
            meta, discarded = await self._index.get()
            try:
                for attempt in range(5):
                    try:
                        if discarded:
                            await self.storage.delete_recording(meta.id)
                        else:
                            await self.storage.put_recording(meta)
                        break
                    except Exception:
                        log.exception("recording index write failed (attempt %d)", attempt + 1)
                        await asyncio.sleep(0.1 * 2**attempt)
            finally:
                self._index.task_done()

    # ------------------------------------------------------------------ reading and deleting

    async def get(self, recording_id: str) -> RecordingMeta | None:
        return await self.storage.get_recording(recording_id)

    async def list(self, query: RecordingQuery) -> list[RecordingMeta]:
        return await self.storage.list_recordings(query)

    async def export(self, recording_id: str, out: BinaryIO) -> dict[str, Any]:
        """Write the recording's bundle (a zip, see ``bundle.py``) to ``out``; returns the
        manifest. A live recording is exported as far as it has been written."""
        if recording_id in self.live:
            await self.flush()
        meta = await self.storage.get_recording(recording_id)
        if meta is None:
            raise RecordingMissing(recording_id)
        folder = self.root / meta.path
        if not (folder / EVENTS_FILE).exists():
            raise RecordingMissing(recording_id)
        return await asyncio.to_thread(write_bundle, meta, folder, self.keys, out)

    async def delete(self, recording_id: str) -> bool:
        """Delete a recording's files and index entry (stopping it first if it is live)."""
        recorder = self.live.get(recording_id)
        if recorder is not None:
            recorder.opt_out()
            await self.flush()
        meta = await self.storage.get_recording(recording_id)
        if meta is None:
            return recorder is not None
        await asyncio.to_thread(shutil.rmtree, self.root / meta.path, True)
        await self.storage.delete_recording(recording_id)
        return True

    async def delete_key(self, key_id: str) -> int:
        """Delete every recording of one API key (live ones stop); returns how many went."""
        stopped = [r for r in self.live.values() if r.meta.key_id == key_id]
        for recorder in stopped:
            recorder.opt_out()
        if stopped:
            await self.flush()
        count = len(stopped)
        while True:
            page = await self.storage.list_recordings(RecordingQuery(key_ids=[key_id], limit=500))
            if not page:
                return count
            for meta in page:
                count += await self.delete(meta.id)

    # ------------------------------------------------------------------ retention

    async def sweep(self, now: float | None = None) -> int:
        """Delete recordings that started more than ``retention_days`` ago, and folders of days
        before that which the index no longer knows (left by a crash); returns how many
        recordings went. Live recordings are left until they end."""
        if self.retention_days <= 0:
            return 0
        cutoff = (self.clock() if now is None else now) - self.retention_days * 86_400
        deleted = 0
        after: tuple[float, str] | None = None
        while True:
            page = await self.storage.list_recordings(
                RecordingQuery(end=cutoff, after=after, oldest_first=True, limit=500)
            )
            if not page:
                break
            for meta in page:
                if meta.id not in self.live:
                    await asyncio.to_thread(shutil.rmtree, self.root / meta.path, True)
                    deleted += await self.storage.delete_recording(meta.id)
            after = (page[-1].started_at, page[-1].id)
        live = {recorder.meta.path for recorder in self.live.values()}
        await asyncio.to_thread(self._sweep_folders, cutoff, live)
        return deleted

    def _sweep_folders(self, cutoff: float, live: set[str]) -> None:
        """Remove day folders wholly before the cutoff's day (their recordings have expired)."""
        last_day = datetime.fromtimestamp(cutoff, UTC).strftime("%Y/%m/%d")
        for day in sorted(self.root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]")):
            name = day.relative_to(self.root).as_posix()
            if name >= last_day:
                break
            for folder in day.iterdir():
                if f"{name}/{folder.name}" not in live:
                    shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                day.rmdir()
                day.parent.rmdir()
                day.parent.parent.rmdir()

    async def _sweep_logged(self) -> None:
        try:
            deleted = await self.sweep()
            if deleted:
                log.info(
                    "retention: deleted %d recording(s) older than %g days", deleted, self.retention_days
                )
        except Exception:
            log.exception("retention sweep failed")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            await self._sweep_logged()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def open_recording_service(settings: Settings, storage: Storage) -> RecordingService | None:
    """The recording service the settings ask for (``None`` when recording is off for every
    key), started on ``storage``. Raises ``RecordingKeyError`` without a usable key."""
    from .crypto import RecordingKeyError

    policy = RecordingPolicy.from_settings(settings)
    if not policy.enabled:
        return None
    if not settings.recording_key:
        raise RecordingKeyError(
            "recording is on but OPENREALTIME_RECORDING_KEY is not set: give it a base64 32-byte key "
            '(python -c "import base64,os; print(base64.b64encode(os.urandom(32)).decode())") or a key file'
        )
    service = RecordingService(
        storage,
        load_keyring(settings.recording_key),
        settings.recordings_dir,
        policy,
        retention_days=settings.retention_days,
        sweep_interval_s=settings.recording_sweep_minutes * 60,
    )
    await service.start()
    return service
