"""Responses: created by ``response.create`` (or a committed turn), fed by the engines, ended
by the engines, a failure or a cancel.

Each response moves ``CREATED`` → ``GENERATING`` ⇄ ``AWAITING_TOOL`` → ``DONE`` (state.py). The
event sequences of spec §10b rules 2-5 are produced here: output items never interleave, every
delta stream gets its ``done``, one default-conversation response at a time.

**One way to cancel.** ``Responses.cancel`` is the only cancel: ``response.cancel``, barge-in,
cleared playback and work the runtime discards all end in it. A cancelled (or finished)
response leaves ``live`` at once, and ``Responses.live_response`` is where every later result
for it is dropped (``SessionCore.receive`` asks it first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines.base import ChatRequest
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.items import item_to_wire
from ..protocol.session import RealtimeSession
from .commands import CancelResponse, ResponseFinished, StartResponse
from .context import RequestOptions, request_for
from .conversation import AudioTrack
from .events import CancelReason, OutputAudio, PcmAudio
from .items import Item, Items, assistant_content, assistant_message, function_call, pcm_bytes, response_part
from .languages import normalise_language
from .state import ResponsePhase, ResponseTrigger, SessionState, transition
from .usage import Usage, account_context, estimate_prompt_tokens

ToolsForModel = Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], dict[str, str]]]
"""Session tools → (function tools the model is offered, MCP tool name → server label)."""


@dataclass
class OutputItem:
    item: Item
    output_index: int


@dataclass
class Response:
    """One response in progress: its overrides, output so far and accounting."""

    id: str
    conversation_id: str | None
    modality: Literal["audio", "text"]
    voice: str
    output_format: str
    max_output_tokens: int | Literal["inf"]
    metadata: dict[str, str] | None
    context_items: list[Item]
    options: RequestOptions
    context_audio_ms: int = 0
    phase: ResponsePhase = ResponsePhase.CREATED
    outputs: list[OutputItem] = field(default_factory=list)
    open_item: OutputItem | None = None
    text: str = ""
    audio: AudioTrack | None = None
    usage: Usage = field(default_factory=Usage)
    prompt_reported: bool = False
    audio_ms_total: int = 0
    mcp_routes: dict[str, str] = field(default_factory=dict)
    """Tool name → MCP server label, for the MCP tools this response offers the model."""
    pending_tools: dict[str, OutputItem] = field(default_factory=dict)
    """``mcp_call`` output items whose result the runtime has not reported yet."""
    billed: dict[str, Any] | None = None
    """Usage reported by the model's own service, used as it is (``GenerationFinished.usage``)."""

    @property
    def out_of_band(self) -> bool:
        return self.conversation_id is None

    def move(self, trigger: ResponseTrigger) -> None:
        self.phase = transition(self.phase, trigger)

    def wire(
        self, status: str, status_details: dict[str, Any] | None, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": status_details,
            "output": [item_to_wire(o.item) for o in self.outputs],
            "conversation_id": self.conversation_id,
            "output_modalities": [self.modality],
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": {"format": _format_obj(self.output_format), "voice": self.voice}},
            "usage": usage,
            "metadata": self.metadata,
        }


