"""A caller that streams real speech at real-time pace over a WebSocket and records events."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tests.support import validate_server_event


@dataclass
class Received:
    event: dict[str, Any]
    at: float


@dataclass
class CallerRun:
    """Everything one streamed utterance produced, with arrival times (monotonic seconds)."""

    events: list[Received] = field(default_factory=list)
    speech_end_sent_at: float = 0.0
    audio_sent_until: float = 0.0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r.event for r in self.events if r.event["type"] == kind]

    def first_at(self, kind: str) -> float | None:
        return next((r.at for r in self.events if r.event["type"] == kind), None)


async def stream_audio(ws: Any, pcm24: np.ndarray, *, chunk_ms: int = 40, realtime: bool = True) -> float:
    """Send ``pcm24`` as appends paced at real time; returns when the last chunk was sent."""
    step = 24 * chunk_ms
    start = time.monotonic()
    sent = 0
    for index in range(0, len(pcm24), step):
        chunk = pcm24[index : index + step]
        await ws.send(
            json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk.tobytes()).decode()}
            )
        )
        sent += len(chunk)
        if realtime:
            delay = start + sent / 24000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    return time.monotonic()


async def collect(ws: Any, run: CallerRun, until: str, timeout: float = 120.0) -> None:
    """Receive (and strictly validate) events into ``run`` until one of type ``until``."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        event = validate_server_event(raw)
        run.events.append(Received(event, time.monotonic()))
        if event["type"] == until:
            return


async def listen_to_the_end(run: CallerRun) -> None:
    """Wait until a client playing the answer in real time from its first audio delta would
    have finished: a caller who lets the answer end before speaking again."""
    first = run.first_at("response.output_audio.delta")
    if first is None:
        return
    seconds = len(output_audio(run)) / 2 / 24000
    delay = first + seconds - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def output_audio(run: CallerRun, response_id: str | None = None) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"])
        for e in run.of("response.output_audio.delta")
        if response_id is None or e["response_id"] == response_id
    )
