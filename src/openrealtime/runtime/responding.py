"""How a response is generated: the cascade of LLM → clause chunker → TTS.

The runtime gives a ``StartResponse`` to its ``Responder`` and gets results back through
``ResponseHost.report`` (text, speech, tool calls, prompt counts, the end). The cascade here is
one responder; a single speech-to-speech model would be another behind the same ``Responder``
protocol (its audio out as ``SpeechGenerated``, its transcript as ``TextGenerated``), and the
runtime would not change. Everything a responder reports for a response the core has since
cancelled is dropped by the core, so a responder never has to check before reporting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..audio import formats
from ..audio.resample import StreamingResampler
from ..core.commands import StartResponse
from ..core.events import (
    GenerationFailed,
    GenerationFinished,
    PromptRead,
    Result,
    SpeechGenerated,
    TextGenerated,
    ToolCalled,
)
from ..core.verbatim import VerbatimExpander
from ..engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    Synthesizer,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from ..engines.llm.tool_calling import validate_arguments
from ..engines.registry import EngineSet
from ..engines.tts.chunker import ClauseChunker
from ..safety import Moderation
from .moderating import ScreenedClauses, ScreenedText
from .scheduler import PRIORITY_SPECULATIVE, Scheduler, current_priority

log = logging.getLogger("openrealtime.runtime")

APOLOGY = "Sorry, I couldn't work out how to do that. Could you say it another way?"
UNAVAILABLE_APOLOGY = "Sorry, I can't answer right now. Please try again in a moment."
ENGINE_STALL_S = 60.0
"""An engine that produces nothing for this long (queueing included) fails its response."""
FIRST_PIECE_WORDS = 3
"""Speak the first few words of an answer without waiting for punctuation (measured: the
best latency/prosody trade-off in bench/voice_latency.py on 2 cores)."""
AUDIO_DELTA_MS = 200
"""Speech is reported in pieces of at most this length, so clients can start playing early."""
MAX_MCP_ROUNDS = 3
"""A response continues after MCP results at most this many times (a model that keeps
calling tools would otherwise never answer)."""


class EngineUnavailable(RuntimeError):
    """The language model failed before producing anything for a response."""


@dataclass
class TurnTimings:
    """Per-response stage timings (monotonic seconds), for telemetry and benchmarks."""

    created: float = 0.0
    llm_first_token: float | None = None
    first_piece: float | None = None
    tts_first_chunk: float | None = None
    first_audio_sent: float | None = None
    upstream_first_output: float | None = None
    """The first output of an upstream Realtime API (runtime/upstream/)."""
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    """Of the first LLM request's prompt, the tokens found already evaluated (prefill, warm-up
    while the caller spoke, the previous turn)."""


class ResponseHost(Protocol):
    """What a responder needs of its session's runtime."""

    engines: EngineSet
    scheduler: Scheduler
    timings: dict[str, TurnTimings]
    first_piece_words: int | None
    speculative: bool
    """The work is a guess (runtime/speculation.py): it queues below every committed turn
    and gives the engine up when one needs it."""
    moderation: Moderation | None
    """Content safety: each clause is judged before it is spoken (``moderating.py``)."""

    @property
    def session_id(self) -> str: ...

    def report(self, result: Result) -> None:
        """Give a result to the core and send what it emits."""

    def chat_request(self, response_id: str) -> ChatRequest | None:
        """The request for the response's model now, or None (it ended, or cannot fit)."""

    def is_live(self, response_id: str) -> bool: ...

    def spoken_text(self, response_id: str) -> str:
        """The response's text (transcript) so far."""

    def mcp_calls_pending(self, response_id: str) -> bool: ...

    async def context_ready(self, command: StartResponse) -> None:
        """Wait for the transcripts, image analyses and MCP tool listings the response reads."""

    async def tools_settled(self, response_id: str) -> None:
        """Wait until every MCP call of the response has reported."""


class Responder(Protocol):
    """Generates one response; what it produces goes to ``ResponseHost.report``."""

    async def respond(self, command: StartResponse, token: CancelToken) -> None: ...


