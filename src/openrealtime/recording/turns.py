"""The caller's turns of a recorded session, read back from its journal (pure).

A turn is what the server's turn detection delimited (``speech_started`` … ``speech_stopped``)
with everything that answered it until the caller spoke again: the input transcript, the
responses, the answer's transcript, the tool calls with the results the client sent back, and
the timings a replay compares against. Times are relative to the end of the caller's speech,
placed on the server's clock through the caller audio's arrival times, the way the benchmark
places them on the client's.

The same reader builds a bundle's manifest (``bundle.py``) and feeds ``openrealtime replay``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .journal import RATE

__all__ = ["JournalReader", "RecordedTurn", "Segment", "ToolCall", "read_journal"]

OUTPUT_ONLY_SESSION_FIELDS = ("id", "object", "expires_at", "client_secret")


@dataclass
class ToolCall:
    """A function call of the model and what the client answered."""

    name: str
    arguments: str
    call_id: str
    output: str | None = None
    followup: dict[str, Any] | None = None
    """The client's ``response.create`` sent right after the call's output, if any."""


@dataclass
class RecordedTurn:
    index: int
    item_id: str | None
    audio_start_ms: int
    audio_end_ms: int | None = None
    transcript: str | None = None
    speech_end_at: float | None = None
    """When the server had the caller's last sample of speech (epoch s)."""
    speech_stopped_at: float | None = None
    transcript_at: float | None = None
    response_ids: list[str] = field(default_factory=list)
    answer_id: str | None = None
    answer: str | None = None
    status: str | None = None
    first_audio_at: float | None = None
    """When the answer's first audio went out (a delta) or began playing (WebRTC/SIP)."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    """The server's stage timings of the answer (the ``turn timings`` record)."""

    def _after_end(self, at: float | None) -> float | None:
        if at is None or self.speech_end_at is None:
            return None
        return round((at - self.speech_end_at) * 1000, 1)

    @property
    def voice_to_voice_ms(self) -> float | None:
        return self._after_end(self.first_audio_at)

    @property
    def speech_stopped_ms(self) -> float | None:
        return self._after_end(self.speech_stopped_at)

    @property
    def transcript_ms(self) -> float | None:
        return self._after_end(self.transcript_at)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            voice_to_voice_ms=self.voice_to_voice_ms,
            speech_stopped_ms=self.speech_stopped_ms,
            transcript_ms=self.transcript_ms,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedTurn:
        known = {name for name in cls.__dataclass_fields__}
        values = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        values["tool_calls"] = [ToolCall(**call) for call in data.get("tool_calls") or []]
        return cls(**values)


@dataclass
class Segment:
    """A run of assistant audio in the track, of one item."""

    response_id: str
    item_id: str
    offset: int
    samples: int
    at: float


@dataclass
class _Response:
    id: str
    created_at: float
    status: str | None = None
    first_audio_at: float | None = None
    playback_at: float | None = None
    answer: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    has_message: bool = False


