"""What one session's recording holds, as records and audio tracks (pure: no I/O, no clock).

A recording is a journal of JSON records plus, in ``full`` mode, two audio tracks of 24 kHz
mono pcm16: ``caller`` (every sample of input audio, in arrival order, so the protocol's
``audio_start_ms``/``audio_end_ms`` index it directly) and ``assistant`` (the assistant's speech
as produced, in order; what was actually played follows from the truncation records). Records:

* ``{"t", "dir": "client"|"server", "event"}``: every event with its time (epoch seconds). An
  audio payload (``input_audio_buffer.append``'s ``audio``, ``response.output_audio.delta``'s
  ``delta``) is replaced by a reference into its track, ``{"track", "offset", "samples"}``
  (24 kHz sample units), or in ``metadata`` mode by ``{"omitted": true, "samples": n}``.
* ``{"t", "dir": "audio", "track", "offset", "samples", ...}``: audio that reached a track
  without an event (WebRTC and SIP media): caller spans (``t0`` = first frame) and assistant
  pieces (with ``response_id``/``item_id``).
* ``{"t", "dir": "note", "kind", "data"}``: ``session_started`` (ids, mode, config),
  ``turn_timings`` (a response's stage timings), ``truncated`` (``item_id``,
  ``audio_end_ms``: what was played), ``disclosure``, ``audio_dropped``, ``session_ended``.
"""

from __future__ import annotations

import binascii
import json
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..audio import formats

__all__ = ["RATE", "Mode", "SessionJournal", "audio_format_of"]

RATE = formats.INTERNAL_RATE
Mode = Literal["metadata", "full"]


def audio_format_of(session: Mapping[str, Any], direction: Literal["input", "output"]) -> str | None:
    """The wire format type of a session object's input or output audio, if it names one."""
    audio = session.get("audio")
    if not isinstance(audio, Mapping):
        return None
    side = audio.get(direction)
    if not isinstance(side, Mapping):
        return None
    fmt = side.get("format")
    if isinstance(fmt, Mapping) and isinstance(fmt.get("type"), str):
        return str(fmt["type"])
    return fmt if isinstance(fmt, str) else None


class _Track:
    """One audio track: its length so far and what is waiting to be written."""

    def __init__(self) -> None:
        self.samples = 0
        self.pending = bytearray()
        self.decoder: formats.StreamDecoder | None = None

    def add(self, pcm: bytes) -> tuple[int, int]:
        offset = self.samples
        count = len(pcm) // 2
        self.pending += pcm[: count * 2]
        self.samples += count
        return offset, count

    def decode(self, fmt: str, raw: bytes) -> bytes:
        if self.decoder is None or self.decoder.format != formats.format_type(fmt):
            self.decoder = formats.StreamDecoder(fmt)
        return self.decoder.decode(raw).astype("<i2", copy=False).tobytes()