class Cascade:
    """LLM → clause chunker → TTS for the responses of one session."""

    def __init__(self, host: ResponseHost) -> None:
        self.host = host

    async def respond(self, command: StartResponse, token: CancelToken) -> None:
        host, rid = self.host, command.response_id
        speech: _SpeechOut | _TextOut | None = None
        try:
            await host.context_ready(command)
            request = host.chat_request(rid)
            if request is None or token.cancelled:
                return
            language = request.language or command.language
            speech = (
                _SpeechOut(host, command, token, language)
                if command.modality == "audio"
                else _TextOut(host, rid)
            )
            totals = [0, 0, 0]  # prompt, cached, completion
            verbatim = VerbatimExpander(request.verbatim)
            finish = await self._generate(rid, request, token, speech, totals, verbatim, retry_allowed=True)
            rounds = 0
            while host.mcp_calls_pending(rid) and not token.cancelled and rounds < MAX_MCP_ROUNDS:
                # the model called an MCP tool: wait for its result, then let the model use it
                rounds += 1
                await host.tools_settled(rid)
                request = host.chat_request(rid)
                if request is None or token.cancelled:
                    break
                verbatim.texts.update({k.lower(): v for k, v in request.verbatim.items()})
                finish = await self._generate(
                    rid, request, token, speech, totals, verbatim, retry_allowed=True
                )
            await host.tools_settled(rid)
            await speech.finish()
            finish = "content_filter" if speech.clauses.blocked else finish
            if token.cancelled:
                return
            host.report(GenerationFinished(rid, finish, totals[0], totals[1], totals[2]))
        except asyncio.CancelledError:
            raise
        except EngineUnavailable as exc:
            log.error("response %s: the language model is unavailable (%s); apologising", rid, exc)
            await self._apologise(command, token)
        except Exception as exc:
            log.exception("response %s failed", rid)
            host.report(GenerationFailed(rid, "engine_error", f"The response could not be generated: {exc}"))
        finally:
            if isinstance(speech, _SpeechOut):
                speech.close()

    async def _apologise(self, command: StartResponse, token: CancelToken) -> None:
        """Answer a turn the language model could not: a short apology, spoken when the
        response is audio, so the caller is never left in silence."""
        host, rid = self.host, command.response_id
        if token.cancelled or not host.is_live(rid):
            return
        if command.modality == "audio":
            await speak_text(host, command, token, UNAVAILABLE_APOLOGY)
        else:
            host.report(TextGenerated(rid, UNAVAILABLE_APOLOGY))
        if not token.cancelled:
            host.report(GenerationFinished(rid, "stop", 0, 0, 0))

    def _start_llm(self, request: ChatRequest, token: CancelToken) -> Iterator[LLMEvent]:
        """On the LLM worker: prompt evaluation threads as ``prompt_threads`` says."""
        prompt_threads(self.host.engines, self.host.scheduler)
        return self.host.engines.llm.generate(request, token)

    async def _llm_events(self, request: ChatRequest, token: CancelToken) -> AsyncIterator[LLMEvent]:
        """The LLM's stream; a failure before its first event becomes ``EngineUnavailable``
        (the turn can still be answered with an apology), a later one propagates."""
        produced = False
        placement = _placement(self.host)
        request = replace(request, priority=placement.get("priority", current_priority()))
        try:
            async for event in self.host.scheduler.llm.stream(
                lambda: self._start_llm(request, token),
                cancel=token,
                stall_timeout=ENGINE_STALL_S,
                **placement,
            ):
                produced = True
                yield event
        except Exception as exc:
            if produced or token.cancelled:
                raise
            raise EngineUnavailable(str(exc) or type(exc).__name__) from exc

    async def _generate(
        self,
        rid: str,
        request: ChatRequest,
        token: CancelToken,
        speech: _SpeechOut | _TextOut,
        totals: list[int],
        verbatim: VerbatimExpander,
        *,
        retry_allowed: bool,
    ) -> str:
        """Run the LLM once; a tool call with invalid arguments gets one retry, then an apology.

        The model's text goes through the response's ``verbatim`` expander (markers become the
        exact words of a function result) before it is spoken or becomes the transcript."""
        host = self.host

        async def say(text: str) -> None:
            if not text:
                return
            await speech.feed(text)

        tools = {tool.name: tool for tool in request.tools}
        finish = "stop"
        said_anything = False
        retry_note: str | None = None
        timings = host.timings.get(rid)
        async for event in self._llm_events(request, token):
            if token.cancelled or speech.clauses.blocked:
                break
            if (
                isinstance(event, TextDelta | ToolCallDelta)
                and timings is not None
                and timings.llm_first_token is None
            ):
                timings.llm_first_token = time.monotonic()
            if isinstance(event, TextDelta):
                said_anything = said_anything or bool(event.text.strip())
                await say(verbatim.push(event.text))
            elif isinstance(event, ToolCallDelta):
                call = event.call
                problem = _call_problem(tools, call.name, call.arguments)
                await say(verbatim.flush())
                if problem is None:
                    await speech.finish()
                    host.report(ToolCalled(rid, call.name, call.call_id, call.arguments))
                else:
                    log.info("invalid tool call %s: %s", call.name, problem)
                    retry_note = f"The call to {call.name} had invalid arguments ({problem}). Call it again with valid arguments."
            elif isinstance(event, GenerationDone):
                if timings is not None and timings.prompt_tokens is None and event.prompt_tokens:
                    timings.prompt_tokens = event.prompt_tokens
                    timings.cached_prompt_tokens = event.cached_prompt_tokens
                totals[0] += event.prompt_tokens
                totals[1] += event.cached_prompt_tokens
                totals[2] += event.completion_tokens
                if event.prompt_tokens:
                    host.report(PromptRead(rid, totals[0], totals[1]))
                finish = "length" if event.finish_reason == "length" else "stop"
        if not token.cancelled:
            await say(verbatim.flush())
        if verbatim.unknown:
            log.warning("response %s: unknown verbatim markers dropped: %s", rid, verbatim.unknown)
            verbatim.unknown.clear()
        if retry_note is not None and not token.cancelled:
            if retry_allowed and not said_anything:
                again = replace(
                    request,
                    messages=(*request.messages, ChatMessage(role="system", content=retry_note)),
                    temperature=max(0.1, request.temperature / 2),
                )
                return await self._generate(rid, again, token, speech, totals, verbatim, retry_allowed=False)
            await speech.feed(APOLOGY)
        return finish


