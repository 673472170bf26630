"""What a client runner is given and what it reports back (JSON both ways), and the paced
microphone every runner feeds its client from."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE = 24000
FRAME_MS = 20


@dataclass
class TurnSpec:
    """One spoken turn for a client to take part in."""

    http_base: str
    """The server's REST base, e.g. ``http://127.0.0.1:8000/v1``."""
    ws_base: str
    """The Realtime WebSocket endpoint, e.g. ``ws://127.0.0.1:8000/v1/realtime``."""
    api_key: str
    speech_path: str
    """24 kHz mono pcm16 (raw, little-endian): what the caller says."""
    instructions: str
    model: str = "gpt-realtime"
    endpoint: str = ""
    """The server's root URL, e.g. ``http://127.0.0.1:8000`` (what Azure clients are given)."""
    trailing_silence_s: float = 3.0
    """Silence streamed after the speech, so the server's VAD ends the turn."""
    timeout_s: float = 180.0

    @classmethod
    def load(cls, path: str | Path) -> TurnSpec:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class TurnResult:
    """What the client's own API delivered, in its own terms."""

    client: str
    transcript: str = ""
    """The caller's speech as the client's final transcription event gave it."""
    interim_transcripts: list[str] = field(default_factory=list)
    answer_text: str = ""
    """The answer's text (the transcript of its audio) as the client assembled it."""
    audio_path: str = ""
    """The answer's audio as the client delivered it: 24 kHz mono pcm16, raw."""
    audio_frames: int = 0
    audio_sample_rate: int = 0
    errors: list[str] = field(default_factory=list)
    """Errors the client reported (its error frames, events or callbacks)."""
    events: list[str] = field(default_factory=list)
    """The client's own event stream in order, where it has one (repeats collapsed)."""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    """Function tools the client ran: ``name``, ``arguments`` (JSON) and ``output``."""

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))


def speech(spec: TurnSpec) -> bytes:
    """The caller's audio followed by the trailing silence."""
    pcm = Path(spec.speech_path).read_bytes()
    return pcm + b"\x00\x00" * int(spec.trailing_silence_s * SAMPLE_RATE)


async def microphone(pcm: bytes, frame_ms: int = FRAME_MS) -> AsyncIterator[bytes]:
    """``pcm`` in ``frame_ms`` frames at real-time pace (by the clock, not by sleeps that add up)."""
    size = SAMPLE_RATE * frame_ms // 1000 * 2
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), size)):
        delay = start + index * frame_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield pcm[offset : offset + size]
