"""One benchmark caller: a WebSocket voice session that speaks several turns in real time.

The caller behaves like a phone: it sends audio continuously at real-time pace (speech, then
room tone while it listens), "plays" each answer in real time from its first audio delta, and
speaks its next turn only after the answer has been played and a short pause. Per turn it
records when the user's speech ended (the instant the last speech sample was captured), when
``speech_stopped``, the final transcript and the first audio delta arrived, and the playback
underruns of the answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import websockets

from .audio import RATE, Utterance, room_tone
from .server import BenchServer
from .stats import PlaybackClock

__all__ = ["CallerSettings", "ToolAnswers", "TurnResult", "run_session", "turn_detection_config"]

ToolAnswers = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""Given the function calls of a finished response (its ``function_call`` items), the client
events that answer them (outputs, then ``response.create``)."""


@dataclass(frozen=True)
class CallerSettings:
    turns: int = 3
    silence_ms: int = 300
    """``server_vad`` silence_duration_ms the session asks for."""
    turn_detection: str = "server_vad"
    """``server_vad`` or ``semantic_vad``."""
    eagerness: str = "auto"
    """``semantic_vad`` eagerness: low, medium, high or auto."""
    chunk_ms: int = 40
    lead_ms: int = 500
    """Room tone before each utterance."""
    pause_ms: int = 300
    """Room tone after an answer has been played, before the next utterance."""
    turn_timeout_s: float = 60.0
    """Longest wait for an answer after the end of speech."""


@dataclass
class TurnResult:
    """One turn as the client saw it; times in ms after the end of the user's speech."""

    session: int
    turn: int
    utterance: str
    voice_to_voice_ms: float | None = None
    speech_stopped_ms: float | None = None
    transcript_ms: float | None = None
    response_id: str | None = None
    status: str | None = None
    responses: int = 0
    underruns: int = 0
    underrun_gap_ms: float = 0.0
    answer_audio_s: float = 0.0
    transcript: str | None = None
    reference: str | None = None
    answer: str | None = None
    """The answer's transcript (or text)."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Function calls of the turn's responses: ``{"name", "arguments"}``."""
    error: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    """The server's ``turn timings`` record of the response, when its log is readable."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times to 0.1 ms."""
        return {
            key: round(value, 1) if isinstance(value, float) else value for key, value in asdict(self).items()
        }


class _Turn:
    """What the receiver has seen of the current turn (arrival times, monotonic seconds)."""

    def __init__(self) -> None:
        self.speech_end_at: float | None = None
        self.stopped_at: list[float] = []
        self.transcripts: list[tuple[float, str]] = []
        self.created: list[str] = []
        self.deltas: dict[str, list[tuple[float, float]]] = {}
        self.answer: tuple[str, str | None] | None = None
        self.answer_text = ""
        self.calls: list[dict[str, Any]] = []
        self.answered = asyncio.Event()
        self.errors: list[str] = []

    def on_event(self, event: dict[str, Any], at: float) -> None:
        kind = event.get("type")
        if kind == "error":
            self.errors.append(str((event.get("error") or {}).get("message", "error event")))
        if kind == "input_audio_buffer.speech_stopped":
            self.stopped_at.append(at)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.transcripts.append((at, str(event.get("transcript", ""))))
        elif kind == "response.created":
            self.created.append(str(event["response"]["id"]))
        elif kind == "response.output_audio.delta":
            samples = len(base64.b64decode(event.get("delta", ""))) // 2
            self.deltas.setdefault(str(event.get("response_id")), []).append((at, samples / RATE))
        elif kind == "response.done" and self.answer is None and self.speech_end_at is not None:
            response = event["response"]
            if response.get("status") != "cancelled" and at >= self.speech_end_at:
                output = [item for item in response.get("output") or [] if isinstance(item, dict)]
                calls = [item for item in output if item.get("type") == "function_call"]
                self.calls.extend({"name": c.get("name"), "arguments": c.get("arguments")} for c in calls)
                messages = [item for item in output if item.get("type") == "message"]
                if calls and not messages:
                    return  # the client answers the calls; the next response is the answer
                self.answer = (str(response["id"]), response.get("status"))
                self.answer_text = " ".join(
                    str(part.get("transcript") or part.get("text") or "").strip()
                    for item in messages
                    for part in item.get("content") or []
                    if isinstance(part, dict)
                ).strip()
                self.answered.set()

    def playback(self) -> PlaybackClock:
        clock = PlaybackClock()
        if self.answer is not None:
            for arrival, duration in self.deltas.get(self.answer[0], []):
                clock.add(arrival, duration)
        return clock

    def result(self, base: TurnResult) -> TurnResult:
        end = self.speech_end_at
        assert end is not None

        def after_end(times: list[float]) -> float | None:
            later = [t for t in times if t >= end]
            return (later[0] - end) * 1000 if later else None

        base.responses = len(self.created)
        base.tool_calls = list(self.calls)
        base.speech_stopped_ms = after_end(self.stopped_at)
        base.transcript_ms = after_end([t for t, _ in self.transcripts])
        base.transcript = " ".join(text for _, text in self.transcripts).strip() or None
        if self.answer is not None:
            base.response_id, base.status = self.answer
            base.answer = self.answer_text or None
            deltas = self.deltas.get(base.response_id, [])
            if deltas:
                base.voice_to_voice_ms = (deltas[0][0] - end) * 1000
            clock = self.playback()
            base.underruns = clock.underruns
            base.underrun_gap_ms = clock.gap_s * 1000
            base.answer_audio_s = clock.played_s
        return base