class SessionJournal:
    """Turns what an observer sees of a session into journal lines and track audio.

    The writer calls ``take()`` to collect what accumulated since the last call. Nothing here
    raises on odd input: a payload that cannot be decoded is recorded as ``invalid``.
    """

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.caller = _Track()
        self.assistant = _Track()
        self.input_format = "audio/pcm"
        self.output_format = "audio/pcm"
        self._lines = bytearray()
        self._caller_span: dict[str, Any] | None = None
        self.records = 0

    # ------------------------------------------------------------------ records

    def _write(self, record: dict[str, Any]) -> None:
        self._lines += json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        self._lines += b"\n"
        self.records += 1

    def note(self, kind: str, data: Mapping[str, Any], at: float) -> None:
        self._close_caller_span()
        self._write({"t": at, "dir": "note", "kind": kind, "data": dict(data)})

    def client_event(
        self, event: Mapping[str, Any], at: float, pcm: bytes | None = None, *, accepted: bool = True
    ) -> None:
        """``accepted=False``: the server refused the event (rate limit, full buffer, bad
        audio), so its audio stays out of the caller track."""
        self._close_caller_span()
        record = dict(event)
        kind = record.get("type")
        if kind == "input_audio_buffer.append" and not accepted:
            payload = record.get("audio")
            record["audio"] = {"refused": True, "chars": len(payload) if isinstance(payload, str) else 0}
        elif kind == "input_audio_buffer.append" and ("audio" in record or pcm is not None):
            record["audio"] = self._audio_ref(self.caller, record.get("audio"), self.input_format, pcm)
        elif kind == "conversation.item.create":
            record["item"] = _strip_item_audio(record.get("item"), keep=self.mode == "full")
        self._write({"t": at, "dir": "client", "event": record})

    def server_event(self, event: Mapping[str, Any], at: float, pcm: bytes | None = None) -> None:
        self._close_caller_span()
        record = dict(event)
        kind = record.get("type")
        if kind in ("session.created", "session.updated"):
            self._follow_formats(record.get("session"))
        elif kind == "response.output_audio.delta" and ("delta" in record or pcm is not None):
            record["delta"] = self._audio_ref(self.assistant, record.get("delta"), self.output_format, pcm)
        elif kind in ("conversation.item.retrieved", "conversation.item.added", "conversation.item.done"):
            record["item"] = _strip_item_audio(record.get("item"), keep=False)
        self._write({"t": at, "dir": "server", "event": record})

    # ------------------------------------------------------------------ media audio

    def caller_audio(self, pcm: bytes, at: float) -> None:
        """Caller audio that came without an event (WebRTC/SIP frames): coalesced into spans."""
        if self.mode != "full":
            span = self._caller_span
            if span is None:
                self._caller_span = {"t0": at, "t": at, "omitted": True, "samples": len(pcm) // 2}
            else:
                span["t"] = at
                span["samples"] += len(pcm) // 2
            return
        offset, count = self.caller.add(pcm)
        span = self._caller_span
        if span is not None and span["offset"] + span["samples"] == offset:
            span["samples"] += count
            span["t"] = at
        else:
            self._close_caller_span()
            self._caller_span = {"t0": at, "t": at, "offset": offset, "samples": count}

    def assistant_audio(self, response_id: str, item_id: str, pcm: bytes, at: float) -> None:
        """Assistant speech that went out without an event (WebRTC/SIP playout)."""
        self._close_caller_span()
        record: dict[str, Any] = {"t": at, "dir": "audio", "track": "assistant"}
        if self.mode == "full":
            offset, count = self.assistant.add(pcm)
            record.update(offset=offset, samples=count)
        else:
            record.update(omitted=True, samples=len(pcm) // 2)
        record.update(response_id=response_id, item_id=item_id)
        self._write(record)

    def _close_caller_span(self) -> None:
        span = self._caller_span
        if span is None:
            return
        self._caller_span = None
        record: dict[str, Any] = {"t": span.pop("t"), "dir": "audio", "track": "caller", **span}
        self._write(record)

    # ------------------------------------------------------------------ output

    def take(self) -> tuple[bytes, bytes, bytes]:
        """Journal lines, caller audio and assistant audio accumulated since the last call."""
        self._close_caller_span()
        lines, caller, assistant = (
            bytes(self._lines),
            bytes(self.caller.pending),
            bytes(self.assistant.pending),
        )
        self._lines.clear()
        self.caller.pending.clear()
        self.assistant.pending.clear()
        return lines, caller, assistant

    @property
    def pending_bytes(self) -> int:
        return len(self._lines) + len(self.caller.pending) + len(self.assistant.pending)

    # ------------------------------------------------------------------ details

    def _follow_formats(self, session: Any) -> None:
        if not isinstance(session, Mapping):
            return
        directions: tuple[Literal["input", "output"], ...] = ("input", "output")
        for direction in directions:
            fmt = audio_format_of(session, direction)
            if fmt is None:
                continue
            try:
                normalized = formats.format_type(fmt)
            except formats.AudioFormatError:
                continue
            if direction == "input":
                self.input_format = normalized
            else:
                self.output_format = normalized

    def _audio_ref(self, track: _Track, payload: Any, fmt: str, pcm: bytes | None) -> dict[str, Any]:
        if pcm is None:
            if not isinstance(payload, str):
                return {"invalid": True}
            try:  # what the server rejects as invalid never reaches the track
                raw = binascii.a2b_base64(payload, strict_mode=True)
            except (binascii.Error, ValueError):
                return {"invalid": True, "chars": len(payload)}
            if len(payload) % 4 or (fmt == "audio/pcm" and len(raw) % 2):
                return {"invalid": True, "chars": len(payload)}
            if self.mode != "full":
                samples = len(raw) // 2 if fmt == "audio/pcm" else len(raw) * RATE // 8000
                return {"omitted": True, "samples": samples}
            if fmt == "audio/pcm":
                pcm = raw if sys.byteorder == "little" else track.decode(fmt, raw)
            else:
                try:
                    pcm = track.decode(fmt, raw)
                except (formats.AudioFormatError, ValueError):
                    return {"invalid": True, "chars": len(payload)}
        elif self.mode != "full":
            return {"omitted": True, "samples": len(pcm) // 2}
        track_name = "caller" if track is self.caller else "assistant"
        offset, count = track.add(pcm)
        return {"track": track_name, "offset": offset, "samples": count}


def _strip_item_audio(item: Any, *, keep: bool) -> Any:
    """An item with base64 audio in its content replaced by its size (``keep``: client items
    in ``full`` mode keep their audio; it is in no track)."""
    if keep or not isinstance(item, Mapping):
        return item
    content = item.get("content")
    if not isinstance(content, list):
        return item
    stripped: list[Any] = []
    changed = False
    for part in content:
        if isinstance(part, Mapping) and isinstance(part.get("audio"), str):
            part = {**part, "audio": {"omitted": True, "chars": len(part["audio"])}}
            changed = True
        stripped.append(part)
    return {**item, "content": stripped} if changed else item


def pcm_bytes(pcm: bytes | np.ndarray[Any, Any]) -> bytes:
    """24 kHz int16 audio as little-endian bytes (a copy: safe to hand to another thread)."""
    if isinstance(pcm, np.ndarray):
        return np.asarray(pcm, dtype="<i2").tobytes()
    return bytes(pcm)
