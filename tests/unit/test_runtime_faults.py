"""The session runtime when a speech engine fails mid-turn (fakes stand in for the engines:
this tests the runtime module, the real engines are exercised in tests/integration).

A synthesizer that raises half way through an answer fails that response with an error and
the next turn is spoken; a transcriber that raises gives ``transcription.failed`` and the
turn is still answered."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from openrealtime.core.session import SessionCore
from openrealtime.engines.base import (
    CancelToken,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    TextDelta,
    Transcript,
    VoiceInfo,
)
from openrealtime.engines.registry import EngineSet
from openrealtime.protocol.session import RealtimeSession
from openrealtime.runtime.scheduler import Scheduler
from openrealtime.runtime.session_runtime import SessionRuntime
from openrealtime.transports.wire import EventWire
from tests.runtime_client import Client


class ScriptedLLM:
    name = "scripted"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        yield TextDelta("Here is a short answer. And then a second sentence follows it.")
        yield GenerationDone("stop", prompt_tokens=10, cached_prompt_tokens=0, completion_tokens=12)


class FlakySynthesizer:
    name = "flaky"
    sample_rate = 24_000

    def __init__(self) -> None:
        self.fail = True

    def voices(self) -> list[VoiceInfo]:
        return []

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[Any]:
        yield np.full(2400, 1000, dtype=np.int16)  # 100 ms of sound
        if self.fail:
            raise RuntimeError("the vocoder crashed")
        yield np.full(2400, 1000, dtype=np.int16)


class Voices:
    def __init__(self, synthesizer: FlakySynthesizer) -> None:
        self.synthesizer = synthesizer

    def resolve(self, name: str, language: str | None = None) -> tuple[Any, str]:
        return self.synthesizer, "v"

    def describe(self) -> list[dict[str, Any]]:
        return []


class BrokenTranscriber:
    name = "broken"
    sample_rate = 16_000

    def transcribe(self, audio: Any, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        raise RuntimeError("the decoder crashed")


class Harness:
    def __init__(self) -> None:
        self.synthesizer = FlakySynthesizer()
        engines = EngineSet(
            llm=ScriptedLLM(), transcriber=BrokenTranscriber(), voices=Voices(self.synthesizer)
        )  # type: ignore[arg-type]
        core = SessionCore(
            RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=int(time.time())
        )
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.wire = EventWire(lambda: core.input_format)
        self.runtime = SessionRuntime(core, engines, Scheduler(), Client(self))
        self.runtime.start()

    def send(self, event: dict[str, Any]) -> None:
        self.wire.deliver(json.dumps(event), self.runtime)

    async def until(self, kind: str, after: int = 0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                found = [e for e in self.events[after:] if e["type"] == kind]
                if found:
                    return found[0]
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(wait(), 30)

    def ask(self, text: str) -> int:
        mark = len(self.events)
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        self.send({"type": "conversation.item.create", "item": item})
        self.send({"type": "response.create"})
        return mark


async def test_a_synthesizer_crash_fails_that_response_and_the_next_turn_is_spoken() -> None:
    h = Harness()
    try:
        mark = h.ask("Hello?")
        done = await h.until("response.done", mark)
        assert done["response"]["status"] == "failed"
        assert done["response"]["status_details"]["error"]["code"] == "engine_error"
        assert "vocoder crashed" in done["response"]["status_details"]["error"]["message"]

        h.synthesizer.fail = False
        mark = h.ask("And now?")
        done = await h.until("response.done", mark)
        assert done["response"]["status"] == "completed"
        audio = [e for e in h.events[mark:] if e["type"] == "response.output_audio.delta"]
        assert sum(len(base64.b64decode(e["delta"])) for e in audio) >= 2 * 4800  # both pieces spoken
    finally:
        await h.runtime.aclose()


async def test_a_transcriber_crash_fails_the_transcript_and_the_turn_is_still_answered() -> None:
    h = Harness()
    h.synthesizer.fail = False
    try:
        h.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}},
                },
            }
        )
        h.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(48_000)).decode()})
        mark = len(h.events)
        h.send({"type": "input_audio_buffer.commit"})
        h.send({"type": "response.create"})
        failed = await h.until("conversation.item.input_audio_transcription.failed", mark)
        assert "decoder crashed" in failed["error"]["message"]
        done = await h.until("response.done", mark)
        assert done["response"]["status"] == "completed"
    finally:
        await h.runtime.aclose()
