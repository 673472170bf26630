"""The runtime keeps the caller's language per session (a fake recogniser stands in for
Whisper: this tests the wiring; tests/integration/test_telephone_language.py the real thing)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from openrealtime.core.session import SessionCore
from openrealtime.engines.asr.language import LanguageDetection, LanguagePolicy
from openrealtime.engines.base import (
    CancelToken,
    ChatRequest,
    FloatAudio,
    GenerationDone,
    LLMEvent,
    TextDelta,
    Transcript,
)
from openrealtime.engines.registry import EngineSet
from openrealtime.protocol.session import RealtimeSession
from openrealtime.runtime.scheduler import Scheduler
from openrealtime.runtime.session_runtime import SessionRuntime
from openrealtime.transports.wire import EventWire
from tests.runtime_client import Client


class QuietLLM:
    name = "quiet"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        yield TextDelta("Ok.")
        yield GenerationDone("stop", prompt_tokens=1, cached_prompt_tokens=0, completion_tokens=1)


@dataclass(frozen=True)
class Timed:
    transcript: Transcript
    segments: tuple[()]
    detection: LanguageDetection | None


class DetectingTranscriber:
    """Hears Spanish with a scripted confidence; decodes in the language the policy picks."""

    name = "detecting"
    sample_rate = 16_000
    supports_language_policy = True

    def __init__(self) -> None:
        self.probability = 0.95
        self.policies: list[LanguagePolicy | None] = []

    def transcribe(self, audio: FloatAudio, **options: Any) -> Transcript:
        return self.transcribe_segments(audio, **options).transcript

    def transcribe_segments(
        self, audio: FloatAudio, *, policy: LanguagePolicy | None = None, **options: Any
    ) -> Timed:
        self.policies.append(policy)
        seconds = len(audio) / self.sample_rate
        detection = LanguageDetection.of([("es", self.probability), ("en", 1 - self.probability)], seconds)
        language = policy.choose(detection).language if policy is not None else "en"
        text = {"es": "hola, quisiera saber de mi pedido", "de": "hallo"}.get(language, "hello")
        return Timed(Transcript(text, language, seconds, 3), (), detection)


class RecordingLLM(QuietLLM):
    """Answers with scripted pieces and keeps every request it was given."""

    def __init__(self, pieces: tuple[str, ...] = ("Ok.",)) -> None:
        self.pieces = pieces
        self.requests: list[ChatRequest] = []

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        self.requests.append(request)
        for piece in self.pieces:
            yield TextDelta(piece)
        yield GenerationDone("stop", prompt_tokens=1, cached_prompt_tokens=0, completion_tokens=1)


class Harness:
    def __init__(self, llm: QuietLLM | None = None) -> None:
        self.transcriber = DetectingTranscriber()
        engines = EngineSet(llm=llm or QuietLLM(), transcriber=self.transcriber)  # type: ignore[arg-type]
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

    def configure(self, language: str | None = None) -> None:
        transcription: dict[str, Any] = {"model": "whisper-1"}
        if language is not None:
            transcription["language"] = language
        audio = {"input": {"turn_detection": None, "transcription": transcription}}
        self.send({"type": "session.update", "session": {"type": "realtime", "audio": audio}})

    async def turn(self, seconds: float) -> str:
        mark = len(self.events)
        pcm = bytes(int(seconds * 24_000) * 2)
        self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        self.send({"type": "input_audio_buffer.commit"})

        async def wait() -> str:
            while True:
                for event in self.events[mark:]:
                    if event["type"] == "conversation.item.input_audio_transcription.completed":
                        return str(event["transcript"])
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(wait(), 30)

    async def respond(self, **response: Any) -> dict[str, Any]:
        """A text response; its ``response.done`` event."""
        mark = len(self.events)
        self.send({"type": "response.create", "response": {"output_modalities": ["text"], **response}})

        async def wait() -> dict[str, Any]:
            while True:
                for event in self.events[mark:]:
                    if event["type"] == "response.done":
                        return event
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(wait(), 30)


async def test_the_session_follows_a_confident_long_detection_only() -> None:
    h = Harness()
    try:
        h.configure()
        tracker = h.runtime.listening.caller_language
        assert tracker.language == "en"
        h.transcriber.probability = 0.95
        assert await h.turn(0.5) == "hello"  # too short to switch
        assert tracker.language == "en"
        assert await h.turn(3.0) == "hola, quisiera saber de mi pedido"
        assert tracker.language == "es"
        h.transcriber.probability = 0.3
        assert await h.turn(0.5) == "hola, quisiera saber de mi pedido"  # follows the session
        assert tracker.switches == [("en", "es")]
    finally:
        await h.runtime.aclose()


async def test_the_clients_language_is_used_as_is() -> None:
    h = Harness()
    try:
        h.configure(language="de")
        assert await h.turn(3.0) == "hallo"
        assert h.runtime.listening.caller_language.language == "de"
        assert h.transcriber.policies[-1] == LanguagePolicy.fixed("de")
    finally:
        await h.runtime.aclose()


SPANISH_LINE = "Answer in Spanish. Responde en español."


async def test_answers_follow_the_language_the_caller_is_heard_in() -> None:
    llm = RecordingLLM()
    h = Harness(llm)
    try:
        h.configure()
        await h.turn(0.5)  # English so far: no language line, the prompt is unchanged
        await h.respond()
        assert llm.requests[-1].language == "en"
        assert "Spanish" not in (llm.requests[-1].messages[0].content or "")
        h.transcriber.probability = 0.95
        await h.turn(3.0)  # a confident switch, reported to the core before its transcript
        await h.respond()
        request = llm.requests[-1]
        assert request.language == "es"
        assert (request.messages[0].content or "").endswith(SPANISH_LINE)
    finally:
        await h.runtime.aclose()


async def test_the_clients_language_is_the_answers_language() -> None:
    llm = RecordingLLM()
    h = Harness(llm)
    try:
        h.configure(language="fr-CA")
        await h.respond()  # nothing heard yet: the setting alone decides
        assert llm.requests[-1].language == "fr"
        assert (llm.requests[-1].messages[0].content or "").endswith("Answer in French. Réponds en français.")
    finally:
        await h.runtime.aclose()


LEGAL = "This ticket is non-refundable after 24 hours."


async def test_a_verbatim_marker_becomes_the_exact_words_of_the_function_result() -> None:
    from openrealtime.core.verbatim import marker, render_tool_output

    output = json.dumps({"status": "found", "verbatim": {"terms": LEGAL}})
    _, texts = render_tool_output(output, "call_7")
    (marker_id,) = texts
    tag = marker(marker_id)
    llm = RecordingLLM(("The terms: ", tag[:4], tag[4:9], tag[9:], " Anything else?"))
    h = Harness(llm)
    try:
        h.configure()
        call = {"type": "function_call", "call_id": "call_7", "name": "get_terms", "arguments": "{}"}
        h.send({"type": "conversation.item.create", "item": call})
        result = {"type": "function_call_output", "call_id": "call_7", "output": output}
        h.send({"type": "conversation.item.create", "item": result})
        done = await h.respond()
        (message,) = [i for i in done["response"]["output"] if i["type"] == "message"]
        assert message["content"][0]["text"] == f"The terms: {LEGAL} Anything else?"
        request = llm.requests[-1]
        assert dict(request.verbatim) == {marker_id: LEGAL}
        tool = next(m for m in request.messages if m.role == "tool")
        assert tag in (tool.content or "") and "refundable" not in (tool.content or "")
        assert "[[say:" in (request.messages[0].content or "")
    finally:
        await h.runtime.aclose()