def prompt_threads(engines: EngineSet, scheduler: Scheduler) -> None:
    """On the LLM worker, before evaluating a prompt: give it the spare cores
    (``llm_batch_threads``) when no other engine is busy (measured: halves the cached first
    token on 2 idle cores), else one thread."""
    set_threads = getattr(engines.llm, "set_threads", None)
    if set_threads is not None:
        decode, batch = engines.llm_threads, engines.llm_batch_threads
        queues = (scheduler.asr, scheduler.tts, scheduler.vad)
        set_threads(decode, batch if all(q.idle for q in queues) else decode)


def _placement(host: ResponseHost) -> dict[str, Any]:
    """Queue options of the host's engine work: a committed turn's, or a guess's."""
    if host.speculative:
        return {"priority": PRIORITY_SPECULATIVE, "yielding": True}
    return {}  # the task's own class: a voice turn or a text response


async def speak_text(host: ResponseHost, command: StartResponse, token: CancelToken, text: str) -> None:
    """Speak a fixed text as the response's audio (an apology, a refusal)."""
    speech = _SpeechOut(host, command, token, command.language)
    try:
        await speech.feed(text)
        await speech.finish()
    finally:
        speech.close()


def _call_problem(tools: dict[str, ToolSpec], name: str, arguments: str) -> str | None:
    tool = tools.get(name)
    if tool is None:
        return f"unknown function '{name}'"
    return validate_arguments(tool, arguments)


class _TextOut:
    """Writes one text-only response: each delta as it comes, or, with moderation on, clause
    by clause once judged, keeping the model's own spacing (``moderating.ScreenedText``)."""

    def __init__(self, host: ResponseHost, response_id: str) -> None:
        self.host = host
        self.response_id = response_id
        self.clauses = ScreenedText(host.moderation, host.session_id)

    async def feed(self, text: str) -> None:
        shown = await self.clauses.push(text)
        if shown:
            self.host.report(TextGenerated(self.response_id, shown))

    async def finish(self) -> None:
        shown = await self.clauses.flush()
        if shown:
            self.host.report(TextGenerated(self.response_id, shown))


