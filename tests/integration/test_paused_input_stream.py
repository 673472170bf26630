"""A client that stops sending while the answer plays (muted during playback, push-to-talk,
waiting for ``response.done``) and then speaks again is heard from its first word: the answer
played during the pause, not over the next utterance (real speech, Silero, Whisper, Qwen,
Piper, the openai SDK client).

The input clock counts the audio sent, so it stands still during such a pause; an answer
placed on it would overlap the caller's next words and hold them back as possible echo.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI

from openrealtime.engines.asr.wer import corpus_wer
from tests.speech_audio import LEAD_MS, PREFIX_MS, REFERENCE_EDGES, TRAIL_MS, caller_audio, transcripts
from tests.support import ServerProcess, validate_server_event

pytestmark = pytest.mark.slow

RATE = 24_000
FIRST, SECOND = "goforward", "cards-005"
KEPT_TRAIL_MS = 500
"""The first utterance's stream stops this long after its speech: the answer comes later."""
KEPT_LEAD_MS = 200
"""The second utterance's stream starts this long before its speech (push-to-talk)."""


async def speak(connection: Any, pcm: np.ndarray, chunk: int = 480) -> None:
    """Append ``pcm`` in 20 ms chunks at real-time pace."""
    start = time.monotonic()
    for index in range(0, pcm.size, chunk):
        piece = pcm[index : index + chunk]
        await connection.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(piece.tobytes()).decode()}
        )
        delay = start + (index + piece.size) / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def test_speech_after_a_paused_stream_is_heard_from_its_first_word(
    voice_server: ServerProcess,
) -> None:
    client = AsyncOpenAI(base_url=voice_server.base_url, api_key=voice_server.api_key)
    async with client.realtime.connect(model="gpt-realtime") as connection:

        async def next_event(*kinds: str) -> dict[str, Any]:
            while True:
                event = validate_server_event(await asyncio.wait_for(connection.recv_bytes(), 120))
                assert event["type"] != "error", event
                if event["type"] in kinds:
                    return event

        assert (await next_event("session.created"))["type"] == "session.created"
        await connection.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "Answer in two full sentences.",
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                        }
                    },
                },
            }
        )
        await next_event("session.updated")

        first = caller_audio(FIRST, seed=1)
        first = first[: first.size - (TRAIL_MS - KEPT_TRAIL_MS) * RATE // 1000]
        await speak(connection, first)
        # the stream stops here; the answer is played as it arrives, as a client plays it
        received_ms, first_audio_at = 0.0, None
        while True:
            event = await next_event("response.output_audio.delta", "response.done")
            if event["type"] == "response.done":
                break
            first_audio_at = first_audio_at or time.monotonic()
            received_ms += len(base64.b64decode(event["delta"])) / 2 / RATE * 1000
        assert first_audio_at is not None and received_ms > 1500, received_ms  # two sentences
        played_until = first_audio_at + received_ms / 1000
        await asyncio.sleep(max(0.0, played_until - time.monotonic()) + 0.2)

        second_start_ms = first.size / RATE * 1000
        await speak(connection, caller_audio(SECOND, seed=2)[(LEAD_MS - KEPT_LEAD_MS) * RATE // 1000 :])
        started = await next_event("input_audio_buffer.speech_started")
        onset_ms = second_start_ms + KEPT_LEAD_MS + REFERENCE_EDGES[SECOND][0]
        # speech_started carries the prefix padding before the onset (the VAD needs a few frames)
        assert started["audio_start_ms"] <= onset_ms - PREFIX_MS + 250, (started, onset_ms)
        heard = await next_event("conversation.item.input_audio_transcription.completed")
        assert corpus_wer([(transcripts()[SECOND], heard["transcript"])]) <= 0.15, heard