class _Line:
    """The caller's microphone: sends audio chunks at the pace they would be captured."""

    def __init__(self, ws: Any, chunk_ms: int) -> None:
        self.ws = ws
        self.chunk = RATE * chunk_ms // 1000
        self.start = time.monotonic()
        self.sent = 0

    async def send(self, pcm: npt.NDArray[np.int16], mark_sample: int | None = None) -> float | None:
        """Send ``pcm`` in real time; returns when sample ``mark_sample`` of it was captured."""
        marked: float | None = None
        for index in range(0, pcm.size, self.chunk):
            piece = pcm[index : index + self.chunk]
            delay = self.start + (self.sent + piece.size) / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            captured = time.monotonic()
            audio = base64.b64encode(piece.tobytes()).decode()
            await self.ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            self.sent += piece.size
            if mark_sample is not None and marked is None and index + piece.size >= mark_sample:
                # the chunk left when its last sample was captured; the mark was that much earlier
                marked = captured - (index + piece.size - mark_sample) / RATE
        return marked


def turn_detection_config(settings: CallerSettings) -> dict[str, Any]:
    """The session's ``audio.input.turn_detection`` for the caller's settings."""
    if settings.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": settings.eagerness}
    if settings.turn_detection == "server_vad":
        return {"type": "server_vad", "silence_duration_ms": settings.silence_ms}
    raise ValueError(f"turn detection must be server_vad or semantic_vad, got {settings.turn_detection!r}")


def _session_update(settings: CallerSettings, session: Mapping[str, Any] | None = None) -> str:
    if session is not None:
        return json.dumps({"type": "session.update", "session": dict(session)})
    return json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": turn_detection_config(settings),
                    }
                },
            },
        }
    )


