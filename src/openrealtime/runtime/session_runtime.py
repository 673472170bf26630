"""The async driver of one live session.

It feeds client frames to the sans-I/O core, carries out the core's commands on the shared
engines (through the scheduler, never on the event loop), reports engine results back to the
core, and hands every server event to the transport in order. A response's work is tied to a
``CancelToken``: once the core has cancelled a response, nothing it still produces reaches the
client, because the core ignores results for responses that are no longer live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..audio import formats
from ..audio.resample import StreamingResampler
from ..core.commands import (
    AnalyzeImage,
    CallMcpTool,
    CancelResponse,
    CloseConnection,
    Command,
    InputAppended,
    InputBufferCleared,
    InputCommitted,
    ListMcpTools,
    PredictEndOfTurn,
    ResponseFinished,
    SpeechStarted,
    StartResponse,
    TranscribeItem,
)
from ..core.session import SessionCore
from ..engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from ..engines.llm.tool_calling import validate_arguments
from ..engines.registry import EngineSet
from ..engines.tts.chunker import ClauseChunker
from ..protocol import client_events as ce
from ..protocol.errors import RealtimeError, rate_limited
from ..protocol.server_events import ServerEvent
from . import mcp as mcp_client
from .listening import InputPipeline, usage_for
from .observer import Observers, SessionInfo
from .scheduler import Scheduler

log = logging.getLogger("openrealtime.runtime")

APOLOGY = "Sorry, I couldn't work out how to do that. Could you say it another way?"
UNAVAILABLE_APOLOGY = "Sorry, I can't answer right now. Please try again in a moment."
ENGINE_STALL_S = 60.0
"""An engine that produces nothing for this long (queueing included) fails its response."""


class EngineUnavailable(RuntimeError):
    """The language model failed before producing anything for a response."""


TRANSCRIPT_WAIT_S = 30.0
FIRST_PIECE_WORDS = 3
"""Speak the first few words of an answer without waiting for punctuation (measured: the
best latency/prosody trade-off in bench/voice_latency.py on 2 cores)."""
AUDIO_DELTA_MS = 200
MAX_MCP_ROUNDS = 3
"""A response continues after MCP results at most this many times (a model that keeps
calling tools would otherwise never answer)."""
"""Speech is sent in deltas of at most this length, so clients can start playing early."""


@dataclass
class _Work:
    token: CancelToken
    task: asyncio.Task[None]


@dataclass
class TurnTimings:
    """Per-response stage timings (monotonic seconds), for telemetry and benchmarks."""

    created: float = 0.0
    llm_first_token: float | None = None
    first_piece: float | None = None
    tts_first_chunk: float | None = None
    first_audio_sent: float | None = None


class SessionRuntime:
    """Runs one session: ``start``, then ``on_frame`` per client frame, ``aclose`` at the end.

    ``send`` receives every server event in order (the transport serialises it); ``observers``
    are told what happens (metrics, ledger, traces) under the ids in ``info``.
    """

    def __init__(
        self,
        core: SessionCore,
        engines: EngineSet,
        scheduler: Scheduler,
        send: Callable[[ServerEvent], None],
        close: Callable[[int, str], Awaitable[None]],
        *,
        observers: Observers | None = None,
        info: SessionInfo | None = None,
        admit_event: Callable[[], bool] | None = None,
        mcp_policy: mcp_client.McpPolicy | None = None,
    ) -> None:
        self.core = core
        self.engines = engines
        self.scheduler = scheduler
        self._send = send
        self._close = close
        self.observers = observers or Observers()
        self.admit_event = admit_event
        """Asked before each client event is processed (the per-key event rate)."""
        self.info = info or SessionInfo(
            session_id=core.session.id or "", key_id="", transport="websocket", model=""
        )
        self._responses: dict[str, _Work] = {}
        self._transcripts: dict[str, asyncio.Future[None]] = {}
        self._image_analyses: dict[str, list[asyncio.Future[None]]] = {}
        core.llm_sees_images = engines.llm_vision
        self._tasks: set[asyncio.Task[Any]] = set()
        self.timings: dict[str, TurnTimings] = {}
        self.closed = False
        self.listening = InputPipeline(self)
        self.first_piece_words: int | None = FIRST_PIECE_WORDS
        self._idle_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.speech_stopped_at: dict[str, float] = {}
        self.transcript_ready_at: dict[str, float] = {}
        self.mcp_policy = mcp_policy or mcp_client.McpPolicy.from_settings(None, None)
        self._mcp_listings: dict[str, asyncio.Task[None]] = {}
        self._mcp_calls: dict[str, dict[str, asyncio.Task[None]]] = {}  # response id → item id → call

    # ------------------------------------------------------------------ driving the core

    def start(self) -> None:
        self.core.start()
        if not self.info.session_id:
            self.info = SessionInfo(
                session_id=self.core.session.id or "",
                key_id=self.info.key_id,
                transport=self.info.transport,
                model=self.info.model,
            )
        self.observers.session_started(self.info)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self.core.limits.max_session_minutes * 60, self._expire)
        self.flush()

    def _expire(self) -> None:
        self.core.expire()
        self.flush()

    def on_frame(self, frame: str | bytes) -> None:
        try:
            try:
                event = ce.parse_client_event(frame)
            except RealtimeError as err:
                self.observers.client_event(self.info, "invalid")
                self.core.error(err)
            else:
                self.observers.client_event(self.info, event.type)
                if self.admit_event is not None and not self.admit_event():
                    self.core.error(rate_limited(event.event_id))
                else:
                    self.core.handle_event(event)
        except Exception:  # a bug on one event must not end the session
            log.exception("unexpected failure handling a client event")
            self.core.error(
                RealtimeError("server_error", "The server failed to process the event.", type="server_error")
            )
        self.flush()

    @property
    def busy(self) -> bool:
        """A response is being generated for this session."""
        return bool(self._responses)

    def fail(self, error: RealtimeError) -> None:
        """Report a transport-level problem as an ``error`` event (closing when it is fatal)."""
        self.core.error(error)
        self.flush()

    def flush(self) -> None:
        """Send what the core emitted, then carry out what it asked for."""
        for event in self.core.take_events():
            self.observers.server_event(self.info, event)  # type: ignore[arg-type]
            self._send(event)  # type: ignore[arg-type]
        for command in self.core.take_commands():
            self._execute(command)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _execute(self, command: Command) -> None:
        if isinstance(command, StartResponse):
            token = CancelToken()
            self.timings[command.response_id] = TurnTimings(created=time.monotonic())
            task = self._spawn(self._respond(command, token), f"response:{command.response_id}")
            self._responses[command.response_id] = _Work(token, task)
        elif isinstance(command, CancelResponse):
            work = self._responses.pop(command.response_id, None)
            if work is not None:
                work.token.cancel()
            for call in self._mcp_calls.pop(command.response_id, {}).values():
                call.cancel()
        elif isinstance(command, ListMcpTools):
            listing = self._spawn(self._list_mcp_tools(command), f"mcp-list:{command.item_id}")
            self._mcp_listings[command.item_id] = listing
            listing.add_done_callback(lambda _: self._mcp_listings.pop(command.item_id, None))
        elif isinstance(command, CallMcpTool):
            call = self._spawn(self._call_mcp_tool(command), f"mcp-call:{command.item_id}")
            self._mcp_calls.setdefault(command.response_id, {})[command.item_id] = call
        elif isinstance(command, AnalyzeImage):
            analysed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._image_analyses.setdefault(command.item_id, []).append(analysed)
            self._spawn(self._analyze_image(command, analysed), f"image:{command.item_id}")
        elif isinstance(command, TranscribeItem):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._transcripts[command.item_id] = future
            self._spawn(self._transcribe(command, future), f"transcribe:{command.item_id}")
        elif isinstance(command, InputAppended):
            self.listening.on_append(command)
        elif isinstance(command, SpeechStarted):
            self._cancel_idle_timer()
            self.listening.on_speech_started(command)
        elif isinstance(command, InputCommitted):
            if command.by_vad:
                self.speech_stopped_at[command.item_id] = time.monotonic()
            self.listening.on_committed(command)
        elif isinstance(command, PredictEndOfTurn):
            self._spawn(self.listening.predict_end_of_turn(command), "end-of-turn")
        elif isinstance(command, ResponseFinished):
            self._arm_idle_timer(command)
        elif isinstance(command, InputBufferCleared):
            self.listening.on_cleared()
        elif isinstance(command, CloseConnection):
            self.closed = True
            self._spawn(self._close(command.code, command.reason), "close")

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _arm_idle_timer(self, finished: ResponseFinished) -> None:
        """``idle_timeout_ms`` counts from when the response's audio has finished playing."""
        self._cancel_idle_timer()
        detection = self.core.session.audio.input.turn_detection
        if finished.out_of_band or detection is None or detection.type != "server_vad":
            return
        if detection.idle_timeout_ms is None:
            return
        timings = self.timings.get(finished.response_id)
        played_from = timings.first_audio_sent if timings and timings.first_audio_sent else time.monotonic()
        playback_left = max(0.0, played_from + finished.audio_ms / 1000 - time.monotonic())
        delay = playback_left + detection.idle_timeout_ms / 1000

        def fire() -> None:
            self._idle_timer = None
            self.core.idle_timeout()
            self.flush()

        self._idle_timer = asyncio.get_running_loop().call_later(delay, fire)

    async def aclose(self) -> None:
        """Stop all work of this session (the client is gone)."""
        self.closed = True
        self._cancel_idle_timer()
        if self._expiry is not None:
            self._expiry.cancel()
        await self.listening.aclose()
        self.observers.session_ended(self.info)
        for work in self._responses.values():
            work.token.cancel()
        self._responses.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ transcription

    async def _transcribe(self, command: TranscribeItem, done: asyncio.Future[None]) -> None:
        try:
            if self.engines.transcriber is None:
                self.core.transcription_failed(command.item_id, "No speech recognition engine is configured.")
                return
            result, seconds, deltas = await self.listening.transcribe(command)
            self.transcript_ready_at[command.item_id] = time.monotonic()
            text = result.text.strip()
            usage = usage_for(seconds, result.output_tokens or self.engines.llm.count_tokens(text))
            for delta in deltas:
                self.core.transcription_delta(command.item_id, delta)
            self.core.transcription_completed(command.item_id, text, usage)
        except Exception as exc:
            log.exception("transcription failed")
            self.core.transcription_failed(command.item_id, f"The audio could not be transcribed: {exc}")
        finally:
            if not done.done():
                done.set_result(None)
            self.flush()

    # ------------------------------------------------------------------ images

    async def _analyze_image(self, command: AnalyzeImage, done: asyncio.Future[None]) -> None:
        """Describe one image on the vision queue, once; the core caches the text on the item."""
        describer = self.engines.vision
        try:
            if describer is None:
                return
            analysis = await self.scheduler.vision.call(
                lambda: describer.describe(
                    command.image, question_hint=command.question_hint, detail=command.detail
                )
            )
            log.info(
                "image %s[%d] analysed in %.2f s: %d text lines, labels %s",
                command.item_id,
                command.content_index,
                analysis.seconds,
                len(analysis.ocr),
                ", ".join(label.label for label in analysis.labels[:3]),
            )
            self.core.image_analyzed(command.item_id, command.content_index, analysis.text)
        except Exception as exc:
            log.warning("image %s[%d] could not be analysed: %s", command.item_id, command.content_index, exc)
            reason = getattr(exc, "message", None) or "the analysis failed"
            self.core.image_analyzed(
                command.item_id,
                command.content_index,
                f"[The user shared an image that could not be analysed ({reason}); nothing about it is known.]",
            )
        finally:
            if not done.done():
                done.set_result(None)
            self.flush()

    # ------------------------------------------------------------------ responses

    async def _respond(self, command: StartResponse, token: CancelToken) -> None:
        rid = command.response_id
        try:
            waits = [self._transcripts[i] for i in command.context_item_ids if i in self._transcripts]
            waits += [f for i in command.context_item_ids for f in self._image_analyses.get(i, ())]
            if waits:
                await asyncio.wait_for(asyncio.gather(*waits), TRANSCRIPT_WAIT_S)
            await self._mcp_ready(rid)
            request = self.core.build_request(rid)
            if request is None or token.cancelled:
                return
            speech = _SpeechOut(self, command, token) if command.modality == "audio" else None
            totals = [0, 0, 0]  # prompt, cached, completion
            finish = await self._generate(rid, request, token, speech, totals, retry_allowed=True)
            rounds = 0
            while self.core.mcp_calls_pending(rid) and not token.cancelled and rounds < MAX_MCP_ROUNDS:
                # the model called an MCP tool: wait for its result, then let the model use it
                rounds += 1
                await self._settle_mcp_calls(rid)
                request = self.core.build_request(rid)
                if request is None or token.cancelled:
                    break
                finish = await self._generate(rid, request, token, speech, totals, retry_allowed=True)
            await self._settle_mcp_calls(rid)
            if speech is not None:
                await speech.finish()
            if token.cancelled:
                return
            self.core.response_done(
                rid, finish, prompt_tokens=totals[0], cached_tokens=totals[1], completion_tokens=totals[2]
            )
        except asyncio.CancelledError:
            raise
        except EngineUnavailable as exc:
            log.error("response %s: the language model is unavailable (%s); apologising", rid, exc)
            await self._apologise(command, token)
        except Exception as exc:
            log.exception("response %s failed", rid)
            self.core.response_failed(rid, "engine_error", f"The response could not be generated: {exc}")
        finally:
            self._responses.pop(rid, None)
            self.flush()
            self._log_timings(command)

    async def _apologise(self, command: StartResponse, token: CancelToken) -> None:
        """Answer a turn the language model could not: a short apology, spoken when the
        response is audio, so the caller is never left in silence."""
        rid = command.response_id
        if token.cancelled or rid not in self.core.responses:
            return
        if command.modality == "audio":
            speech = _SpeechOut(self, command, token)
            await speech.feed(UNAVAILABLE_APOLOGY)
            await speech.finish()
        else:
            self.core.response_text(rid, UNAVAILABLE_APOLOGY)
        if not token.cancelled:
            self.core.response_done(rid, "stop", prompt_tokens=0, cached_tokens=0, completion_tokens=0)

    # ------------------------------------------------------------------ MCP

    async def _mcp_ready(self, rid: str) -> None:
        """Before the model runs: MCP tool listings in progress and approved calls finish."""
        listings = [self._mcp_listings[i] for i in self.core.mcp_listing_pending() if i in self._mcp_listings]
        if listings:
            await asyncio.wait(listings, timeout=self.mcp_policy.timeout_s + 5)
        await self._settle_mcp_calls(rid)

    async def _settle_mcp_calls(self, rid: str) -> None:
        """Wait until every MCP call of the response has reported (or was cancelled)."""
        calls = list(self._mcp_calls.get(rid, {}).values())
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)
        self._mcp_calls.pop(rid, None)

    async def _list_mcp_tools(self, command: ListMcpTools) -> None:
        try:
            tools = await mcp_client.list_tools(command.server_url, command.headers, self.mcp_policy)
            self.core.mcp_tools_listed(command.item_id, tools)
        except mcp_client.McpFailure as failure:
            self.core.mcp_tools_failed(
                command.item_id,
                failure.code,
                f"Listing the tools of MCP server '{command.server_label}' failed: {failure.message}",
            )
        except Exception as exc:
            log.exception("listing MCP tools failed")
            self.core.mcp_tools_failed(
                command.item_id,
                "mcp_server_error",
                f"Listing the tools of '{command.server_label}' failed: {exc}",
            )
        finally:
            self.flush()

    async def _call_mcp_tool(self, command: CallMcpTool) -> None:
        try:
            output = await mcp_client.call_tool(
                command.server_url, command.headers, command.name, command.arguments, self.mcp_policy
            )
            self.core.mcp_call_result(command.response_id, command.item_id, output, None)
        except mcp_client.McpFailure as failure:
            self.core.mcp_call_result(command.response_id, command.item_id, None, failure.error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("MCP call failed")
            error = {"type": "tool_execution_error", "message": f"The MCP call failed: {exc}"}
            self.core.mcp_call_result(command.response_id, command.item_id, None, error)
        finally:
            self.flush()

    def _log_timings(self, command: StartResponse) -> None:
        """One structured line per response with its stage timings (ms after end of speech)."""
        timings = self.timings.pop(command.response_id, None)
        if timings is None:
            return
        user_items = [i for i in command.context_item_ids if i in self.speech_stopped_at]
        origin = self.speech_stopped_at.get(user_items[-1]) if user_items else None
        base = origin if origin is not None else timings.created

        def ms(at: float | None) -> float | None:
            return None if at is None else round((at - base) * 1000, 1)

        ready = self.transcript_ready_at.get(user_items[-1]) if user_items else None
        record = {
            "response_id": command.response_id,
            "from": "speech_stopped" if origin is not None else "response_created",
            "transcript_ready_ms": ms(ready),
            "response_created_ms": ms(timings.created),
            "llm_first_token_ms": ms(timings.llm_first_token),
            "first_piece_ms": ms(timings.first_piece),
            "tts_first_chunk_ms": ms(timings.tts_first_chunk),
            "first_audio_sent_ms": ms(timings.first_audio_sent),
            "asr_queue_wait_ms": round(self.scheduler.asr.last_wait_s * 1000, 1),
            "llm_queue_wait_ms": round(self.scheduler.llm.last_wait_s * 1000, 1),
        }
        log.info("turn timings %s", json.dumps(record))
        self.observers.turn_timings(self.info, record)

    def _start_llm(self, request: ChatRequest, token: CancelToken) -> Iterator[LLMEvent]:
        """On the LLM worker: give prompt evaluation the spare cores when no other engine is
        busy (measured: halves the cached first token on 2 idle cores), else one thread."""
        llm = self.engines.llm
        set_threads = getattr(llm, "set_threads", None)
        if set_threads is not None:
            decode = self.engines.llm_threads
            batch = self.engines.llm_batch_threads
            queues = (self.scheduler.asr, self.scheduler.tts, self.scheduler.vad)
            set_threads(decode, batch if all(q.idle for q in queues) else decode)
        return llm.generate(request, token)

    async def _llm_events(self, request: ChatRequest, token: CancelToken) -> AsyncIterator[LLMEvent]:
        """The LLM's stream; a failure before its first event becomes ``EngineUnavailable``
        (the turn can still be answered with an apology), a later one propagates."""
        produced = False
        try:
            async for event in self.scheduler.llm.stream(
                lambda: self._start_llm(request, token), cancel=token, stall_timeout=ENGINE_STALL_S
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
        speech: _SpeechOut | None,
        totals: list[int],
        *,
        retry_allowed: bool,
    ) -> str:
        """Run the LLM once; a tool call with invalid arguments gets one retry, then an apology."""
        tools = {tool.name: tool for tool in request.tools}
        finish = "stop"
        said_anything = False
        retry_note: str | None = None
        timings = self.timings.get(rid)
        async for event in self._llm_events(request, token):
            if token.cancelled:
                break
            if isinstance(event, TextDelta):
                if timings is not None and timings.llm_first_token is None:
                    timings.llm_first_token = time.monotonic()
                said_anything = said_anything or bool(event.text.strip())
                if speech is not None:
                    await speech.feed(event.text)
                else:
                    self.core.response_text(rid, event.text)
                    self.flush()
            elif isinstance(event, ToolCallDelta):
                if timings is not None and timings.llm_first_token is None:
                    timings.llm_first_token = time.monotonic()
                call = event.call
                problem = _call_problem(tools, call.name, call.arguments)
                if problem is None:
                    if speech is not None:
                        await speech.finish()
                    self.core.response_function_call(rid, call.name, call.call_id, call.arguments)
                    self.flush()
                else:
                    log.info("invalid tool call %s: %s", call.name, problem)
                    retry_note = f"The call to {call.name} had invalid arguments ({problem}). Call it again with valid arguments."
            elif isinstance(event, GenerationDone):
                totals[0] += event.prompt_tokens
                totals[1] += event.cached_prompt_tokens
                totals[2] += event.completion_tokens
                if not self.core.responses.get(rid) or event.prompt_tokens:
                    self.core.response_prompt(rid, totals[0], totals[1])
                finish = "length" if event.finish_reason == "length" else "stop"
        if retry_note is not None and not token.cancelled:
            if retry_allowed and not said_anything:
                again = ChatRequest(
                    messages=(*request.messages, ChatMessage(role="system", content=retry_note)),
                    tools=request.tools,
                    tool_choice=request.tool_choice,
                    max_output_tokens=request.max_output_tokens,
                    temperature=max(0.1, request.temperature / 2),
                )
                return await self._generate(rid, again, token, speech, totals, retry_allowed=False)
            if speech is not None:
                await speech.feed(APOLOGY)
            else:
                self.core.response_text(rid, APOLOGY)
                self.flush()
        return finish


def _call_problem(tools: dict[str, ToolSpec], name: str, arguments: str) -> str | None:
    tool = tools.get(name)
    if tool is None:
        return f"unknown function '{name}'"
    return validate_arguments(tool, arguments)


class _SpeechOut:
    """Speaks one response: clause-sized text pieces → TTS → 24 kHz → the output format.

    Text arrives from the LLM while earlier pieces are still being synthesized; each piece's
    transcript delta is sent just before its first audio so transcript and sound stay aligned.
    """

    def __init__(self, runtime: SessionRuntime, command: StartResponse, token: CancelToken) -> None:
        self.runtime = runtime
        self.command = command
        self.token = token
        self.chunker = ClauseChunker(min_first_words=3, max_first_words=runtime.first_piece_words)
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.encoder = formats.StreamEncoder(command.output_format)
        self.worker: asyncio.Task[None] | None = None
        self.finished = False

    def _ensure_worker(self) -> None:
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._speak_all())

    async def feed(self, text: str) -> None:
        for piece in self.chunker.push(text):
            timings = self.runtime.timings.get(self.command.response_id)
            if timings is not None and timings.first_piece is None:
                timings.first_piece = time.monotonic()
            self._ensure_worker()
            self.pieces.put_nowait(piece)

    async def finish(self) -> None:
        """Speak whatever text is left and wait until all of it has been sent."""
        for piece in self.chunker.flush():
            self._ensure_worker()
            self.pieces.put_nowait(piece)
        if self.worker is not None:
            self.pieces.put_nowait(None)
            worker, self.worker = self.worker, None
            await worker
            tail = self.encoder.flush()
            if tail and not self.token.cancelled:
                self.runtime.core.response_audio(self.command.response_id, tail)
                self.runtime.flush()

    async def _speak_all(self) -> None:
        while True:
            piece = await self.pieces.get()
            if piece is None or self.token.cancelled:
                return
            await self._speak(piece)

    async def _speak(self, text: str) -> None:
        runtime = self.runtime
        core = runtime.core
        rid = self.command.response_id
        voices = runtime.engines.voices
        if voices is None:
            core.response_text(rid, text)
            runtime.flush()
            return
        synthesizer, voice_id = voices.resolve(self.command.voice)
        resampler = StreamingResampler(synthesizer.sample_rate, formats.INTERNAL_RATE, dtype=np.int16)
        first = True
        spoken_text = (
            text if not core.responses.get(rid) or not core.responses[rid].text else " " + text.lstrip()
        )
        timings = runtime.timings.get(rid)
        max_samples = formats.INTERNAL_RATE * AUDIO_DELTA_MS // 1000

        def emit(pcm24: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> None:
            nonlocal first
            for start in range(0, len(pcm24), max_samples):
                data = self.encoder.encode(pcm24[start : start + max_samples].astype(np.int16, copy=False))
                if not data:
                    continue
                if first:
                    core.response_text(rid, spoken_text)
                    first = False
                    if timings is not None and timings.first_audio_sent is None:
                        timings.first_audio_sent = time.monotonic()
                core.response_audio(rid, data)
            runtime.flush()

        async for chunk in runtime.scheduler.tts.stream(
            lambda: synthesizer.synthesize(text, voice=voice_id, speed=self.command.speed, cancel=self.token),
            cancel=self.token,
            stall_timeout=ENGINE_STALL_S,
        ):
            if self.token.cancelled:
                return
            if timings is not None and timings.tts_first_chunk is None:
                timings.tts_first_chunk = time.monotonic()
            emit(resampler.process(chunk))
        if not self.token.cancelled:
            emit(resampler.flush())
            if first:
                core.response_text(rid, spoken_text)
                runtime.flush()