def _format_obj(kind: str) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if kind == "audio/pcm" else {"type": kind}


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class Responses:
    """The live responses of a session and everything that happens to them."""

    def __init__(
        self,
        state: SessionState,
        items: Items,
        *,
        voice_check: Callable[[str], str | None] | None = None,
        budget_check: Callable[[], str | None] | None = None,
        budget_rate_limit: Callable[[str, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.state = state
        self.items = items
        self.voice_check = voice_check
        # spending budget of the session's key: a refusal message, and the
        # ``rate_limits.updated`` entry after a response (see telemetry/budget.py)
        self.budget_check = budget_check
        self.budget_rate_limit = budget_rate_limit
        self.live: dict[str, Response] = {}
        self.active_default: str | None = None
        """The default-conversation response in progress (one at a time, rule 5)."""
        self.audio_output_started = False
        """Assistant audio exists: the voice can no longer change."""
        self.conversation_id = state.new_id("conv_")
        self.tokens_used = 0

    def live_response(self, response_id: str) -> Response | None:
        """The response if it is still running. Results for finished, cancelled or unknown
        responses are stale: this is the one place they are dropped."""
        return self.live.get(response_id)

    def check_voice(self, voice: Any, param: str) -> None:
        if self.voice_check is None:
            return
        name = voice if isinstance(voice, str) else getattr(voice, "id", str(voice))
        problem = self.voice_check(name)
        if problem:
            raise RealtimeError("invalid_value", problem, param=param)

    # ------------------------------------------------------------------ creating

    def create(self, event: ce.ResponseCreate, mcp_labels: set[str]) -> Response:
        """Validate ``response.create`` and emit ``response.created``; ``start`` follows once
        approved MCP calls were started (they run before the model)."""
        state = self.state
        session = state.realtime
        if session is None:
            raise RealtimeError(
                "invalid_request_error", "Transcription sessions do not create responses.", param="type"
            )
        params = event.response or ce.ResponseParams()
        out_of_band = params.conversation == "none"
        if not out_of_band and self.active_default is not None:
            raise RealtimeError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active_default}. "
                "Wait until the response is finished before creating a new one.",
            )
        refusal = self.budget_check() if self.budget_check is not None else None
        if refusal:
            raise RealtimeError("insufficient_quota", refusal, type="insufficient_quota")
        for index, tool in enumerate(params.tools or []):
            if tool.type == "mcp" and tool.server_label not in mcp_labels:
                raise RealtimeError(
                    "unsupported_tool_type",
                    f"MCP server '{tool.server_label}' is not configured on the session: add it with "
                    "session.update first (its tools are listed once, there).",
                    param=f"response.tools[{index}]",
                )
        items = self._context(params, event.event_id)
        modality = (params.output_modalities or session.output_modalities)[0]
        audio_out = params.audio.output if params.audio and params.audio.output else None
        voice_obj = (
            audio_out.voice if audio_out and audio_out.voice is not None else session.audio.output.voice
        )
        voice = voice_obj if isinstance(voice_obj, str) else voice_obj.id
        if audio_out and audio_out.voice is not None:
            self.check_voice(voice_obj, "response.audio.output.voice")
        fmt = (audio_out.format if audio_out and audio_out.format else session.audio.output.format).type
        max_tokens = (
            params.max_output_tokens if params.max_output_tokens is not None else session.max_output_tokens
        )
        tools = [
            t.model_dump(mode="json") for t in (params.tools if params.tools is not None else session.tools)
        ]
        chosen = params.tool_choice if params.tool_choice is not None else session.tool_choice
        response = Response(
            id=state.new_id("resp_"),
            conversation_id=None if out_of_band else self.conversation_id,
            modality=modality,
            voice=voice,
            output_format=fmt,
            max_output_tokens=max_tokens,
            metadata=params.metadata,
            context_items=list(items),
            context_audio_ms=self._user_audio_ms(items),
            options=RequestOptions(
                instructions=params.instructions if params.instructions is not None else session.instructions,
                tools=tools,
                tool_choice=chosen if isinstance(chosen, str) else chosen.model_dump(mode="json"),
                max_output_tokens=None if max_tokens == "inf" else int(max_tokens),
                max_input_tokens=self._max_input_tokens(session, max_tokens),
                truncate=session.truncation != "disabled",
            ),
        )
        self.live[response.id] = response
        if not out_of_band:
            self.active_default = response.id
        state.emit(se.ResponseCreated(response=response.wire("in_progress", None, None)))
        return response

    def start(self, response: Response) -> None:
        """Ask the runtime to generate the response."""
        session = self.state.realtime
        assert session is not None
        self.state.command(
            StartResponse(
                response_id=response.id,
                context_item_ids=tuple(item.get("id") or "" for item in response.context_items),
                modality=response.modality,
                voice=response.voice,
                speed=session.audio.output.speed,
                output_format=response.output_format,
                language=self.answer_language(),
            )
        )

    def answer_language(self) -> str | None:
        """The client's ``transcription.language``, else the language the caller is heard in."""
        session = self.state.realtime
        transcription = session.audio.input.transcription if session is not None else None
        explicit = normalise_language(transcription.language if transcription is not None else None)
        return explicit or normalise_language(self.state.caller_language)

    def _context(self, params: ce.ResponseParams, event_id: str | None) -> list[Item]:
        """The items a response reads: its ``input`` (references and inline items) or the
        whole conversation."""
        conversation = self.state.conversation
        if params.input is None:
            return conversation.items()
        items: list[Item] = []
        for index, entry in enumerate(params.input):
            if entry.get("type") == "item_reference":
                found = conversation.get(entry["id"])
                if found is None:
                    raise RealtimeError(
                        "invalid_value",
                        f"Item with id '{entry['id']}' does not exist in the conversation.",
                        param=f"response.input[{index}].id",
                    )
                items.append(found)
                continue
            inline = ce.parse_item(entry, f"response.input[{index}]", event_id).model_dump(
                mode="json", exclude_none=True
            )
            for part_index, part in enumerate(inline.get("content") or ()):
                if part.get("type") == "input_image":
                    self.items.accept_image(part, part_index, prefix=f"response.input[{index}]")
            items.append(inline)
        return items

    def _max_input_tokens(self, session: RealtimeSession, max_tokens: int | str) -> int:
        reserve = 4096 if max_tokens == "inf" else int(max_tokens)
        budget = self.state.limits.max_context_tokens - reserve
        truncation = session.truncation
        if not isinstance(truncation, str) and truncation.retention_ratio < 1:
            budget = int(budget * max(0.05, truncation.retention_ratio))
        return max(256, budget)

    def _user_audio_ms(self, items: Sequence[Item]) -> int:
        audio = self.state.conversation.audio
        total = 0
        for item in items:
            if item.get("role") == "user":
                track = audio.get((item.get("id") or "", 0))
                if track is not None:
                    total += track.duration_ms
        return total

    def chat_request(self, response_id: str, tools_for_model: ToolsForModel) -> ChatRequest | None:
        """The chat request for a running response, built from its context as it is *now*
        (so transcripts that finished after ``response.create`` are included)."""
        response = self.live_response(response_id)
        if response is None:
            return None
        tools, response.mcp_routes = tools_for_model(response.options.tools)
        outputs = [out.item for out in response.outputs]
        request = request_for(
            response.context_items,
            outputs,
            response.options,
            tools,
            self.state.count_tokens,
            language=self.answer_language(),
        )
        if request is None:
            self.failed(
                response,
                "context_length_exceeded",
                "The conversation no longer fits the model's context and the session's truncation "
                "is 'disabled'; delete items or enable truncation.",
            )
        return request

    # ------------------------------------------------------------------ output

    def _open_message(self, response: Response) -> OutputItem:
        if response.open_item is not None and response.open_item.item["type"] == "message":
            return response.open_item
        self.close_open_item(response, "completed")
        item = assistant_message(self.state.new_id("item_"))
        out, _ = self.add_output_item(response, item)
        response.open_item = out
        response.text = ""
        if response.modality == "audio":
            response.audio = AudioTrack(format=response.output_format)
            if not response.out_of_band:
                self.state.conversation.audio[(item["id"], 0)] = response.audio
        self.state.emit(
            se.ResponseContentPartAdded(
                response_id=response.id,
                item_id=item["id"],
                output_index=out.output_index,
                content_index=0,
                part=response_part(response.modality, ""),
            )
        )
        return out

    def text(self, response: Response, text: str) -> None:
        """Text produced by the model: ``output_text`` or the audio transcript, by modality."""
        if not text or response.phase is ResponsePhase.AWAITING_TOOL:
            return
        response.move(ResponseTrigger.OUTPUT)
        out = self._open_message(response)
        response.text += text
        ids = {
            "response_id": response.id,
            "item_id": out.item["id"],
            "output_index": out.output_index,
            "content_index": 0,
        }
        if response.modality == "audio":
            self.state.emit(se.ResponseOutputAudioTranscriptDelta(delta=text, **ids))
        else:
            self.state.emit(se.ResponseOutputTextDelta(delta=text, **ids))

    def speech(self, response: Response, pcm: PcmAudio) -> None:
        """Speech for the text given so far."""
        if not len(pcm) or response.modality != "audio" or response.phase is ResponsePhase.AWAITING_TOOL:
            return
        response.move(ResponseTrigger.OUTPUT)
        out = self._open_message(response)
        assert response.audio is not None
        response.audio.data.extend(pcm_bytes(pcm))
        response.audio.alignment.append((len(response.audio.data), len(response.text)))
        self.audio_output_started = True
        self.state.emit(
            OutputAudio(
                response_id=response.id,
                item_id=out.item["id"],
                output_index=out.output_index,
                content_index=0,
                pcm=pcm,
                format=response.output_format,
            )
        )

    def function_call(self, response: Response, name: str, call_id: str, arguments: str) -> None:
        """A complete function call, emitted as one ``function_call`` output item."""
        response.move(ResponseTrigger.OUTPUT)
        self.close_open_item(response, "completed")
        item = function_call(self.state.new_id("item_"), name, call_id)
        out, previous = self.add_output_item(response, item)
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": out.output_index,
            "call_id": call_id,
        }
        for chunk in _chunks(arguments, 32):
            self.state.emit(se.ResponseFunctionCallArgumentsDelta(delta=chunk, **ids))
        self.state.emit(se.ResponseFunctionCallArgumentsDone(name=name, arguments=arguments, **ids))
        item["arguments"] = arguments
        item["status"] = "completed"
        if not response.out_of_band:
            self.state.emit(se.ConversationItemDone(item=dict(item), previous_item_id=previous))
        self.state.emit(
            se.ResponseOutputItemDone(response_id=response.id, output_index=out.output_index, item=dict(item))
        )

    def add_output_item(self, response: Response, item: Item) -> tuple[OutputItem, str | None]:
        """``response.output_item.added`` (and ``conversation.item.added`` in the default
        conversation); returns the output item and the id of the item before it."""
        out = OutputItem(item=item, output_index=len(response.outputs))
        response.outputs.append(out)
        self.state.emit(
            se.ResponseOutputItemAdded(
                response_id=response.id, output_index=out.output_index, item=item_to_wire(item)
            )
        )
        previous = None
        if not response.out_of_band:
            previous = self.state.conversation.last_id()
            self.state.conversation.insert(item)
            self.state.emit(se.ConversationItemAdded(item=item_to_wire(item), previous_item_id=previous))
        return out, previous

    def end_output_item(self, response: Response, out: OutputItem, status: str) -> None:
        item = out.item
        item["status"] = status
        if not response.out_of_band:
            conversation = self.state.conversation
            previous = conversation.previous_of(item["id"]) if item["id"] in conversation else None
            self.state.emit(se.ConversationItemDone(item=item_to_wire(item), previous_item_id=previous))
        self.state.emit(
            se.ResponseOutputItemDone(
                response_id=response.id, output_index=out.output_index, item=item_to_wire(item)
            )
        )

    def close_open_item(self, response: Response, status: str) -> None:
        out = response.open_item
        if out is None:
            return
        response.open_item = None
        item = out.item
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": out.output_index,
            "content_index": 0,
        }
        if response.modality == "audio":
            self.state.emit(se.ResponseOutputAudioDone(**ids))
            if response.audio is not None:
                response.audio_ms_total += response.audio.duration_ms
            self.state.emit(se.ResponseOutputAudioTranscriptDone(transcript=response.text, **ids))
        else:
            self.state.emit(se.ResponseOutputTextDone(text=response.text, **ids))
        item["content"] = assistant_content(response.modality, response.text)
        self.state.emit(
            se.ResponseContentPartDone(part=response_part(response.modality, response.text), **ids)
        )
        self.end_output_item(response, out, status)

    # ------------------------------------------------------------------ tools the server runs

    def start_tool(self, response: Response, out: OutputItem) -> None:
        """An MCP call of the response started: model output waits for its result."""
        response.move(ResponseTrigger.TOOL_STARTED)
        response.pending_tools[out.item["id"]] = out

    def settle_tool(
        self, response: Response, item_id: str, output: str | None, error: dict[str, Any] | None
    ) -> None:
        """An MCP call of the response reported (or was stopped)."""
        out = response.pending_tools.pop(item_id, None)
        if out is None:
            return
        out.item["output"] = output
        out.item["error"] = error
        if error is None:
            self.state.emit(se.ResponseMcpCallCompleted(item_id=item_id, output_index=out.output_index))
        else:
            self.state.emit(se.ResponseMcpCallFailed(item_id=item_id, output_index=out.output_index))
        self.end_output_item(response, out, "completed" if error is None else "incomplete")
        if not response.pending_tools:
            response.move(ResponseTrigger.TOOLS_SETTLED)

    # ------------------------------------------------------------------ ending

    def prompt_read(self, response: Response, prompt_tokens: int, cached_tokens: int) -> None:
        response.usage.input_text_tokens = prompt_tokens
        response.usage.cached_text_tokens = cached_tokens
        response.prompt_reported = True

    def finished(
        self,
        response: Response,
        finish_reason: str,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
        billed: Mapping[str, Any] | None = None,
    ) -> None:
        self.prompt_read(response, prompt_tokens, cached_tokens)
        response.usage.output_text_tokens = completion_tokens
        response.billed = dict(billed) if billed is not None else None
        if finish_reason == "length":
            self._finish(
                response,
                ResponseTrigger.FINISHED,
                "incomplete",
                {"type": "incomplete", "reason": "max_output_tokens"},
            )
        elif finish_reason == "content_filter":  # content safety cut the answer
            self._finish(
                response,
                ResponseTrigger.FINISHED,
                "incomplete",
                {"type": "incomplete", "reason": "content_filter"},
            )
        else:
            self._finish(response, ResponseTrigger.FINISHED, "completed", None)

    def failed(self, response: Response, code: str, message: str) -> None:
        details = {"type": "failed", "error": {"type": "server_error", "code": code, "message": message}}
        self._finish(response, ResponseTrigger.FINISHED, "failed", details)

    def cancel(self, response: Response, reason: CancelReason) -> None:
        """The one cancel: close what is open, report ``cancelled`` and tell the runtime to stop."""
        self.state.command(CancelResponse(response.id))
        count = self.state.count_tokens
        if not response.prompt_reported:
            response.usage.input_text_tokens = estimate_prompt_tokens(
                response.options.instructions, response.context_items, count
            )
        response.usage.output_text_tokens = count(response.text) if response.text else 0
        self._finish(
            response, ResponseTrigger.CANCELLED, "cancelled", {"type": "cancelled", "reason": reason}
        )

    def _finish(
        self, response: Response, trigger: ResponseTrigger, status: str, details: dict[str, Any] | None
    ) -> None:
        state = self.state
        self.close_open_item(response, "completed" if status == "completed" else "incomplete")
        for item_id in list(response.pending_tools):
            stopped = {
                "type": "tool_execution_error",
                "message": f"The call was stopped: the response {status}.",
            }
            self.settle_tool(response, item_id, None, stopped)
        response.move(trigger)
        response.usage.output_audio_ms = response.audio_ms_total
        response.usage.input_audio_ms = response.context_audio_ms
        audio = self.state.conversation.audio
        account_context(
            response.usage,
            instructions=str(response.options.instructions or ""),
            tools=response.options.tools,
            context_items=response.context_items,
            audio_ms=lambda item_id: audio[(item_id, 0)].duration_ms if (item_id, 0) in audio else 0,
            count_tokens=self.state.count_tokens,
            llm_sees_images=self.state.llm_sees_images,
        )
        usage = response.billed if response.billed is not None else response.usage.wire()
        state.emit(se.ResponseDone(response=response.wire(status, details, usage)))
        del self.live[response.id]
        if self.active_default == response.id:
            self.active_default = None
        state.command(
            ResponseFinished(
                response_id=response.id, audio_ms=response.audio_ms_total, out_of_band=response.out_of_band
            )
        )
        self.tokens_used += usage["total_tokens"]
        limit = state.limits.rate_limit_tokens
        budget = self.budget_rate_limit(response.id, usage) if self.budget_rate_limit is not None else None
        state.emit(
            se.RateLimitsUpdated(
                rate_limits=[
                    se.RateLimit(
                        name="tokens",
                        limit=limit,
                        remaining=max(0, limit - usage["total_tokens"]),
                        reset_seconds=0.001,
                    ),
                    *([se.RateLimit(**budget)] if budget else []),
                ]
            )
        )
