"""``/v1/recordings``: list, fetch (a decrypted bundle), delete session recordings.

API keys only (never an ``ek_`` key). Keys listed in ``OPENREALTIME_USAGE_ADMIN_KEYS`` see and
delete every key's recordings; any other key only its own, and another key's recording is
answered as not found (its existence is not revealed). ``GET /v1/recordings`` filters by
``session_id``, ``key_id`` and ``start``/``end`` (epoch seconds of the start, end exclusive),
newest first, ``limit`` per page and ``after`` (a recording id) for the next page.
``DELETE /v1/recordings?key_id=…`` deletes everything recorded for one key.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..recording import RecordingMissing, RecordingService, UnreadableRecording
from ..storage.base import RecordingMeta, RecordingQuery
from .auth import Principal
from .http import http_error
from .state import ServerState, State, require_principal
from .usage import BadQuery, admin_key_ids, parse_time

MAX_PAGE = 500
CHUNK = 256 * 1024

reading_key = require_principal(
    api_keys_only=True, ephemeral_refusal="Ephemeral keys cannot access recordings; use an API key."
)
Reader = Annotated[Principal, Depends(reading_key)]


def recording_wire(meta: RecordingMeta) -> dict[str, Any]:
    return {
        "id": meta.id,
        "object": "realtime.recording",
        "session_id": meta.session_id,
        "key_id": meta.key_id,
        "mode": meta.mode,
        "transport": meta.transport,
        "model": meta.model,
        "status": meta.status,
        "started_at": meta.started_at,
        "ended_at": meta.ended_at,
        "size_bytes": meta.size_bytes,
        "caller_audio_ms": meta.caller_audio_ms,
        "assistant_audio_ms": meta.assistant_audio_ms,
        "encryption_key": meta.encryption_key,
    }


def _is_admin(server: ServerState, principal: Principal) -> bool:
    return principal.key_id in admin_key_ids(server.settings.usage_admin_keys)


def _not_found(recording_id: str) -> JSONResponse:
    return http_error(404, "recording_not_found", f"No recording with id '{recording_id}'.", "recording_id")


async def _visible(server: ServerState, principal: Principal, recording_id: str) -> RecordingMeta | None:
    """The recording if it exists and this key may see it."""
    service = server.recordings
    if service is None:
        return None
    meta = await service.get(recording_id)
    if meta is None or (meta.key_id != principal.key_id and not _is_admin(server, principal)):
        return None
    return meta


def _chunks(spool: BinaryIO) -> Iterator[bytes]:
    try:
        spool.seek(0)
        while chunk := spool.read(CHUNK):
            yield chunk
    finally:
        spool.close()


def _key_filter(server: ServerState, principal: Principal, wanted: str | None) -> list[str] | None:
    """The key ids a query may cover; raises ``PermissionError`` for another key's."""
    if wanted is not None and wanted != principal.key_id and not _is_admin(server, principal):
        raise PermissionError
    if wanted is not None:
        return [wanted]
    return None if _is_admin(server, principal) else [principal.key_id]


def router() -> APIRouter:
    """The recordings routes."""
    api = APIRouter()

    @api.get("/v1/recordings", response_model=None)
    async def list_recordings(
        request: Request, server: State, principal: Reader
    ) -> dict[str, Any] | JSONResponse:
        params = request.query_params
        try:
            start = parse_time(params.get("start"), "start")
            end = parse_time(params.get("end"), "end")
            limit = int(params.get("limit") or 100)
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError
        except BadQuery as err:
            return http_error(400, "invalid_value", str(err), err.param)
        except ValueError:
            return http_error(400, "invalid_value", f"'limit' must be between 1 and {MAX_PAGE}.", "limit")
        try:
            key_ids = _key_filter(server, principal, params.get("key_id"))
        except PermissionError:
            return http_error(
                403, "permission_denied", "This key may read only its own recordings.", "key_id"
            )
        service = server.recordings
        if service is None:
            return {"object": "list", "data": [], "has_more": False}
        after = None
        if params.get("after"):
            last = await _visible(server, principal, params["after"])
            if last is None:
                return _not_found(params["after"])
            after = (last.started_at, last.id)
        await service.flush()  # index entries of sessions that just started or ended
        rows = await service.list(
            RecordingQuery(
                key_ids=key_ids,
                session_id=params.get("session_id") or None,
                start=start,
                end=end,
                after=after,
                limit=limit + 1,
            )
        )
        return {
            "object": "list",
            "data": [recording_wire(meta) for meta in rows[:limit]],
            "has_more": len(rows) > limit,
        }

    @api.get("/v1/recordings/{recording_id}", response_model=None)
    async def get_recording(
        recording_id: str, server: State, principal: Reader
    ) -> StreamingResponse | JSONResponse:
        meta = await _visible(server, principal, recording_id)
        service = server.recordings
        if meta is None or service is None:
            return _not_found(recording_id)
        spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 - closed by _chunks
        try:
            await service.export(recording_id, spool)  # type: ignore[arg-type]
        except RecordingMissing:
            spool.close()
            return _not_found(recording_id)
        except UnreadableRecording:
            spool.close()
            return http_error(
                500, "recording_unreadable", "The recording cannot be decrypted with the configured keys."
            )
        headers = {"Content-Disposition": f'attachment; filename="{recording_id}.zip"'}
        return StreamingResponse(_chunks(spool), media_type="application/zip", headers=headers)  # type: ignore[arg-type]

    @api.delete("/v1/recordings/{recording_id}", response_model=None)
    async def delete_recording(
        recording_id: str, server: State, principal: Reader
    ) -> dict[str, Any] | JSONResponse:
        meta = await _visible(server, principal, recording_id)
        service = server.recordings
        if meta is None or service is None:
            return _not_found(recording_id)
        await service.delete(recording_id)
        return {"id": recording_id, "object": "realtime.recording.deleted", "deleted": True}

    @api.delete("/v1/recordings", response_model=None)
    async def delete_key_recordings(
        request: Request, server: State, principal: Reader
    ) -> dict[str, Any] | JSONResponse:
        wanted = request.query_params.get("key_id")
        if not wanted:
            return http_error(
                400, "missing_required_parameter", "Give the 'key_id' whose recordings to delete.", "key_id"
            )
        try:
            _key_filter(server, principal, wanted)
        except PermissionError:
            return http_error(
                403, "permission_denied", "This key may delete only its own recordings.", "key_id"
            )
        service: RecordingService | None = server.recordings
        deleted = await service.delete_key(wanted) if service is not None else 0
        return {"object": "realtime.recording.deleted_list", "key_id": wanted, "deleted": deleted}

    return api