class _SpeechOut:
    """Speaks one response: clause-sized text pieces → TTS → 24 kHz PCM.

    Text arrives from the LLM while earlier pieces are still being synthesized; each piece's
    transcript is reported just before its first audio so transcript and sound stay aligned.
    """

    def __init__(
        self, host: ResponseHost, command: StartResponse, token: CancelToken, language: str | None
    ) -> None:
        self.host = host
        self.command = command
        self.token = token
        self.language = language
        """The answer's language: its voice is chosen for it, once per response."""
        self.voice: tuple[Synthesizer, str] | None = None
        self.chunker = ClauseChunker(min_first_words=3, max_first_words=host.first_piece_words)
        self.clauses = ScreenedClauses(self.chunker, host.moderation, host.session_id)
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def _ensure_worker(self) -> None:
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._speak_all())

    async def feed(self, text: str) -> None:
        for piece in await self.clauses.push(text):
            timings = self.host.timings.get(self.command.response_id)
            if timings is not None and timings.first_piece is None:
                timings.first_piece = time.monotonic()
            self._ensure_worker()
            self.pieces.put_nowait(piece)

    async def finish(self) -> None:
        """Speak whatever text is left and wait until all of it has been reported."""
        for piece in await self.clauses.flush():
            self._ensure_worker()
            self.pieces.put_nowait(piece)
        if self.worker is not None:
            self.pieces.put_nowait(None)
            worker, self.worker = self.worker, None
            await worker

    def close(self) -> None:
        """The response ended without ``finish`` (cancelled, failed): stop speaking. The
        speaking task waits for pieces nobody will give, and only this object holds it."""
        worker, self.worker = self.worker, None
        if worker is not None and not worker.done():
            worker.cancel()

    async def _speak_all(self) -> None:
        while True:
            piece = await self.pieces.get()
            if piece is None or self.token.cancelled:
                return
            await self._speak(piece)

    async def _speak(self, text: str) -> None:
        host = self.host
        rid = self.command.response_id
        voices = host.engines.voices
        if voices is None:
            host.report(TextGenerated(rid, text))
            return
        if self.voice is None:
            self.voice = voices.resolve(self.command.voice, language=self.language)
            if self.language not in (None, "en"):
                log.info(
                    "response %s speaks %s: voice %s:%s",
                    rid,
                    self.language,
                    self.voice[0].name,
                    self.voice[1],
                )
        synthesizer, voice_id = self.voice
        resampler = StreamingResampler(synthesizer.sample_rate, formats.INTERNAL_RATE, dtype=np.int16)
        first = True
        spoken_text = text if not host.spoken_text(rid) else " " + text.lstrip()
        timings = host.timings.get(rid)
        max_samples = formats.INTERNAL_RATE * AUDIO_DELTA_MS // 1000

        def emit(pcm24: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> None:
            nonlocal first
            for start in range(0, len(pcm24), max_samples):
                piece = np.asarray(pcm24[start : start + max_samples], dtype=np.int16)
                if not len(piece):
                    continue
                if first:
                    host.report(TextGenerated(rid, spoken_text))
                    first = False
                    if timings is not None and timings.first_audio_sent is None:
                        timings.first_audio_sent = time.monotonic()
                host.report(SpeechGenerated(rid, piece))

        async for chunk in host.scheduler.tts.stream(
            lambda: synthesizer.synthesize(text, voice=voice_id, speed=self.command.speed, cancel=self.token),
            cancel=self.token,
            stall_timeout=ENGINE_STALL_S,
            **_placement(host),
        ):
            if self.token.cancelled:
                return
            if timings is not None and timings.tts_first_chunk is None:
                timings.tts_first_chunk = time.monotonic()
            emit(resampler.process(chunk))
        if not self.token.cancelled:
            emit(resampler.flush())
            if first:
                host.report(TextGenerated(rid, spoken_text))
