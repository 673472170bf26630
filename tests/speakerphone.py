"""A WebSocket client without echo cancellation: it plays the answers it receives and its
microphone hears them back, late and quieter, through a simulated loudspeaker and room, over
the room tone of a real recording; real speech can be mixed in as the caller talking.

Everything runs on the client's own sample clock (24 kHz): every 20 ms tick takes the next
20 ms of the answers queued for playback (in order, as a client's player does), adds their echo
to the microphone ``delay_ms`` later, and sends the microphone as ``input_audio_buffer.append``.
Ticks are paced at real time, so the server sees a live caller; a late tick sends its audio a
little late, as a real client would, without changing what the microphone heard. Playback
stops when ``speech_started`` arrives (what OpenAI's clients do on barge-in).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openrealtime.audio.resample import resample
from openrealtime.benchmark.echo_path import rms_db, room_impulse_response
from tests.speech_audio import REFERENCE_EDGES, load_clip, room_tone
from tests.support import validate_server_event

RATE = 24_000
TICK = 480  # 20 ms


def clip24(name: str) -> np.ndarray:
    """A shared clip as 24 kHz float (full scale 1.0)."""
    return np.asarray(resample((load_clip(name) / 32768.0).astype(np.float32), 16_000, RATE), np.float32)


@dataclass
class Talk:
    """Caller speech mixed into the microphone at ``at`` (client samples), at ``level_db``."""

    audio: np.ndarray
    at: int
    onset: int
    """Client sample where the speech really begins (its annotated onset)."""


@dataclass
class Speakerphone:
    ws: Any
    delay_ms: float
    level_db: float = -6.0
    seed: int = 1
    events: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    """Every server event with the client sample position when it arrived."""

    def __post_init__(self) -> None:
        self.ir = room_impulse_response(RATE, rt60_s=0.25, seed=self.seed).astype(np.float64)
        probe = clip24("librivox-0880").astype(np.float64)
        wet = np.convolve(probe, self.ir)[: probe.size]
        self.gain = 10 ** ((rms_db(probe) + self.level_db - rms_db(wet)) / 20)
        self.delay = round(self.delay_ms * RATE / 1000)
        tone = room_tone(load_clip("librivox-0880"), 16_000 * 90, self.seed) / 32768.0
        self.tone = np.asarray(resample(tone.astype(np.float32), 16_000, RATE), np.float32)
        self.queue: list[np.ndarray] = []
        self.speaker = np.zeros(0, dtype=np.float64)
        self.position = 0
        self.talks: list[Talk] = []
        self.played_samples = 0

    # ------------------------------------------------------------------ what happened

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e, _ in self.events if e["type"] == kind]

    def at(self, kind: str) -> int | None:
        return next((pos for e, pos in self.events if e["type"] == kind), None)

    @property
    def playing(self) -> bool:
        return any(chunk.size for chunk in self.queue)

    def playback_level_db(self) -> float:
        return rms_db(self.speaker[-RATE * 3 :])

    def talk(self, name: str, level_db: float) -> Talk:
        """Mix clip ``name`` into the microphone from the next tick, at ``level_db`` dBFS."""
        return self.say(clip24(name), level_db, onset_ms=REFERENCE_EDGES[name][0])

    def say(self, audio: np.ndarray, level_db: float, onset_ms: float = 0.0) -> Talk:
        """Mix 24 kHz ``audio`` into the microphone from the next tick, at ``level_db`` dBFS."""
        scaled = (audio * 10 ** ((level_db - rms_db(audio)) / 20)).astype(np.float32)
        talk = Talk(scaled, self.position, self.position + round(onset_ms * RATE / 1000))
        self.talks.append(talk)
        return talk

    # ------------------------------------------------------------------ running

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def run_until(self, done: Any, limit_s: float = 120.0) -> None:
        """Tick at real time until ``done(self)`` is true (checked every tick)."""
        receiver = asyncio.create_task(self._receive())
        start = time.monotonic()
        sent_at_start = self.position
        try:
            while not done(self):
                if self.position - sent_at_start > limit_s * RATE:
                    raise AssertionError("the session did not get there in time")
                await self._tick()
                ahead = start + (self.position - sent_at_start) / RATE - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                else:
                    await asyncio.sleep(0)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _receive(self) -> None:
        while True:
            event = validate_server_event(await self.ws.recv())
            self.events.append((event, self.position))
            if event["type"] == "response.output_audio.delta":
                pcm = np.frombuffer(base64.b64decode(event["delta"]), dtype="<i2")
                self.queue.append(pcm.astype(np.float64) / 32768.0)
            elif event["type"] == "input_audio_buffer.speech_started":
                self.queue.clear()  # barge-in: the client stops playing the answer

    def _play(self) -> np.ndarray:
        out = np.zeros(TICK, dtype=np.float64)
        filled = 0
        while filled < TICK and self.queue:
            head = self.queue[0]
            take = min(TICK - filled, head.size)
            out[filled : filled + take] = head[:take]
            filled += take
            if take == head.size:
                self.queue.pop(0)
            else:
                self.queue[0] = head[take:]
        self.played_samples += filled
        return out

    async def _tick(self) -> None:
        self.speaker = np.concatenate((self.speaker, self._play()))
        start, end = self.position, self.position + TICK
        segment = _span(self.speaker, start - self.delay - self.ir.size + 1, end - self.delay)
        echo = np.convolve(segment, self.ir, mode="valid") * self.gain
        mic = self.tone[start % self.tone.size : start % self.tone.size + TICK].astype(np.float64)
        if mic.size < TICK:
            mic = np.concatenate((mic, self.tone[: TICK - mic.size]))
        mic = mic + echo
        for talk in self.talks:
            a, b = max(start, talk.at), min(end, talk.at + talk.audio.size)
            if b > a:
                mic[a - start : b - start] += talk.audio[a - talk.at : b - talk.at]
        pcm = np.clip(np.rint(mic * 32768.0), -32768, 32767).astype("<i2")
        await self.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()}
        )
        self.position = end


def _span(signal: np.ndarray, start: int, end: int) -> np.ndarray:
    """``signal[start:end]`` with zeros where it has no samples (before 0, after its end)."""
    out = np.zeros(end - start, dtype=np.float64)
    a, b = max(start, 0), min(end, signal.size)
    if b > a:
        out[a - start : b - start] = signal[a:b]
    return out