class JournalReader:
    """Feed it the journal's records in order (``add``), then read what it found."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.session: dict[str, Any] | None = None
        """The effective session configuration in force when the caller first spoke."""
        self.session_at_end: dict[str, Any] | None = None
        self.turns: list[RecordedTurn] = []
        self.segments: list[Segment] = []
        self.truncations: dict[str, int] = {}
        """item id -> ``audio_end_ms`` (how much of it was played)."""
        self.notes: list[dict[str, Any]] = []
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.records = 0
        self.caller_samples = 0
        self._spans: list[tuple[int, int, float]] = []  # caller track: offset, samples, arrival
        self._responses: dict[str, _Response] = {}
        self._response_turn: dict[str, RecordedTurn] = {}
        self._timings: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, ToolCall] = {}
        self._last_output: ToolCall | None = None
        self._item_turn: dict[str, RecordedTurn] = {}

    # ------------------------------------------------------------------ feeding

    def add(self, record: Mapping[str, Any]) -> None:
        self.records += 1
        at = float(record.get("t") or 0.0)
        if self.started_at is None:
            self.started_at = at
        self.ended_at = at
        direction = record.get("dir")
        if direction == "server":
            self._server(record.get("event") or {}, at)
        elif direction == "client":
            self._client(record.get("event") or {}, at)
        elif direction == "audio":
            self._audio(record, at)
        elif direction == "note":
            self._note(str(record.get("kind")), record.get("data") or {}, at)

    def _audio(self, record: Mapping[str, Any], at: float) -> None:
        samples = int(record.get("samples") or 0)
        if record.get("track") == "caller":
            self._caller(record.get("offset"), samples, at)
        elif record.get("track") == "assistant":
            response_id = str(record.get("response_id") or "")
            self._first_audio(response_id, at)
            if "offset" in record:
                self._segment(
                    response_id, str(record.get("item_id") or ""), int(record["offset"]), samples, at
                )

    def _caller(self, offset: Any, samples: int, at: float) -> None:
        start = int(offset) if isinstance(offset, int) else self.caller_samples
        if samples > 0:
            self._spans.append((start, samples, at))
        self.caller_samples = max(self.caller_samples, start + samples)

    def _segment(self, response_id: str, item_id: str, offset: int, samples: int, at: float) -> None:
        last = self.segments[-1] if self.segments else None
        if last is not None and last.item_id == item_id and last.offset + last.samples == offset:
            last.samples += samples
        else:
            self.segments.append(Segment(response_id, item_id, offset, samples, at))

    def _first_audio(self, response_id: str, at: float) -> None:
        response = self._responses.get(response_id)
        if response is not None and response.first_audio_at is None:
            response.first_audio_at = at

    def _note(self, kind: str, data: Mapping[str, Any], at: float) -> None:
        if kind == "session_started":
            self.info = dict(data)
            config = data.get("config")
            if isinstance(config, Mapping) and self.session is None:
                self.session = dict(config)
        elif kind == "turn_timings":
            response_id = data.get("response_id")
            if isinstance(response_id, str):
                self._timings[response_id] = dict(data)
        elif kind == "truncated":
            self._truncate(data.get("item_id"), data.get("audio_end_ms"))
        else:
            self.notes.append({"t": at, "kind": kind, "data": dict(data)})

    def _truncate(self, item_id: Any, audio_end_ms: Any) -> None:
        if isinstance(item_id, str) and isinstance(audio_end_ms, int | float):
            known = self.truncations.get(item_id)
            end = max(0, int(audio_end_ms))
            self.truncations[item_id] = end if known is None else min(known, end)

    def _client(self, event: Mapping[str, Any], at: float) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            ref = event.get("audio")
            if isinstance(ref, Mapping):
                self._caller(ref.get("offset"), int(ref.get("samples") or 0), at)
            return
        if kind == "conversation.item.create":
            item = event.get("item") or {}
            if isinstance(item, Mapping) and item.get("type") == "function_call_output":
                call_id = str(item.get("call_id") or "")
                call = self._calls.get(call_id)
                if call is not None:
                    call.output = str(item.get("output") or "")
                    self._last_output = call
                return
        elif kind == "response.create" and self._last_output is not None:
            self._last_output.followup = dict(event)
        elif kind == "conversation.item.truncate":
            self._truncate(event.get("item_id"), event.get("audio_end_ms"))
        self._last_output = None

    def _server(self, event: Mapping[str, Any], at: float) -> None:
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, Mapping):
                self.session_at_end = dict(session)
                if not self.turns:
                    self.session = dict(session)
        elif kind == "input_audio_buffer.speech_started":
            turn = RecordedTurn(
                index=len(self.turns),
                item_id=event.get("item_id"),
                audio_start_ms=int(event.get("audio_start_ms") or 0),
            )
            self.turns.append(turn)
            if turn.item_id:
                self._item_turn[str(turn.item_id)] = turn
        elif kind == "input_audio_buffer.speech_stopped":
            stopped = self._item_turn.get(str(event.get("item_id"))) or (
                self.turns[-1] if self.turns else None
            )
            if stopped is not None and stopped.audio_end_ms is None:
                stopped.audio_end_ms = int(event.get("audio_end_ms") or 0)
                stopped.speech_stopped_at = at
                stopped.speech_end_at = self._arrival(stopped.audio_end_ms)
        elif kind == "conversation.item.input_audio_transcription.completed":
            heard = self._item_turn.get(str(event.get("item_id")))
            if heard is not None:
                heard.transcript = " ".join(
                    filter(None, [heard.transcript, str(event.get("transcript") or "")])
                )
                heard.transcript_at = heard.transcript_at or at
        elif kind == "response.created":
            response = event.get("response") or {}
            rid = str(response.get("id") or "")
            self._responses[rid] = _Response(rid, at)
            current = self.turns[-1] if self.turns else None
            if current is not None and current.audio_end_ms is not None:
                current.response_ids.append(rid)
                self._response_turn[rid] = current
        elif kind == "response.output_audio.delta":
            rid = str(event.get("response_id") or "")
            self._first_audio(rid, at)
            ref = event.get("delta")
            if isinstance(ref, Mapping) and "offset" in ref:
                self._segment(
                    rid, str(event.get("item_id") or ""), int(ref["offset"]), int(ref["samples"]), at
                )
        elif kind == "output_audio_buffer.started":
            response = self._responses.get(str(event.get("response_id") or ""))
            if response is not None and response.playback_at is None:
                response.playback_at = at
        elif kind == "conversation.item.truncated":
            self._truncate(event.get("item_id"), event.get("audio_end_ms"))
        elif kind == "response.done":
            self._response_done(event.get("response") or {})

    def _response_done(self, response: Mapping[str, Any]) -> None:
        rid = str(response.get("id") or "")
        state = self._responses.setdefault(rid, _Response(rid, 0.0))
        state.status = str(response.get("status") or "")
        for item in response.get("output") or []:
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "function_call":
                call = ToolCall(
                    name=str(item.get("name") or ""),
                    arguments=str(item.get("arguments") or ""),
                    call_id=str(item.get("call_id") or ""),
                )
                state.calls.append(call)
                self._calls[call.call_id] = call
            elif item.get("type") == "message":
                state.has_message = True
                for part in item.get("content") or []:
                    if isinstance(part, Mapping):
                        text = part.get("transcript") or part.get("text")
                        if isinstance(text, str) and text.strip():
                            state.answer.append(text.strip())

    def _arrival(self, audio_end_ms: int) -> float | None:
        """When the caller's sample at ``audio_end_ms`` reached the server: the arrival of the
        chunk holding it, less the audio after it in that chunk."""
        sample = audio_end_ms * RATE // 1000
        for offset, samples, at in reversed(self._spans):
            if offset <= sample <= offset + samples:
                return at - (offset + samples - sample) / RATE
            if offset + samples < sample:
                break
        return None

    # ------------------------------------------------------------------ results

    def finish(self) -> list[RecordedTurn]:
        """The turns, each with its answer chosen: the first response after the end of speech
        that was not cancelled and did more than call functions (else its last response)."""
        for turn in self.turns:
            responses = [self._responses[r] for r in turn.response_ids if r in self._responses]
            turn.tool_calls = [call for response in responses for call in response.calls]
            answer = next(
                (
                    r
                    for r in responses
                    if r.status not in (None, "cancelled") and (r.has_message or not r.calls)
                ),
                responses[-1] if responses else None,
            )
            if answer is None:
                continue
            turn.answer_id = answer.id
            turn.status = answer.status
            turn.answer = " ".join(answer.answer) or None
            turn.first_audio_at = answer.playback_at or answer.first_audio_at
            turn.timings = self._timings.get(answer.id, {})
        return self.turns

    def played(self) -> list[tuple[int, int]]:
        """``(offset, samples)`` ranges of the assistant track that were played: each item's
        audio up to its truncation point (all of it when it was not truncated)."""
        left: dict[str, int | None] = {item: ms * RATE // 1000 for item, ms in self.truncations.items()}
        ranges: list[tuple[int, int]] = []
        for segment in self.segments:
            budget = left.get(segment.item_id)
            keep = segment.samples if budget is None else max(0, min(segment.samples, budget))
            if budget is not None:
                left[segment.item_id] = budget - keep
            if keep:
                ranges.append((segment.offset, keep))
        return ranges


def replay_session(session: Mapping[str, Any] | None) -> dict[str, Any]:
    """A recorded effective session configuration as a ``session.update`` body (output-only
    fields dropped)."""
    body = {k: copy.deepcopy(v) for k, v in (session or {}).items() if k not in OUTPUT_ONLY_SESSION_FIELDS}
    body.setdefault("type", "realtime")
    return body


def read_journal(records: Iterable[Mapping[str, Any]]) -> JournalReader:
    reader = JournalReader()
    for record in records:
        reader.add(record)
    reader.finish()
    return reader
