"""The async driver of one live session: the only thing that drives its core.

Transports talk to it through ``SessionPort`` (port.py); it feeds client events to the
sans-I/O core, carries out the core's commands on the shared engines (through the scheduler,
never on the event loop), reports what the work produced back to the core as ``Result``s, and
hands every output to the transport's ``SessionClient`` in order. A response's work is tied to
a ``CancelToken``: once the core has cancelled a response, nothing it still produces reaches
the client, because the core drops results for responses that are no longer live.

On WebRTC and SIP the runtime also plays the answers out (playback.py): speech goes to the
``MediaPlayback`` the transport pulls frames from, instead of to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core.commands import (
    AnalyzeImage,
    CallMcpTool,
    CancelResponse,
    ClearOutputAudio,
    CloseConnection,
    Command,
    HeldSpeechDropped,
    InputAppended,
    InputBufferCleared,
    InputCommitted,
    ListMcpTools,
    PredictEndOfTurn,
    ResponseFinished,
    SpeechStarted,
    StartResponse,
    TranscribeHeld,
    TranscribeItem,
)
from ..core.events import (
    AppendAudio,
    CallerAudio,
    ClientInput,
    CreateItem,
    IdleTimeout,
    ImageAnalyzed,
    McpCallDone,
    McpToolsFailed,
    McpToolsListed,
    OutputAudio,
    OutputCleared,
    PcmAudio,
    Result,
    RetrievedItem,
    SessionExpired,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
)
from ..core.session import SessionCore
from ..engines.base import CancelToken, ChatRequest
from ..engines.registry import EngineSet
from ..protocol import server_events as se
from ..protocol.client_events import ResponseCreate
from ..protocol.errors import RealtimeError, rate_limited, server_overloaded
from ..safety import Moderation
from . import mcp as mcp_client
from .disclosure import speak_disclosure
from .listening import InputPipeline, usage_for
from .moderating import refuse
from .observer import Observers, SessionInfo
from .playback import FRAME_MS, MediaPlayback
from .port import ClientOutput, SessionClient
from .responding import FIRST_PIECE_WORDS, Cascade, Responder, TurnTimings
from .scheduler import PRIORITY_TEXT, PRIORITY_TURN, Refusal, Scheduler, refusal_rate_limits, serving
from .speculation import Speculation

log = logging.getLogger("openrealtime.runtime")

TRANSCRIPT_WAIT_S = 30.0


@dataclass
class _Work:
    token: CancelToken
    task: asyncio.Task[None]


def _client_event_type(event: ClientInput) -> str:
    if isinstance(event, AppendAudio):
        return "input_audio_buffer.append"
    if isinstance(event, CreateItem):
        return "conversation.item.create"
    return event.type


class SessionRuntime:
    """Runs one session: ``start``, then the ``SessionPort`` calls, ``aclose`` at the end.

    ``client`` receives every output in order; ``observers`` are told what happens (metrics,
    ledger, traces) under the ids in ``info``. With ``media`` the runtime plays the speech out
    itself (WebRTC, SIP) and the core accepts ``output_audio_buffer.clear``.
    """

    def __init__(
        self,
        core: SessionCore,
        engines: EngineSet,
        scheduler: Scheduler,
        client: SessionClient,
        *,
        observers: Observers | None = None,
        info: SessionInfo | None = None,
        admit_event: Callable[[], bool] | None = None,
        mcp_policy: mcp_client.McpPolicy | None = None,
        responder: Callable[[SessionRuntime], Responder] = Cascade,
        moderation: Moderation | None = None,
        disclosure: str | None = None,
    ) -> None:
        self.core = core
        self.engines = engines
        self.scheduler = scheduler
        self.client = client
        self.observers = observers or Observers()
        self.admit_event = admit_event
        """Asked before each client event is processed (the per-key event rate)."""
        self.info = info or SessionInfo(
            session_id=core.session.id or "", key_id="", transport="websocket", model=""
        )
        self.moderation = moderation
        """Content safety of caller turns and answers (``moderating.py``), or None."""
        self.disclosure = disclosure
        """Said to a media caller before the first turn (``disclosure.py``)."""
        self.refused_items: set[str] = set()
        """Caller turns the moderation blocked: answered with its refusal, not by the model."""
        self.playback = (
            MediaPlayback(self._publish, self._interrupts, self._played) if core.server_playback else None
        )
        self.responder = responder(self)
        self.listening = InputPipeline(engines, scheduler, self.report)
        self._holding_speech = False
        """The core holds speech heard during the answer (the media playout pauses for it)."""
        self._held_start: SpeechStarted | None = None
        """Speech held during the answer: its transcription waits for the verdict."""
        if self.playback is not None:
            self.playback.on_release = self._playing_on
        self.first_piece_words: int | None = FIRST_PIECE_WORDS
        self.speculative = False
        self.speculation = Speculation(
            self,
            enabled=engines.preemptive and isinstance(self.responder, Cascade),
            warm=engines.warm_while_speaking,
            on_outcome=lambda outcome, tokens, seconds: self.observers.speculation(
                self.info, outcome, tokens, seconds
            ),
        )
        self.mcp_policy = mcp_policy or mcp_client.McpPolicy.from_settings(None, None)
        self.timings: dict[str, TurnTimings] = {}
        self.speech_stopped_at: dict[str, float] = {}
        self.transcript_ready_at: dict[str, float] = {}
        self.closed = False
        self._responses: dict[str, _Work] = {}
        self._transcripts: dict[str, asyncio.Future[None]] = {}
        self._image_analyses: dict[str, list[asyncio.Future[None]]] = {}
        self._mcp_listings: dict[str, asyncio.Task[None]] = {}
        self._mcp_calls: dict[str, dict[str, asyncio.Task[None]]] = {}  # response id → item id → call
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ the port

    @property
    def input_format(self) -> str:
        return self.core.input_format

    @property
    def input_in_real_time(self) -> bool:
        return self.core.hearing_speech or (self.playback is not None and self.playback.playout.busy)

    @property
    def busy(self) -> bool:
        """A response is being generated for this session."""
        return bool(self._responses)

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
        self.speculation.config_changed()
        if self.disclosure and self.playback is not None:
            self._spawn(speak_disclosure(self, self.disclosure), "disclosure")
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(
            self.core.limits.max_session_minutes * 60, self.report, SessionExpired()
        )
        self.flush()

    @property
    def session_id(self) -> str:
        return self.info.session_id

    def client_event(self, event: ClientInput) -> None:
        at = time.time()
        emitted = len(self.core.state.events)
        try:
            self.observers.client_event(self.info, _client_event_type(event))
            if self.admit_event is not None and not self.admit_event():
                self.core.reject(rate_limited(event.event_id))
            elif isinstance(event, ResponseCreate) and (refusal := self._refuse_text_response()):
                self._send(refusal_rate_limits(refusal))
                self.core.reject(server_overloaded(event.event_id, refusal.retry_after_s))
            else:
                self.core.handle(event)
                if _client_event_type(event) == "session.update":
                    self.speculation.config_changed()
        except Exception:  # a bug on one event must not end the session
            log.exception("unexpected failure handling a client event")
            self.core.reject(
                RealtimeError("server_error", "The server failed to process the event.", type="server_error")
            )
        refused = any(isinstance(e, se.ErrorEvent) for e in self.core.state.events[emitted:])
        self.observers.client_input(self.info, event, not refused, at)
        self.flush()

    def _is_voice(self, command: StartResponse) -> bool:
        """A caller is listening: the answer is spoken, or the session has sent audio."""
        return command.modality == "audio" or self.listening.history.samples > 0

    def _refuse_text_response(self) -> Refusal | None:
        """Admission for a ``response.create`` of a session that is not a voice session."""
        if self.listening.history.samples > 0:
            return None
        return self.scheduler.admission.text_response()

    def client_error(self, error: RealtimeError) -> None:
        self.observers.client_event(self.info, "invalid")
        self.observers.client_input(self.info, None, False, time.time())
        self.core.reject(error)
        self.flush()

    def caller_audio(self, pcm: PcmAudio) -> None:
        self.observers.caller_audio(self.info, pcm, time.time())
        self.report(CallerAudio(pcm))

    def dtmf(self, digit: str) -> None:
        self.observers.dtmf(self.info, digit)
        self._send(se.InputAudioBufferDtmfEventReceived(event=digit, received_at=int(time.time())))

    def playout_frame(self, events_out: Callable[[], bool] | None = None) -> PcmAudio:
        if self.playback is None:
            return np.zeros(FRAME_MS * 24, dtype=np.int16)
        return self.playback.pull(events_out)

    @property
    def playout_idle(self) -> bool:
        return self.playback is None or self.playback.idle

    def notify_playout(self, wake: Callable[[], None]) -> None:
        if self.playback is not None:
            self.playback.on_queued = wake

    def fail(self, error: RealtimeError) -> None:
        """Report a transport-level problem as an ``error`` event (closing when it is fatal)."""
        self.core.reject(error)
        self.flush()

    async def aclose(self) -> None:
        """Stop all work of this session (the client is gone)."""
        self.closed = True
        self._cancel_idle_timer()
        if self._expiry is not None:
            self._expiry.cancel()
        await self.listening.aclose()
        await self.speculation.aclose()
        closing = getattr(self.responder, "aclose", None)  # a responder holding a connection
        if closing is not None:
            await closing()
        self.observers.session_ended(self.info)
        for work in self._responses.values():
            work.token.cancel()
        self._responses.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ driving the core

    def report(self, result: Result) -> None:
        """Give the core a result and send what it emits."""
        self.core.receive(result)
        self.flush()

    def flush(self) -> None:
        """Send what the core emitted, then carry out what it asked for. Playback cleared by a
        barge-in in this batch is truncated after it (the cancelled answer's tail goes first)."""
        cleared: list[OutputCleared] = []
        for output in self.core.take_events():
            if isinstance(output, OutputAudio):
                self.observers.output_audio(self.info, output)
                if self.playback is None or not self.playback.holding:  # else placed on release
                    self.listening.echo.played(output.pcm, time.monotonic() * 1000)
                if self.playback is not None:
                    self.playback.audio(output)
                else:
                    self.client.send(output)
                continue
            self._send(output)
            if isinstance(output, se.InputAudioBufferSpeechStarted):
                self._transcribe_held_turn(output.item_id)
                if self._interrupts():
                    self.listening.echo.barged_in(time.monotonic() * 1000)  # the client stops playing here
            if self.playback is not None and isinstance(output, se.ServerEvent):
                found = self.playback.after_event(output)
                if found is not None:
                    cleared.append(found)
        for command in self.core.take_commands():
            self._execute(command)
        self._follow_held_speech()
        for result in cleared:
            self.report(result)

    def _transcribe_held_turn(self, item_id: str) -> None:
        """Held speech turned out to be a turn: its streaming transcription starts now, over
        the audio since its onset. Held, it is not transcribed beyond the one pass that judges
        it: partial passes then would only compete with that pass for the CPU."""
        held, self._held_start = self._held_start, None
        if held is not None and held.item_id == item_id:
            self.listening.on_speech_started(replace(held, held=False))

    def _follow_held_speech(self) -> None:
        """On WebRTC and SIP the answer pauses while speech heard during it awaits its verdict
        (``semantic_vad``): the caller hears it stop at their onset; a backchannel lets it
        play on, an interruption clears it (playback.py)."""
        holding = self.core.holding_speech
        if self.playback is None or holding == self._holding_speech:
            return
        self._holding_speech = holding
        if holding:
            self.playback.hold()
            self.listening.echo.stopped(time.monotonic() * 1000)  # nothing plays from here
        else:
            self.playback.release()

    def _playing_on(self, queued: PcmAudio) -> None:
        """A hold ended: what is queued plays from now (the echo guard places it there)."""
        self.listening.echo.played(queued, time.monotonic() * 1000)

    def _send(self, output: ClientOutput) -> None:
        event = output.event if isinstance(output, RetrievedItem) else output
        if isinstance(event, se.ServerEvent):
            self.observers.server_event(self.info, event)
        self.client.send(output)

    def _publish(self, event: se.ServerEvent) -> None:
        """An event of the runtime's own (playback): observed and sent like the core's."""
        self._send(event)

    def _played(self, response_id: str, item_id: str, pcm: PcmAudio) -> None:
        self.observers.played_audio(self.info, response_id, item_id, pcm)

    def _interrupts(self) -> bool:
        detection = self.core.session.audio.input.turn_detection
        return detection is not None and bool(getattr(detection, "interrupt_response", False))

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _execute(self, command: Command) -> None:
        match command:
            case StartResponse():
                token = CancelToken()
                self.timings[command.response_id] = TurnTimings(created=time.monotonic())
                voice = self._is_voice(command)
                with serving(PRIORITY_TURN if voice else PRIORITY_TEXT):
                    task = self._spawn(self._run_response(command, token), f"response:{command.response_id}")
                if not voice:  # counted until the task ends, however it ends
                    self.scheduler.admission.text_started()
                    task.add_done_callback(lambda _: self.scheduler.admission.text_finished())
                self._responses[command.response_id] = _Work(token, task)
            case CancelResponse():
                work = self._responses.pop(command.response_id, None)
                if work is not None:
                    work.token.cancel()
                for call in self._mcp_calls.pop(command.response_id, {}).values():
                    call.cancel()
            case ListMcpTools():
                listing = self._spawn(self._list_mcp_tools(command), f"mcp-list:{command.item_id}")
                self._mcp_listings[command.item_id] = listing
                listing.add_done_callback(lambda _: self._mcp_listings.pop(command.item_id, None))
            case CallMcpTool():
                call = self._spawn(self._call_mcp_tool(command), f"mcp-call:{command.item_id}")
                self._mcp_calls.setdefault(command.response_id, {})[command.item_id] = call
            case AnalyzeImage():
                analysed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._image_analyses.setdefault(command.item_id, []).append(analysed)
                self._spawn(self._analyze_image(command, analysed), f"image:{command.item_id}")
            case TranscribeItem():
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._transcripts[command.item_id] = future
                self._spawn(self._transcribe(command, future), f"transcribe:{command.item_id}")
            case InputAppended():
                reduction = self.core.session.audio.input.noise_reduction
                self.listening.echo.configure(reduction.type if reduction is not None else None)
                self.listening.on_append(command)
            case SpeechStarted():
                self._cancel_idle_timer()
                if command.held:  # transcribed as a turn only once it is one (flush)
                    self._held_start = command
                    log.debug(
                        "speech from %d ms held at input %.0f ms",
                        command.audio_start_ms,
                        self.listening.echo.clock_ms,
                    )
                else:
                    self.listening.on_speech_started(command)
                self.speculation.on_speech_started()
            case InputCommitted():
                if command.by_vad:
                    self.speech_stopped_at[command.item_id] = time.monotonic()
                self.listening.on_committed(command)
                self.speculation.on_committed(command.item_id, command.by_vad)
            case PredictEndOfTurn():
                self._spawn(self.listening.predict_end_of_turn(command), "end-of-turn")
            case ResponseFinished():
                self._arm_idle_timer(command)
            case InputBufferCleared():
                self.listening.on_cleared()
                self.speculation.on_cleared()
            case HeldSpeechDropped():
                self._held_start = None  # a backchannel: it is not transcribed as a turn
                self.listening.on_cleared()
                self.speculation.on_cleared()
            case TranscribeHeld():
                self._spawn(self.listening.transcribe_held(command), f"held:{command.item_id}")
            case ClearOutputAudio():
                self.listening.echo.stopped(time.monotonic() * 1000)
                cleared = self.playback.clear("client_cancelled") if self.playback is not None else None
                if cleared is not None:
                    self.report(cleared)
            case CloseConnection():
                self.closed = True
                self._spawn(self.client.close(command.code, command.reason), "close")

    # ------------------------------------------------------------------ timers

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
            self.report(IdleTimeout())

        self._idle_timer = asyncio.get_running_loop().call_later(delay, fire)

    # ------------------------------------------------------------------ responses (ResponseHost)

    async def _run_response(self, command: StartResponse, token: CancelToken) -> None:
        try:
            refusal = await self._refusal(command)
            adopt = lambda guessed: self._adopt(command.response_id, guessed)  # noqa: E731
            if refusal is not None:
                await refuse(self, command, token, refusal)
            elif not await self.speculation.release(command, token, adopt):
                await self.responder.respond(command, token)
        finally:
            self._responses.pop(command.response_id, None)
            self.flush()
            self._log_timings(command)

    def _adopt(self, response_id: str, token: CancelToken) -> None:
        """A released guess's token is the response's now: the core's cancel reaches it."""
        work = self._responses.get(response_id)
        if work is not None:
            work.token = token

    async def _refusal(self, command: StartResponse) -> str | None:
        """The moderation's refusal when the caller turn this response answers was blocked."""
        if self.moderation is None:
            return None
        heard = [i for i in command.context_item_ids if i in self._transcripts]
        if not heard:
            return None
        await asyncio.wait([self._transcripts[heard[-1]]], timeout=TRANSCRIPT_WAIT_S)
        return self.moderation.refusal if heard[-1] in self.refused_items else None

    def chat_request(self, response_id: str) -> ChatRequest | None:
        request = self.core.chat_request(response_id)
        self.flush()  # a context that cannot fit failed the response
        return request

    def is_live(self, response_id: str) -> bool:
        return self.core.responses.live_response(response_id) is not None

    def spoken_text(self, response_id: str) -> str:
        response = self.core.responses.live_response(response_id)
        return response.text if response is not None else ""

    def mcp_calls_pending(self, response_id: str) -> bool:
        return self.core.mcp_calls_pending(response_id)

    async def context_ready(self, command: StartResponse) -> None:
        """Transcripts and image analyses of the items it reads, then MCP listings and calls."""
        waits = [self._transcripts[i] for i in command.context_item_ids if i in self._transcripts]
        waits += [f for i in command.context_item_ids for f in self._image_analyses.get(i, ())]
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), TRANSCRIPT_WAIT_S)
        listings = [self._mcp_listings[i] for i in self.core.mcp_listing_pending() if i in self._mcp_listings]
        if listings:
            await asyncio.wait(listings, timeout=self.mcp_policy.timeout_s + 5)
        await self.tools_settled(command.response_id)

    async def tools_settled(self, response_id: str) -> None:
        calls = list(self._mcp_calls.get(response_id, {}).values())
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)
        self._mcp_calls.pop(response_id, None)

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
        reused = self.listening.reused_pass.pop(user_items[-1], None) if user_items else None
        record = {
            "response_id": command.response_id,
            "from": "speech_stopped" if origin is not None else "response_created",
            "transcript_ready_ms": ms(ready),
            "transcript_reused_pass": reused,
            "response_created_ms": ms(timings.created),
            "llm_first_token_ms": ms(timings.llm_first_token),
            "first_piece_ms": ms(timings.first_piece),
            "tts_first_chunk_ms": ms(timings.tts_first_chunk),
            "first_audio_sent_ms": ms(timings.first_audio_sent),
            "upstream_first_output_ms": ms(timings.upstream_first_output),
            "prompt_tokens": timings.prompt_tokens,
            "cached_prompt_tokens": timings.cached_prompt_tokens,
            "asr_queue_wait_ms": round(self.scheduler.asr.last_wait_s * 1000, 1),
            "llm_queue_wait_ms": round(self.scheduler.llm.last_wait_s * 1000, 1),
            **self.speculation.timing_fields(command.response_id),
        }
        log.info("turn timings %s", json.dumps(record))
        self.observers.turn_timings(self.info, record)

    # ------------------------------------------------------------------ transcription, images, MCP

    async def _transcribe(self, command: TranscribeItem, done: asyncio.Future[None]) -> None:
        try:
            if self.engines.transcriber is None:
                self.report(TranscriptFailed(command.item_id, "No speech recognition engine is configured."))
                return
            result, seconds, deltas = await self.listening.transcribe(command)
            self.transcript_ready_at[command.item_id] = time.monotonic()
            text = result.text.strip()
            if self.moderation is not None and text and self.core.state.realtime is not None:
                verdict = await self.moderation.check_input(text, session_id=self.session_id)
                if verdict.blocked:
                    self.refused_items.add(command.item_id)
                text = verdict.text
            usage = usage_for(seconds, result.output_tokens or self.engines.llm.count_tokens(text))
            for delta in deltas:
                self.core.receive(TranscriptDelta(command.item_id, delta))
            self.core.receive(TranscriptCompleted(command.item_id, text, usage))
        except Exception as exc:
            log.exception("transcription failed")
            self.core.receive(TranscriptFailed(command.item_id, f"The audio could not be transcribed: {exc}"))
        finally:
            if not done.done():
                done.set_result(None)
            self.flush()

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
            self.core.receive(ImageAnalyzed(command.item_id, command.content_index, analysis.text))
        except Exception as exc:
            log.warning("image %s[%d] could not be analysed: %s", command.item_id, command.content_index, exc)
            reason = getattr(exc, "message", None) or "the analysis failed"
            text = f"[The user shared an image that could not be analysed ({reason}); nothing about it is known.]"
            self.core.receive(ImageAnalyzed(command.item_id, command.content_index, text))
        finally:
            if not done.done():
                done.set_result(None)
            self.flush()

    async def _list_mcp_tools(self, command: ListMcpTools) -> None:
        label = command.server_label
        try:
            tools = await mcp_client.list_tools(command.server_url, command.headers, self.mcp_policy)
            self.core.receive(McpToolsListed(command.item_id, tuple(tools)))
        except mcp_client.McpFailure as failure:
            message = f"Listing the tools of MCP server '{label}' failed: {failure.message}"
            self.core.receive(McpToolsFailed(command.item_id, failure.code, message))
        except Exception as exc:
            log.exception("listing MCP tools failed")
            message = f"Listing the tools of '{label}' failed: {exc}"
            self.core.receive(McpToolsFailed(command.item_id, "mcp_server_error", message))
        finally:
            self.flush()

    async def _call_mcp_tool(self, command: CallMcpTool) -> None:
        rid, item_id = command.response_id, command.item_id
        try:
            output = await mcp_client.call_tool(
                command.server_url, command.headers, command.name, command.arguments, self.mcp_policy
            )
            self.core.receive(McpCallDone(rid, item_id, output, None))
        except mcp_client.McpFailure as failure:
            self.core.receive(McpCallDone(rid, item_id, None, failure.error))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("MCP call failed")
            error = {"type": "tool_execution_error", "message": f"The MCP call failed: {exc}"}
            self.core.receive(McpCallDone(rid, item_id, None, error))
        finally:
            self.flush()
