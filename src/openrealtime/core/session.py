"""The sans-I/O Realtime session: client events and results in, server events and commands out.

No sockets, threads or clocks: the runtime gives ``SessionCore`` parsed client events
(``handle``), what the engines and timers produced (``receive``) and frames that did not parse
(``reject``), and sends what it emits (``take_events``) and carries out what it asks
(``take_commands``). Ids come from an injected source and time only as values, so the core is
deterministic under test. Every ordering rule of the protocol (spec §10b) is kept here.

The parts live by concept: the input buffer and turns (input_buffer.py, turns.py), items
(items.py), responses (responses.py), MCP (mcp.py), usage (usage.py); their phases and the one
transition table are in state.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

from pydantic import ValidationError

from ..engines.base import ChatRequest
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.ids import new_id
from ..protocol.session import RealtimeSession, TranscriptionSession, merge_session_update
from .commands import ClearOutputAudio, Command
from .conversation import Conversation
from .events import (
    AppendAudio,
    CallerAudio,
    CallerLanguageChanged,
    CancelRequested,
    ClientInput,
    CreateItem,
    EndOfTurnPredicted,
    GenerationFailed,
    GenerationFinished,
    HeldSpeechHeard,
    IdleTimeout,
    ImageAnalyzed,
    McpCallDone,
    McpToolsFailed,
    McpToolsListed,
    Output,
    OutputCleared,
    PromptRead,
    Result,
    SessionExpired,
    SpeechGenerated,
    SpeechProbabilities,
    TextGenerated,
    ToolCalled,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
)
from .input_buffer import InputTurns
from .items import Items
from .mcp import Mcp, check_session_tools
from .responses import Response, Responses
from .state import IdSource, Limits, ResponsePhase, SessionState
from .turns import SegmenterState

__all__ = ["Limits", "SessionCore"]


class SessionCore:
    """One Realtime session's state machine (see the module docs)."""

    def __init__(
        self,
        session: RealtimeSession | TranscriptionSession,
        *,
        count_tokens: Callable[[str], int],
        created_at: int,
        limits: Limits | None = None,
        ids: IdSource = new_id,
        server_playback: bool = False,
        llm_sees_images: bool = False,
        voice_check: Callable[[str], str | None] | None = None,
        budget_check: Callable[[], str | None] | None = None,
        budget_rate_limit: Callable[[str, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        limits = limits or Limits()
        own = session.model_copy(deep=True)
        own.id = own.id or ids("sess_")
        own.expires_at = created_at + round(limits.max_session_minutes * 60)
        self.state = SessionState(own, count_tokens, limits, ids, llm_sees_images)
        self.server_playback = server_playback
        """The transport plays the audio out itself (WebRTC, SIP): ``output_audio_buffer.clear``
        is allowed."""
        self.items = Items(self.state, decide_approval=self._decide_approval)
        self.responses = Responses(
            self.state,
            self.items,
            voice_check=voice_check,
            budget_check=budget_check,
            budget_rate_limit=budget_rate_limit,
        )
        self.mcp = Mcp(self.state, self.responses)
        self.input = InputTurns(
            self.state,
            on_speech_started=self._speech_started,
            on_turn_committed=self._turn_committed,
            answering=lambda: self.responses.active_default is not None,
        )

    # ------------------------------------------------------------------ reading

    @property
    def session(self) -> RealtimeSession | TranscriptionSession:
        return self.state.session

    @property
    def conversation(self) -> Conversation:
        return self.state.conversation

    @property
    def limits(self) -> Limits:
        return self.state.limits

    @property
    def closed(self) -> bool:
        return self.state.closed

    @property
    def holding_speech(self) -> bool:
        """Speech heard during the answer awaits its verdict (backchannel or interruption), or
        may be starting (the VAD's first frames of it)."""
        return self.input.held is not None or self.input.onset_held

    @property
    def hearing_speech(self) -> bool:
        """The VAD is following speech or timing the pause after it: the input's time counts
        now (a media transport fills gaps in its caller's stream in real time)."""
        segmenter = self.input.segmenter
        return segmenter is not None and segmenter.state is not SegmenterState.IDLE

    @property
    def input_format(self) -> str:
        return self.state.session.audio.input.format.type

    def take_events(self) -> list[Output]:
        out, self.state.events = self.state.events, []
        return out

    def take_commands(self) -> list[Command]:
        out, self.state.commands = self.state.commands, []
        return out

    def chat_request(self, response_id: str) -> ChatRequest | None:
        """The request for a running response's model, from its context as it is now."""
        return self.responses.chat_request(response_id, self.mcp.tools_for_model)

    def mcp_listing_pending(self) -> list[str]:
        return self.mcp.listing_pending()

    def mcp_calls_pending(self, response_id: str) -> bool:
        response = self.responses.live_response(response_id)
        return response is not None and response.phase is ResponsePhase.AWAITING_TOOL

    # ------------------------------------------------------------------ entry points

    def start(self) -> None:
        """Emit ``session.created``: always the first event of a connection."""
        self.state.emit(se.SessionCreated(session=self.state.session_wire()))

    def reject(self, err: RealtimeError) -> None:
        """A client frame that could not be used (it did not parse, it was over a rate limit, a
        transport problem): an ``error`` event, closing the session when ``err`` is fatal."""
        self.state.error(err)

    def handle(self, event: ClientInput) -> None:
        """One client event; a refusal becomes an ``error`` event carrying its ``event_id``."""
        if self.state.closed:
            return
        try:
            self._dispatch(event)
        except RealtimeError as err:
            if err.event_id is None:
                err.event_id = event.event_id
            self.state.error(err)

    def _dispatch(self, event: ClientInput) -> None:
        match event:
            case ce.SessionUpdate():
                self._update_session(event)
            case AppendAudio():
                self.input.append(event.pcm)
            case ce.InputAudioBufferCommit():
                self.input.commit()
            case ce.InputAudioBufferClear():
                self.input.clear()
            case CreateItem():
                self.items.create(event)
            case ce.ConversationItemRetrieve():
                self.items.retrieve(event)
            case ce.ConversationItemTruncate():
                self.items.truncate(event.item_id, event.content_index, event.audio_end_ms)
            case ce.ConversationItemDelete():
                self.items.delete(event)
            case ce.ResponseCreate():
                self._create_response(event)
            case ce.ResponseCancel():
                target = event.response_id or self.responses.active_default
                response = self.responses.live_response(target) if target is not None else None
                if response is None:
                    raise RealtimeError(
                        "response_cancel_not_active", "Cancellation failed: no active response found"
                    )
                self.responses.cancel(response, "client_cancelled")
            case ce.OutputAudioBufferClear():
                if not self.server_playback:
                    raise RealtimeError(
                        "invalid_request_error",
                        "output_audio_buffer.clear is only supported on WebRTC and SIP connections.",
                        param="type",
                    )
                self.state.command(ClearOutputAudio())
            case _:
                assert_never(event)

    def receive(self, result: Result) -> None:
        """One result from the runtime. Results for a response that is no longer live are
        dropped here (``Responses.live_response``), the one place the core does so."""
        match result:
            case (
                TextGenerated()
                | SpeechGenerated()
                | ToolCalled()
                | PromptRead()
                | GenerationFinished()
                | GenerationFailed()
                | CancelRequested()
                | McpCallDone()
            ):
                response = self.responses.live_response(result.response_id)
                if response is not None:
                    self._response_result(response, result)
            case OutputCleared():
                self._output_cleared(result)
            case McpToolsListed():
                self.mcp.listed(result)
            case McpToolsFailed():
                self.mcp.failed(result)
            case TranscriptDelta():
                if result.delta and result.item_id in self.state.conversation and self._transcription_on():
                    self.state.emit(se.TranscriptionDelta(item_id=result.item_id, delta=result.delta))
            case TranscriptCompleted():
                self._transcript_completed(result)
            case TranscriptFailed():
                if result.item_id in self.state.conversation and self._transcription_on():
                    error = {
                        "type": "transcription_error",
                        "code": "audio_unintelligible",
                        "message": result.message,
                    }
                    self.state.emit(
                        se.TranscriptionFailed(item_id=result.item_id, error={**error, "param": None})
                    )
            case CallerLanguageChanged():
                self.state.caller_language = result.language
            case ImageAnalyzed():
                self.items.image_analyzed(result)
            case SpeechProbabilities():
                self.input.speech_probabilities(result)
            case EndOfTurnPredicted():
                self.input.end_of_turn(result)
            case HeldSpeechHeard():
                self.input.held_speech_heard(result)
            case CallerAudio():
                if not self.state.closed:
                    self.input.caller_audio(result.pcm)
            case IdleTimeout():
                if self.responses.active_default is None and self.input.idle_timeout():
                    self._auto_response()
            case SessionExpired():
                minutes = self.state.limits.max_session_minutes
                message = f"Your session hit the maximum duration of {minutes:g} minutes."
                self.state.error(RealtimeError("session_expired", message, fatal=True))
            case _:
                assert_never(result)

    # ------------------------------------------------------------------ coordination

    def _response_result(
        self,
        response: Response,
        result: TextGenerated
        | SpeechGenerated
        | ToolCalled
        | PromptRead
        | GenerationFinished
        | GenerationFailed
        | CancelRequested
        | McpCallDone,
    ) -> None:
        responses = self.responses
        match result:
            case TextGenerated():
                responses.text(response, result.text)
            case SpeechGenerated():
                responses.speech(response, result.pcm)
            case ToolCalled():
                # while one of its MCP calls runs, the response's output is that call's item
                if response.phase is not ResponsePhase.AWAITING_TOOL and not self.mcp.route(
                    response, result.name, result.arguments
                ):
                    responses.function_call(response, result.name, result.call_id, result.arguments)
            case PromptRead():
                responses.prompt_read(response, result.prompt_tokens, result.cached_tokens)
            case GenerationFinished():
                responses.finished(
                    response,
                    result.finish_reason,
                    result.prompt_tokens,
                    result.cached_tokens,
                    result.completion_tokens,
                    result.usage,
                )
            case GenerationFailed():
                responses.failed(response, result.code, result.message)
            case CancelRequested():
                responses.cancel(response, result.reason)
            case McpCallDone():
                self.mcp.call_done(response, result)
            case _:
                assert_never(result)

    def _output_cleared(self, result: OutputCleared) -> None:
        """Playback dropped an answer's queued audio: stop it if it still runs (the one cancel)
        and truncate its item to what the caller heard."""
        response = self.responses.live_response(result.response_id)
        if response is not None:
            self.responses.cancel(response, result.reason)
        track = self.state.conversation.audio.get((result.item_id, 0))
        if track is None or result.item_id not in self.state.conversation or track.duration_ms == 0:
            return  # out-of-band answers are not in the conversation
        try:
            self.items.truncate(result.item_id, 0, min(result.played_ms, track.duration_ms))
        except RealtimeError as err:
            self.state.error(err)

    def _decide_approval(self, item: dict[str, Any]) -> None:
        self.mcp.decide(item)

    def _speech_started(self) -> None:
        """Barge-in: with ``interrupt_response`` the default response stops at once."""
        detection = self.state.session.audio.input.turn_detection
        active = self.responses.active_default
        if detection is not None and detection.interrupt_response and active is not None:
            response = self.responses.live_response(active)
            if response is not None:
                self.responses.cancel(response, "turn_detected")

    def _turn_committed(self) -> None:
        detection = self.state.session.audio.input.turn_detection
        if detection is not None and detection.create_response and self.state.realtime is not None:
            self._auto_response()

    def _auto_response(self) -> None:
        """Answer the committed turn (refused while one is running)."""
        try:
            self._create_response(ce.ResponseCreate(type="response.create"))
        except RealtimeError as err:
            self.state.error(err)

    def _create_response(self, event: ce.ResponseCreate) -> None:
        response = self.responses.create(event, self.mcp.labels)
        if not response.out_of_band:
            self.mcp.run_approved(response)
        self.responses.start(response)

    def _transcription_on(self) -> bool:
        return self.state.session.audio.input.transcription is not None

    def _transcript_completed(self, result: TranscriptCompleted) -> None:
        """Fill the user item's transcript (the model reads it) and report it when enabled."""
        item = self.state.conversation.get(result.item_id)
        if item is None:
            return
        for part in item.get("content") or []:
            if part.get("type") == "input_audio":
                part["transcript"] = result.transcript
                break
        if self._transcription_on():
            self.state.emit(
                se.TranscriptionCompleted(
                    item_id=result.item_id, transcript=result.transcript, usage=result.usage
                )
            )

    def _update_session(self, event: ce.SessionUpdate) -> None:
        state = self.state
        current = state.session
        patch = event.session
        if "type" not in patch:
            raise RealtimeError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                param="session.type",
            )
        if patch["type"] != current.type:
            raise RealtimeError(
                "invalid_value",
                f"Invalid value: '{patch['type']}'. This is a {current.type} session; "
                f"supported value: '{current.type}'.",
                param="session.type",
            )
        ce.check_removed_session_fields(patch, event.event_id)
        merged = merge_session_update(state.session_wire(), patch)
        try:
            updated = type(current).model_validate(merged)
        except ValidationError as exc:
            raise ce.error_from_validation(
                exc, event_id=event.event_id, data=merged, prefix="session"
            ) from None
        if isinstance(updated, RealtimeSession) and isinstance(current, RealtimeSession):
            new_voice, old_voice = updated.audio.output.voice, current.audio.output.voice
            if new_voice != old_voice:
                if self.responses.audio_output_started:
                    raise RealtimeError(
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        param="session.audio.output.voice",
                    )
                self.responses.check_voice(new_voice, "session.audio.output.voice")
            if current.tracing is not None and updated.tracing != current.tracing:
                raise RealtimeError(
                    "invalid_value", "Tracing cannot be modified once enabled.", param="session.tracing"
                )
            check_session_tools(updated)
        updated.id = current.id
        updated.expires_at = current.expires_at
        state.session = updated
        self.input.configure()
        state.emit(se.SessionUpdated(session=state.session_wire()))
        self.mcp.sync()