async def run_session(
    server: BenchServer,
    utterances: list[Utterance],
    settings: CallerSettings,
    *,
    session: int,
    start_delay_s: float = 0.0,
    on_turn: Callable[[TurnResult], None] | None = None,
    plan: Sequence[Utterance] | None = None,
    session_config: Mapping[str, Any] | None = None,
    tools: ToolAnswers | None = None,
) -> list[TurnResult]:
    """Speak ``settings.turns`` turns in one session. Session ``i`` speaks utterances
    ``i * turns``, ``i * turns + 1``, ... (cyclically): a level speaks every utterance equally
    often, and sessions at once mostly speak different ones.

    ``plan`` gives the utterances to speak instead (one turn each); ``session_config`` the
    ``session`` of the ``session.update`` to send (default: server VAD with ``silence_ms`` and
    Whisper transcription), which must then be accepted before the first turn; ``tools``
    answers the function calls of the responses."""
    await asyncio.sleep(start_delay_s)
    first = session * settings.turns
    if plan is None:
        plan = [utterances[(first + turn) % len(utterances)] for turn in range(settings.turns)]
    tones = {u.name: room_tone(u.pcm, RATE * 4, seed=session + 1) for u in plan}
    results: list[TurnResult] = []
    current = _Turn()

    def finish(result: TurnResult) -> None:
        results.append(result)
        if on_turn is not None:
            on_turn(result)

    headers = {"Authorization": f"Bearer {server.api_key}"}
    try:
        async with websockets.connect(server.realtime_url, additional_headers=headers, max_size=None) as ws:

            async def receive() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for raw in ws:
                        event: Any = None
                        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                            event = json.loads(raw)
                            current.on_event(event, time.monotonic())
                        if (
                            tools is not None
                            and isinstance(event, dict)
                            and event.get("type") == "response.done"
                        ):
                            await _answer_calls(ws, event, tools)

            greeting = json.loads(await asyncio.wait_for(ws.recv(), 30))
            kind = greeting.get("type")
            if kind != "session.created":
                detail = (greeting.get("error") or {}).get("message", "") if kind == "error" else ""
                raise RuntimeError(f"expected session.created, got {kind} {detail}".strip())
            await ws.send(_session_update(settings, session_config))
            if session_config is not None:
                await _until_updated(ws)
            receiver = asyncio.create_task(receive())
            line = _Line(ws, settings.chunk_ms)
            try:
                for index, utterance in enumerate(plan):
                    current = _Turn()
                    tone = tones[utterance.name]
                    result = TurnResult(session, index, utterance.name, reference=utterance.transcript)
                    await line.send(tone[: RATE * settings.lead_ms // 1000])
                    end_sample = round(utterance.speech_end_ms * RATE / 1000)
                    current.speech_end_at = await line.send(utterance.pcm, mark_sample=end_sample)
                    if current.speech_end_at is None:  # annotated end beyond the file: its last sample
                        current.speech_end_at = time.monotonic()
                    await _listen(line, tone, current, settings, receiver)
                    if not current.answered.is_set():
                        result.error = "connection closed" if receiver.done() else "no answer"
                        result.error += "".join(f"; server error: {e}" for e in current.errors[:3])
                    finish(current.result(result))
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receiver
    except (OSError, websockets.WebSocketException, RuntimeError, TimeoutError) as error:
        for index in range(len(results), len(plan)):
            failed = TurnResult(session, index, plan[index].name, reference=plan[index].transcript)
            failed.error = f"{type(error).__name__}: {error}"
            finish(failed)
    return results


async def _until_updated(ws: Any, timeout_s: float = 30.0) -> None:
    """Wait for ``session.updated``; an ``error`` first means the configuration was refused."""
    deadline = time.monotonic() + timeout_s
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        if event.get("type") == "session.updated":
            return
        if event.get("type") == "error":
            message = (event.get("error") or {}).get("message", "")
            raise RuntimeError(f"the server refused the session configuration: {message}")


async def _answer_calls(ws: Any, event: dict[str, Any], tools: ToolAnswers) -> None:
    response = event.get("response") or {}
    if response.get("status") == "cancelled":
        return
    calls = [
        item
        for item in response.get("output") or []
        if isinstance(item, dict) and item.get("type") == "function_call"
    ]
    if calls:
        for answer in tools(calls):
            await ws.send(json.dumps(answer))


async def _listen(
    line: _Line,
    tone: npt.NDArray[np.int16],
    turn: _Turn,
    settings: CallerSettings,
    receiver: asyncio.Task[None],
) -> None:
    """Keep the line open with room tone until the answer has been played and a pause passed."""
    assert turn.speech_end_at is not None
    deadline = turn.speech_end_at + settings.turn_timeout_s
    position = 0
    while time.monotonic() < deadline and not receiver.done():
        if turn.answered.is_set():
            end = turn.playback().playback_end or time.monotonic()
            if time.monotonic() >= end + settings.pause_ms / 1000:
                return
        piece = tone[position : position + line.chunk]
        if piece.size < line.chunk:
            position, piece = 0, tone[: line.chunk]
        position += piece.size
        await line.send(piece)
