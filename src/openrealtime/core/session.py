"""The sans-I/O Realtime session: client events and engine results in, server events and
commands out.

No sockets, threads or clocks: the runtime feeds it parsed client events and what the engines
produced (text, audio, tool calls, transcripts, VAD decisions) and sends what it emits. Every
ordering rule of the protocol (spec §10b) is kept here, so it is tested here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from ..audio import formats
from ..engines.base import ChatRequest
from ..images.data_url import CheckedImage, ImageInputError, check_data_url
from ..images.tokens import image_tokens
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.ids import new_id
from ..protocol.items import item_to_wire
from ..protocol.session import RealtimeSession, TranscriptionSession, merge_session_update
from . import turns as seg
from .commands import (
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
from .context import build_chat_request, conversation_messages, item_text
from .conversation import AudioTrack, Conversation
from .usage import PromptAudio, PromptImage, Usage, account_audio, account_images

BYTES_PER_MS = {"audio/pcm": 48, "audio/pcmu": 8, "audio/pcma": 8}
MIN_COMMIT_MS = 100
MAX_APPEND_BYTES = 15 * 1024 * 1024


@dataclass
class Limits:
    """Per-session limits (configurable; the defaults follow the real service)."""

    max_input_buffer_ms: int = 15 * 60 * 1000
    max_context_tokens: int = 32_768
    max_items: int = 10_000
    max_session_minutes: float = 60
    rate_limit_tokens: int = 15_000_000


@dataclass
class OutputItem:
    item: dict[str, Any]
    output_index: int
    part_open: bool = False


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
    context_audio_ms: int
    outputs: list[OutputItem] = field(default_factory=list)
    open_item: OutputItem | None = None
    text: str = ""
    audio: AudioTrack | None = None
    usage: Usage = field(default_factory=Usage)
    prompt_reported: bool = False
    audio_ms_total: int = 0
    context_items: list[dict[str, Any]] = field(default_factory=list)
    request_options: dict[str, Any] = field(default_factory=dict)
    mcp_routes: dict[str, str] = field(default_factory=dict)
    """Tool name → MCP server label, for the MCP tools this response offers the model."""
    pending_mcp: dict[str, OutputItem] = field(default_factory=dict)
    """``mcp_call`` output items whose result the runtime has not reported yet."""

    @property
    def out_of_band(self) -> bool:
        return self.conversation_id is None

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


@dataclass
class McpServerState:
    """An MCP server configured on the session: its tool entry and what listing it gave."""

    config: dict[str, Any]
    item_id: str
    status: Literal["in_progress", "completed", "failed"] = "in_progress"
    tools: list[dict[str, Any]] = field(default_factory=list)


def _mcp_filter_matches(filter_: Any, tool: dict[str, Any]) -> bool:
    """An ``McpToolFilter`` (``tool_names`` and/or ``read_only``) against a listed tool."""
    if not isinstance(filter_, dict):
        return False
    names, read_only = filter_.get("tool_names"), filter_.get("read_only")
    if names is None and read_only is None:
        return False
    if names is not None and tool.get("name") not in names:
        return False
    hint = bool((tool.get("annotations") or {}).get("readOnlyHint"))
    return read_only is None or hint == read_only


def mcp_tool_allowed(config: dict[str, Any], tool: dict[str, Any]) -> bool:
    allowed = config.get("allowed_tools")
    if allowed is None:
        return True
    if isinstance(allowed, list):
        return tool.get("name") in allowed
    return _mcp_filter_matches(allowed, tool) or (
        allowed.get("tool_names") is None and allowed.get("read_only") is None
    )


def mcp_needs_approval(config: dict[str, Any], tool: dict[str, Any]) -> bool:
    """``require_approval``: ``never``, ``always`` (the default, as on OpenAI), or filters;
    a tool matched by neither filter needs approval."""
    policy = config.get("require_approval")
    if policy == "never":
        return False
    if not isinstance(policy, dict):
        return True
    return not _mcp_filter_matches(policy.get("never"), tool)


def _mcp_listing_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a server's listed tools: where it is, how we log in, which tools."""
    keys = ("server_url", "headers", "authorization", "allowed_tools")
    return tuple(repr(config.get(k)) for k in keys)


def mcp_headers(config: dict[str, Any]) -> dict[str, str]:
    """HTTP headers for an MCP server: ``headers`` plus ``authorization`` as a bearer token."""
    headers = dict(config.get("headers") or {})
    if config.get("authorization"):
        headers["Authorization"] = f"Bearer {config['authorization']}"
    return headers


def _format_obj(kind: str) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if kind == "audio/pcm" else {"type": kind}


class SessionCore:
    """One Realtime session's state machine.

    Drive it with ``start``, ``handle`` (a raw client frame) or ``handle_event`` (parsed), and
    the ``response_*`` / ``input_*`` methods for engine results; collect ``take_events`` and
    ``take_commands`` after each call.
    """

    def __init__(
        self,
        session: RealtimeSession | TranscriptionSession,
        *,
        count_tokens: Callable[[str], int],
        created_at: int,
        limits: Limits | None = None,
        voice_check: Callable[[str], str | None] | None = None,
        budget_check: Callable[[], str | None] | None = None,
        budget_rate_limit: Callable[[str, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.session = session.model_copy(deep=True)
        if not self.session.id:
            self.session.id = new_id("sess_")
        self.session.expires_at = created_at + round(self.limits.max_session_minutes * 60)
        self.conversation_id = new_id("conv_")
        self.conversation = Conversation()
        self.count_tokens = count_tokens
        self.voice_check = voice_check
        # spending budget of the session's key: a refusal message, and the
        # ``rate_limits.updated`` entry after a response (see telemetry/budget.py)
        self.budget_check = budget_check
        self.budget_rate_limit = budget_rate_limit
        self._events: list[se.ServerEvent | se.InputAudioBufferDtmfEventReceived] = []
        self._commands: list[Command] = []
        self.responses: dict[str, Response] = {}
        self.active_default: str | None = None
        self.audio_output_started = False
        self.closed = False
        # input audio buffer (raw bytes in the session's input format)
        self.input_buffer = bytearray()
        self.input_buffer_start_ms = 0  # session audio clock at the buffer's first byte
        self.total_input_ms = 0.0  # session audio clock: all audio appended so far
        self.pending_user_item_id: str | None = None
        self.tokens_used = 0
        self.segmenter: seg.SpeechSegmenter | None = None
        self._configure_turn_detection()
        self.mcp_servers: dict[str, McpServerState] = {}
        # approval request id → its request item and decision ("pending", "approved", "denied", "run")
        self.mcp_approvals: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ plumbing

    @property
    def is_transcription(self) -> bool:
        return isinstance(self.session, TranscriptionSession)

    def take_events(self) -> list[se.ServerEvent | se.InputAudioBufferDtmfEventReceived]:
        out, self._events = self._events, []
        return out

    def take_commands(self) -> list[Command]:
        out, self._commands = self._commands, []
        return out

    def emit(self, event: se.ServerEvent | se.InputAudioBufferDtmfEventReceived) -> None:
        self._events.append(event)

    def error(self, err: RealtimeError) -> None:
        self.emit(se.ErrorEvent(error=err.as_dict()))
        if err.fatal:
            self.closed = True
            self._commands.append(
                CloseConnection(
                    code=4000 if err.code == "beta_api_shape_disabled" else 1008, reason=err.code or "error"
                )
            )

    def session_wire(self) -> dict[str, Any]:
        return self.session.model_dump(mode="json", exclude_none=False)

    def start(self) -> None:
        """Emit ``session.created``: always the first event of a connection."""
        self.emit(se.SessionCreated(session=self.session_wire()))

    def expire(self) -> None:
        """The maximum session duration was reached."""
        self.error(
            RealtimeError(
                "session_expired",
                f"Your session hit the maximum duration of {self.limits.max_session_minutes:g} minutes.",
                fatal=True,
            )
        )

    # ------------------------------------------------------------------ client events

    def handle(self, frame: str | bytes) -> None:
        """Parse and process one client frame; bad input becomes an ``error`` event."""
        try:
            event = ce.parse_client_event(frame)
        except RealtimeError as err:
            self.error(err)
            return
        self.handle_event(event)

    def handle_event(self, event: ce.ClientEvent) -> None:
        if self.closed:
            return
        try:
            handler = getattr(self, "_on_" + event.type.replace(".", "_"))
            handler(event)
        except RealtimeError as err:
            if err.event_id is None:
                err.event_id = event.event_id
            self.error(err)

    def _on_session_update(self, event: ce.SessionUpdate) -> None:
        patch = event.session
        if "type" not in patch:
            raise RealtimeError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                param="session.type",
            )
        if patch["type"] != self.session.type:
            raise RealtimeError(
                "invalid_value",
                f"Invalid value: '{patch['type']}'. This is a {self.session.type} session; "
                f"supported value: '{self.session.type}'.",
                param="session.type",
            )
        ce.check_removed_session_fields(patch, event.event_id)
        merged = merge_session_update(self.session_wire(), patch)
        try:
            updated = type(self.session).model_validate(merged)
        except ValidationError as exc:
            raise ce.error_from_validation(
                exc, event_id=event.event_id, data=merged, prefix="session"
            ) from None
        if isinstance(updated, RealtimeSession) and isinstance(self.session, RealtimeSession):
            new_voice = updated.audio.output.voice
            old_voice = self.session.audio.output.voice
            if new_voice != old_voice:
                if self.audio_output_started:
                    raise RealtimeError(
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        param="session.audio.output.voice",
                    )
                self._check_voice(new_voice, "session.audio.output.voice")
            if self.session.tracing is not None and updated.tracing != self.session.tracing:
                raise RealtimeError(
                    "invalid_value", "Tracing cannot be modified once enabled.", param="session.tracing"
                )
            labels: set[str] = set()
            for index, tool in enumerate(updated.tools):
                if tool.type == "mcp":
                    if not tool.server_url:
                        raise RealtimeError(
                            "unsupported_tool_type",
                            "MCP tools need a 'server_url': connectors and tunnels are not supported "
                            "by this server.",
                            param=f"session.tools[{index}].server_url",
                        )
                    if tool.server_label in labels:
                        raise RealtimeError(
                            "invalid_value",
                            f"Duplicate MCP server_label '{tool.server_label}'.",
                            param=f"session.tools[{index}].server_label",
                        )
                    labels.add(tool.server_label)
        updated.id = self.session.id
        updated.expires_at = self.session.expires_at
        old_format = self.input_format
        self.session = updated
        if self.input_format != old_format and self.input_buffer:
            # buffered audio keeps its duration: re-encode it in the new input format
            pcm = formats.decode(old_format, bytes(self.input_buffer))
            self.input_buffer = bytearray(formats.encode(self.input_format, pcm))
        self._configure_turn_detection()
        self.emit(se.SessionUpdated(session=self.session_wire()))
        self._sync_mcp_servers()

    # ---- MCP servers (the runtime does the I/O; see runtime/mcp.py)

    def _sync_mcp_servers(self) -> None:
        """List the tools of every MCP server that is new or whose configuration changed."""
        if not isinstance(self.session, RealtimeSession):
            return
        configs = {
            tool.server_label: tool.model_dump(mode="json")
            for tool in self.session.tools
            if tool.type == "mcp"
        }
        for label in [label for label in self.mcp_servers if label not in configs]:
            del self.mcp_servers[label]
        for label, config in configs.items():
            known = self.mcp_servers.get(label)
            if known is not None and _mcp_listing_key(known.config) == _mcp_listing_key(config):
                known.config = config  # e.g. require_approval changed: no need to list again
                continue
            item_id = new_id("item_")
            item: dict[str, Any] = {
                "id": item_id,
                "object": "realtime.item",
                "type": "mcp_list_tools",
                "server_label": label,
                "tools": [],
            }
            self.mcp_servers[label] = McpServerState(config=config, item_id=item_id)
            previous = self.conversation.insert(item)
            self.emit(se.ConversationItemAdded(item=dict(item), previous_item_id=previous))
            self.emit(se.McpListToolsInProgress(item_id=item_id))
            self._commands.append(
                ListMcpTools(
                    item_id=item_id,
                    server_label=label,
                    server_url=config["server_url"],
                    headers=mcp_headers(config),
                )
            )

    def _mcp_server_of_item(self, item_id: str) -> McpServerState | None:
        return next((s for s in self.mcp_servers.values() if s.item_id == item_id), None)

    def mcp_tools_listed(self, item_id: str, tools: list[dict[str, Any]]) -> None:
        """The runtime listed an MCP server's tools (``name``, ``input_schema``, ...)."""
        server = self._mcp_server_of_item(item_id)
        allowed = [t for t in tools if server is None or mcp_tool_allowed(server.config, t)]
        if server is not None:
            server.status = "completed"
            server.tools = allowed
        item = self.conversation.get(item_id)
        if item is not None:
            item["tools"] = [dict(t) for t in allowed]
        self.emit(se.McpListToolsCompleted(item_id=item_id))
        if item is not None:
            previous = self.conversation.previous_of(item_id)
            self.emit(se.ConversationItemDone(item=item_to_wire(item), previous_item_id=previous))

    def mcp_tools_failed(self, item_id: str, code: str, message: str) -> None:
        """Listing an MCP server's tools failed (refused URL, unreachable, timeout, ...)."""
        server = self._mcp_server_of_item(item_id)
        if server is not None:
            server.status = "failed"
            server.tools = []
        item = self.conversation.get(item_id)
        self.emit(se.McpListToolsFailed(item_id=item_id))
        if item is not None:
            previous = self.conversation.previous_of(item_id)
            self.emit(se.ConversationItemDone(item=item_to_wire(item), previous_item_id=previous))
        self.emit(se.ErrorEvent(error=RealtimeError(code, message, type="server_error").as_dict()))

    def mcp_listing_pending(self) -> list[str]:
        """Ids of ``mcp_list_tools`` items still being listed (responses wait for them)."""
        return [s.item_id for s in self.mcp_servers.values() if s.status == "in_progress"]

    def _check_voice(self, voice: Any, param: str) -> None:
        if self.voice_check is None:
            return
        name = voice if isinstance(voice, str) else getattr(voice, "id", str(voice))
        problem = self.voice_check(name)
        if problem:
            raise RealtimeError("invalid_value", problem, param=param)

    # ---- input audio buffer

    @property
    def input_format(self) -> str:
        return self.session.audio.input.format.type

    def _on_input_audio_buffer_append(self, event: ce.InputAudioBufferAppend) -> None:
        if len(event.audio) > ce.MAX_APPEND_BASE64_CHARS:
            raise RealtimeError(
                "input_audio_buffer_append_too_large",
                "Audio in one input_audio_buffer.append must be at most 15 MiB.",
                param="audio",
            )
        try:
            data = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError(
                "invalid_value", "Invalid 'audio': not valid base64.", param="audio"
            ) from None
        if self.input_format == "audio/pcm" and len(data) % 2:
            raise RealtimeError(
                "invalid_value",
                "Invalid 'audio': audio/pcm must be 16-bit samples (an even number of bytes).",
                param="audio",
            )
        per_ms = BYTES_PER_MS[self.input_format]
        if (len(self.input_buffer) + len(data)) / per_ms > self.limits.max_input_buffer_ms:
            raise RealtimeError(
                "input_audio_buffer_full",
                f"The input audio buffer would exceed {self.limits.max_input_buffer_ms // 1000} seconds; "
                "commit or clear it first.",
                param="audio",
            )
        start_ms = self.total_input_ms
        self.input_buffer.extend(data)
        self.total_input_ms += len(data) / per_ms
        self._commands.append(InputAppended(audio=data, input_format=self.input_format, start_ms=start_ms))

    def append_media_audio(self, data: bytes) -> bool:
        """Caller audio from a media transport (WebRTC/SIP), already in the session's input
        format: appended like ``input_audio_buffer.append``. A full buffer drops the packet and
        returns False, so the transport reports it once instead of an error per packet."""
        per_ms = BYTES_PER_MS[self.input_format]
        if self.closed or not data or len(data) % (2 if self.input_format == "audio/pcm" else 1):
            return True  # nothing to keep (a session that ended, or not whole samples)
        if (len(self.input_buffer) + len(data)) / per_ms > self.limits.max_input_buffer_ms:
            return False
        start_ms = self.total_input_ms
        self.input_buffer.extend(data)
        self.total_input_ms += len(data) / per_ms
        self._commands.append(InputAppended(audio=data, input_format=self.input_format, start_ms=start_ms))
        return True

    @property
    def input_buffer_ms(self) -> float:
        return len(self.input_buffer) / BYTES_PER_MS[self.input_format]

    def _on_input_audio_buffer_commit(self, event: ce.InputAudioBufferCommit) -> None:
        ms = self.input_buffer_ms
        if ms < MIN_COMMIT_MS:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
            )
        self.commit_input_buffer()
        if self.segmenter is not None:
            self.segmenter.reset(self.total_input_ms)

    def commit_input_buffer(self, end_byte: int | None = None, *, by_vad: bool = False) -> str:
        """Turn the buffered audio (up to ``end_byte``) into a user item; returns its id."""
        end = len(self.input_buffer) if end_byte is None else max(0, min(end_byte, len(self.input_buffer)))
        start_ms = self.total_input_ms - self.input_buffer_ms
        audio = bytes(self.input_buffer[:end])
        del self.input_buffer[:end]
        self.input_buffer_start_ms = int(self.total_input_ms - self.input_buffer_ms)
        item_id = self.pending_user_item_id or new_id("item_")
        self.pending_user_item_id = None
        self._commands.append(
            InputCommitted(
                item_id=item_id,
                start_ms=start_ms,
                end_ms=start_ms + end / BYTES_PER_MS[self.input_format],
                by_vad=by_vad,
            )
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self.conversation.last_id()
        self.emit(se.InputAudioBufferCommitted(item_id=item_id, previous_item_id=previous))
        self.conversation.insert(item)
        track = AudioTrack(bytes_per_ms=BYTES_PER_MS[self.input_format])
        track.data.extend(audio)
        self.conversation.audio[(item_id, 0)] = track
        wire = item_to_wire(item)
        self.emit(se.ConversationItemAdded(item=wire, previous_item_id=previous))
        self.emit(se.ConversationItemDone(item=wire, previous_item_id=previous))
        transcription = self.session.audio.input.transcription
        self._commands.append(
            TranscribeItem(
                item_id=item_id,
                audio=audio,
                input_format=self.input_format,
                model=transcription.model if transcription else None,
                language=transcription.language if transcription else None,
                prompt=transcription.prompt if transcription else None,
            )
        )
        return item_id

    def _on_input_audio_buffer_clear(self, event: ce.InputAudioBufferClear) -> None:
        self.input_buffer.clear()
        self.input_buffer_start_ms = int(self.total_input_ms)
        self.pending_user_item_id = None
        if self.segmenter is not None:
            self.segmenter.reset(self.total_input_ms)
        self._commands.append(InputBufferCleared())
        self.emit(se.InputAudioBufferCleared())

    # ---- conversation items

    def _on_conversation_item_create(self, event: ce.ConversationItemCreate) -> None:
        parsed = ce.parse_item(event.item, "item", event.event_id)
        item = parsed.model_dump(mode="json", exclude_none=True)
        if len(self.conversation) >= self.limits.max_items:
            raise RealtimeError(
                "conversation_too_many_items",
                f"The conversation already holds {self.limits.max_items} items; delete some first.",
                param="item",
            )
        previous = event.previous_item_id
        if previous is not None and previous != "root" and previous not in self.conversation:
            raise RealtimeError(
                "item_create_invalid_previous_item_id",
                f"Previous item with id '{previous}' does not exist.",
                param="previous_item_id",
            )
        item_id = item.get("id") or new_id("item_")
        if item_id in self.conversation:
            raise RealtimeError(
                "item_create_duplicate_item_id",
                f"Item with id '{item_id}' already exists.",
                param="item.id",
            )
        audio_tracks: dict[int, AudioTrack] = {}
        images: dict[int, CheckedImage] = {}
        if item["type"] == "message":
            role = item["role"]
            for index, part in enumerate(item["content"]):
                if role == "assistant" and part["type"] == "output_audio":
                    raise RealtimeError(
                        "unsupported_content_type",
                        "Assistant messages created by the client may only contain 'output_text'.",
                        param=f"item.content[{index}].type",
                    )
                if part["type"] == "input_audio":
                    raw = part.pop("audio", None)
                    if raw:
                        try:
                            data = base64.b64decode(raw, validate=True)
                        except (binascii.Error, ValueError):
                            raise RealtimeError(
                                "invalid_value",
                                "Invalid 'audio': not valid base64.",
                                param=f"item.content[{index}].audio",
                            ) from None
                        track = AudioTrack(bytes_per_ms=BYTES_PER_MS[self.input_format])
                        track.data.extend(data)
                        audio_tracks[index] = track
                    part.setdefault("transcript", None)
                if part["type"] == "input_image":
                    images[index] = self._accept_image(part, index)
        elif item["type"] == "function_call_output" and not self.conversation.has_call(item["call_id"]):
            raise RealtimeError(
                "item_create_invalid_call_id",
                f"No function call with call_id '{item['call_id']}' exists in the conversation.",
                param="item.call_id",
            )
        elif item["type"] == "function_call":
            item.setdefault("call_id", new_id("call_"))
        elif item["type"] == "mcp_approval_response":
            approval = self.mcp_approvals.get(item["approval_request_id"])
            if approval is None:
                raise RealtimeError(
                    "item_create_invalid_approval_request_id",
                    f"No MCP approval request with id '{item['approval_request_id']}' exists in the "
                    "conversation.",
                    param="item.approval_request_id",
                )
            if approval["state"] == "run":
                raise RealtimeError(
                    "invalid_value",
                    f"MCP approval request '{item['approval_request_id']}' was already approved and run.",
                    param="item.approval_request_id",
                )
            approval["state"] = "approved" if item["approve"] else "denied"
        item["id"] = item_id
        item["object"] = "realtime.item"
        item["status"] = "completed"
        prev = self.conversation.insert(item, previous)
        for index, track in audio_tracks.items():
            self.conversation.audio[(item_id, index)] = track
        wire = item_to_wire(item)
        self.emit(se.ConversationItemAdded(item=wire, previous_item_id=prev))
        self.emit(se.ConversationItemDone(item=wire, previous_item_id=prev))
        self._analyze_images(item, images)

    # ---- images

    llm_sees_images = False
    """Set by the runtime when the LLM is given images themselves rather than their analysis."""

    def _accept_image(self, part: dict[str, Any], index: int, prefix: str = "item") -> CheckedImage:
        """Check an ``input_image`` data URL; its token count is kept on the part. (Images in a
        ``response.create`` input are billed but not analysed: the model hears one was shared.)"""
        try:
            checked = check_data_url(part["image_url"])
        except ImageInputError as exc:
            raise RealtimeError(exc.code, exc.message, param=f"{prefix}.content[{index}].image_url") from None
        part["_image_tokens"] = image_tokens(checked.width, checked.height, part.get("detail", "auto"))
        return checked

    def _analyze_images(self, item: dict[str, Any], images: dict[int, CheckedImage]) -> None:
        """Ask the runtime to describe each new image once; the analysis is cached on the item."""
        if not images or self.llm_sees_images:
            return
        hint = " ".join(
            str(part.get("text") or "") for part in item["content"] if part.get("type") == "input_text"
        ).strip()
        for index, checked in images.items():
            detail = item["content"][index].get("detail", "auto")
            self._commands.append(AnalyzeImage(item["id"], index, checked.data, detail, hint or None))

    def image_analyzed(self, item_id: str, content_index: int, text: str) -> None:
        """The analysis of an image (or why there is none): what the LLM reads for it from now on."""
        item = self.conversation.get(item_id)
        content = (item or {}).get("content") or []
        if content_index < len(content) and content[content_index].get("type") == "input_image":
            content[content_index]["_analysis"] = text

    def _prompt_audio(self, response: Response) -> list[PromptAudio]:
        """The audio items in a response's context with where they sit in the prompt (estimated
        the way ``_prompt_images`` does)."""
        options = response.request_options
        position = self.count_tokens(str(options.get("instructions") or "")) + sum(
            self.count_tokens(json.dumps(tool)) for tool in options.get("tools") or ()
        )
        audio: list[PromptAudio] = []
        for item in response.context_items:
            text = item_text(item)
            shown = self.count_tokens(text) if text else 0
            position += shown + 6 if text else 0
            track = self.conversation.audio.get((item.get("id") or "", 0))
            role = item.get("role")
            if track is None or track.duration_ms <= 0 or role not in ("user", "assistant"):
                continue
            audio.append(PromptAudio(track.duration_ms, role == "assistant", shown, position))
        return audio

    def _prompt_images(self, response: Response) -> list[PromptImage]:
        """The images in a response's context with where they sit in the prompt (estimated)."""
        options = response.request_options
        position = self.count_tokens(str(options.get("instructions") or "")) + sum(
            self.count_tokens(json.dumps(tool)) for tool in options.get("tools") or ()
        )
        images: list[PromptImage] = []
        for item in response.context_items:
            text = item_text(item)
            position += self.count_tokens(text) + 6 if text else 0
            for part in item.get("content") or ():
                if part.get("type") != "input_image" or "_image_tokens" not in part:
                    continue
                billed = int(part["_image_tokens"])
                shown = billed if self.llm_sees_images else self.count_tokens(item_text({"content": [part]}))
                images.append(PromptImage(billed, shown, position))
        return images

    def _on_conversation_item_retrieve(self, event: ce.ConversationItemRetrieve) -> None:
        item = self.conversation.get(event.item_id)
        if item is None:
            raise RealtimeError(
                "item_retrieve_invalid_item_id",
                f"Item with item_id not found: {event.item_id}",
                param="item_id",
            )
        wire = item_to_wire(item, include_audio=True)
        for index, part in enumerate(wire.get("content") or []):
            track = self.conversation.audio.get((event.item_id, index))
            if track is not None and part.get("type") in ("input_audio", "output_audio"):
                part["audio"] = base64.b64encode(bytes(track.data)).decode()
        self.emit(se.ConversationItemRetrieved(item=wire))

    def _on_conversation_item_delete(self, event: ce.ConversationItemDelete) -> None:
        if event.item_id not in self.conversation:
            raise RealtimeError(
                "item_delete_invalid_item_id",
                f"Item with item_id not found: {event.item_id}",
                param="item_id",
            )
        self.conversation.delete(event.item_id)
        self.emit(se.ConversationItemDeleted(item_id=event.item_id))

    def _on_conversation_item_truncate(self, event: ce.ConversationItemTruncate) -> None:
        item = self.conversation.get(event.item_id)
        if item is None:
            raise RealtimeError(
                "item_truncate_invalid_item_id",
                f"Item with item_id not found: {event.item_id}",
                param="item_id",
            )
        content = item.get("content") or []
        track = self.conversation.audio.get((event.item_id, event.content_index))
        if (
            item.get("type") != "message"
            or item.get("role") != "assistant"
            or event.content_index >= len(content)
            or content[event.content_index].get("type") != "output_audio"
            or track is None
            or (event.audio_end_ms == 0 and track.duration_ms == 0)
        ):
            raise RealtimeError(
                "unsupported_content_type",
                "Only model output audio messages can be truncated",
                param="item_id",
            )
        if event.audio_end_ms > track.duration_ms:
            raise RealtimeError(
                "invalid_value",
                f"Audio content of {track.duration_ms}ms is already shorter than {event.audio_end_ms}ms",
                param="audio_end_ms",
            )
        part = content[event.content_index]
        part["transcript"] = track.transcript_heard(part.get("transcript") or "", event.audio_end_ms)
        cut = event.audio_end_ms * track.bytes_per_ms
        del track.data[cut:]
        kept: list[tuple[int, int]] = []
        start = 0
        for end, text_len in track.alignment:
            if start < cut:  # this chunk began before the cut: its words were heard
                kept.append((min(end, cut), text_len))
            start = end
        track.alignment = kept
        self.emit(
            se.ConversationItemTruncated(
                item_id=event.item_id, content_index=event.content_index, audio_end_ms=event.audio_end_ms
            )
        )

    # ---- responses

    def _on_response_create(self, event: ce.ResponseCreate) -> None:
        if isinstance(self.session, TranscriptionSession):
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
        session = self.session
        for index, tool in enumerate(params.tools or []):
            if tool.type == "mcp" and tool.server_label not in self.mcp_servers:
                raise RealtimeError(
                    "unsupported_tool_type",
                    f"MCP server '{tool.server_label}' is not configured on the session: add it with "
                    "session.update first (its tools are listed once, there).",
                    param=f"response.tools[{index}]",
                )
        if params.input is not None:
            items = []
            for index, entry in enumerate(params.input):
                if entry.get("type") == "item_reference":
                    found = self.conversation.get(entry["id"])
                    if found is None:
                        raise RealtimeError(
                            "invalid_value",
                            f"Item with id '{entry['id']}' does not exist in the conversation.",
                            param=f"response.input[{index}].id",
                        )
                    items.append(found)
                else:
                    parsed = ce.parse_item(entry, f"response.input[{index}]", event.event_id)
                    inline = parsed.model_dump(mode="json", exclude_none=True)
                    for part_index, part in enumerate(inline.get("content") or ()):
                        if part.get("type") == "input_image":
                            self._accept_image(part, part_index, prefix=f"response.input[{index}]")
                    items.append(inline)
        else:
            items = self.conversation.items()
        modality = (params.output_modalities or session.output_modalities)[0]
        audio_out = params.audio.output if params.audio and params.audio.output else None
        voice_obj = (
            audio_out.voice if audio_out and audio_out.voice is not None else session.audio.output.voice
        )
        voice = voice_obj if isinstance(voice_obj, str) else voice_obj.id
        if audio_out and audio_out.voice is not None:
            self._check_voice(voice_obj, "response.audio.output.voice")
        fmt = (audio_out.format if audio_out and audio_out.format else session.audio.output.format).type
        max_tokens = (
            params.max_output_tokens if params.max_output_tokens is not None else session.max_output_tokens
        )
        tools = [
            t.model_dump(mode="json") for t in (params.tools if params.tools is not None else session.tools)
        ]
        chosen = params.tool_choice if params.tool_choice is not None else session.tool_choice
        tool_choice: Any = chosen if isinstance(chosen, str) else chosen.model_dump(mode="json")
        response = Response(
            id=new_id("resp_"),
            conversation_id=None if out_of_band else self.conversation_id,
            modality=modality,
            voice=voice,
            output_format=fmt,
            max_output_tokens=max_tokens,
            metadata=params.metadata,
            context_audio_ms=self._audio_ms_of(items),
        )
        response.context_items = list(items)
        response.request_options = {
            "instructions": params.instructions if params.instructions is not None else session.instructions,
            "tools": tools,
            "tool_choice": tool_choice,
            "max_output_tokens": None if max_tokens == "inf" else int(max_tokens),
            "max_input_tokens": self._max_input_tokens(max_tokens),
            "truncate": session.truncation != "disabled",
        }
        self.responses[response.id] = response
        if not out_of_band:
            self.active_default = response.id
        self.emit(se.ResponseCreated(response=response.wire("in_progress", None, None)))
        if not out_of_band:
            self._run_approved_mcp_calls(response)
        self._commands.append(
            StartResponse(
                response_id=response.id,
                context_item_ids=tuple(item.get("id") or "" for item in items),
                modality=modality,
                voice=voice,
                speed=session.audio.output.speed,
                output_format=fmt,
            )
        )

    def build_request(self, response_id: str) -> ChatRequest | None:
        """The chat request for a running response, built from its context as it is *now*
        (so transcripts that finished after ``response.create`` are included)."""
        response = self._live(response_id)
        if response is None:
            return None
        options = response.request_options
        tools, response.mcp_routes = self._tools_for_model(options["tools"])
        tool_choice = options["tool_choice"]
        outputs = [out.item for out in response.outputs]
        if any(item.get("type") == "mcp_call" for item in outputs):
            tool_choice = "auto"  # continuing after MCP results: never force another call
        request = build_chat_request(
            [*response.context_items, *outputs],
            instructions=options["instructions"],
            tools=tools,
            tool_choice=tool_choice,
            max_output_tokens=options["max_output_tokens"],
            count_tokens=self.count_tokens,
            max_input_tokens=options["max_input_tokens"],
        )
        if not options.get("truncate", True):
            kept = sum(m.role != "tool" for m in request.messages) - 1  # without the instructions
            whole = sum(m.role != "tool" for m in conversation_messages([*response.context_items, *outputs]))
            if kept < whole:  # it would have needed truncating
                self.response_failed(
                    response_id,
                    "context_length_exceeded",
                    "The conversation no longer fits the model's context and the session's truncation "
                    "is 'disabled'; delete items or enable truncation.",
                )
                return None
        return request

    def _tools_for_model(self, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Function tools as given plus the listed tools of the MCP servers among ``tools``
        (as functions); function names win over MCP names, the first server over later ones."""
        out = [t for t in tools if t.get("type") == "function"]
        names = {t.get("name") for t in out}
        routes: dict[str, str] = {}
        for tool in tools:
            server = (
                self.mcp_servers.get(tool.get("server_label") or "") if tool.get("type") == "mcp" else None
            )
            if server is None:
                continue
            for listed in server.tools:
                name = listed.get("name")
                if not name or name in names:
                    continue
                names.add(name)
                routes[name] = server.config["server_label"]
                description = listed.get("description") or ""
                out.append(
                    {
                        "type": "function",
                        "name": name,
                        "description": description,
                        "parameters": listed.get("input_schema") or {"type": "object", "properties": {}},
                    }
                )
        return out, routes

    def _max_input_tokens(self, max_tokens: int | str) -> int:
        reserve = 4096 if max_tokens == "inf" else int(max_tokens)
        truncation = self.session.truncation if isinstance(self.session, RealtimeSession) else "auto"
        budget = self.limits.max_context_tokens - reserve
        if not isinstance(truncation, str):
            budget = (
                int(budget * max(0.05, truncation.retention_ratio))
                if truncation.retention_ratio < 1
                else budget
            )
        return max(256, budget)

    def _audio_ms_of(self, items: list[dict[str, Any]]) -> int:
        total = 0
        for item in items:
            if item.get("role") == "user":
                track = self.conversation.audio.get((item.get("id") or "", 0))
                if track is not None:
                    total += track.duration_ms
        return total

    def _on_response_cancel(self, event: ce.ResponseCancel) -> None:
        target = event.response_id or self.active_default
        if target is None or target not in self.responses:
            raise RealtimeError("response_cancel_not_active", "Cancellation failed: no active response found")
        self.cancel_response(target, "client_cancelled")

    def _on_output_audio_buffer_clear(self, event: ce.OutputAudioBufferClear) -> None:
        raise RealtimeError(
            "invalid_request_error",
            "output_audio_buffer.clear is only supported on WebRTC and SIP connections.",
            param="type",
        )

    # ------------------------------------------------------------------ engine results

    def _live(self, response_id: str) -> Response | None:
        """The response if it is still running; results for finished ones are stale (and
        text, audio or calls while one of its MCP calls runs are dropped, see
        ``response_function_call``)."""
        return self.responses.get(response_id)

    def _open_message(self, response: Response) -> OutputItem:
        if response.open_item is not None and response.open_item.item["type"] == "message":
            return response.open_item
        self._close_open_item(response, "completed")
        item: dict[str, Any] = {
            "id": new_id("item_"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        out = OutputItem(item=item, output_index=len(response.outputs))
        response.outputs.append(out)
        response.open_item = out
        response.text = ""
        self.emit(
            se.ResponseOutputItemAdded(
                response_id=response.id, output_index=out.output_index, item=item_to_wire(item)
            )
        )
        if not response.out_of_band:
            previous = self.conversation.last_id()
            self.conversation.insert(item)
            self.emit(se.ConversationItemAdded(item=item_to_wire(item), previous_item_id=previous))
        part: dict[str, Any] = (
            {"type": "audio", "transcript": ""}
            if response.modality == "audio"
            else {"type": "text", "text": ""}
        )
        if response.modality == "audio":
            response.audio = AudioTrack(bytes_per_ms=BYTES_PER_MS[response.output_format])
            if not response.out_of_band:
                self.conversation.audio[(item["id"], 0)] = response.audio
        self.emit(
            se.ResponseContentPartAdded(
                response_id=response.id,
                item_id=item["id"],
                output_index=out.output_index,
                content_index=0,
                part=part,
            )
        )
        out.part_open = True
        return out

    def response_text(self, response_id: str, text: str) -> None:
        """Text produced by the model: ``output_text`` or the audio transcript, by modality."""
        response = self._live(response_id)
        if response is None or not text or response.pending_mcp:
            return
        out = self._open_message(response)
        response.text += text
        ids = {
            "response_id": response.id,
            "item_id": out.item["id"],
            "output_index": out.output_index,
            "content_index": 0,
        }
        if response.modality == "audio":
            self.emit(se.ResponseOutputAudioTranscriptDelta(delta=text, **ids))
        else:
            self.emit(se.ResponseOutputTextDelta(delta=text, **ids))

    def response_audio(self, response_id: str, data: bytes) -> None:
        """Speech for the text given so far, already encoded in the response's output format."""
        response = self._live(response_id)
        if response is None or not data or response.modality != "audio" or response.pending_mcp:
            return
        out = self._open_message(response)
        assert response.audio is not None
        response.audio.data.extend(data)
        response.audio.alignment.append((len(response.audio.data), len(response.text)))
        self.audio_output_started = True
        self.emit(
            se.ResponseOutputAudioDelta(
                response_id=response.id,
                item_id=out.item["id"],
                output_index=out.output_index,
                content_index=0,
                delta=base64.b64encode(data).decode(),
            )
        )

    def response_function_call(self, response_id: str, name: str, call_id: str, arguments: str) -> None:
        """A complete, validated tool call: emitted as one function_call output item (or, for
        a tool of an MCP server, as an ``mcp_call`` the runtime runs or an approval request).

        While an MCP call of the response is running, the response's output is that call's
        item: model output arriving then is dropped (the runtime waits for the result first)."""
        response = self._live(response_id)
        if response is None or response.pending_mcp:
            return
        self._close_open_item(response, "completed")
        label = response.mcp_routes.get(name)
        server = self.mcp_servers.get(label) if label is not None else None
        if server is not None:
            listed = next((t for t in server.tools if t.get("name") == name), {"name": name})
            if mcp_needs_approval(server.config, listed):
                self._mcp_approval_request(response, server, name, arguments)
            else:
                self._start_mcp_call(response, server, name, arguments, None)
            return
        item: dict[str, Any] = {
            "id": new_id("item_"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        out = OutputItem(item=item, output_index=len(response.outputs))
        response.outputs.append(out)
        self.emit(
            se.ResponseOutputItemAdded(
                response_id=response.id, output_index=out.output_index, item=dict(item)
            )
        )
        previous = None
        if not response.out_of_band:
            previous = self.conversation.last_id()
            self.conversation.insert(item)
            self.emit(se.ConversationItemAdded(item=dict(item), previous_item_id=previous))
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": out.output_index,
            "call_id": call_id,
        }
        for chunk in _chunks(arguments, 32):
            self.emit(se.ResponseFunctionCallArgumentsDelta(delta=chunk, **ids))
        self.emit(se.ResponseFunctionCallArgumentsDone(name=name, arguments=arguments, **ids))
        item["arguments"] = arguments
        item["status"] = "completed"
        if not response.out_of_band:
            self.emit(se.ConversationItemDone(item=dict(item), previous_item_id=previous))
        self.emit(
            se.ResponseOutputItemDone(response_id=response.id, output_index=out.output_index, item=dict(item))
        )

    def _add_output_item(self, response: Response, item: dict[str, Any]) -> tuple[OutputItem, str | None]:
        out = OutputItem(item=item, output_index=len(response.outputs))
        response.outputs.append(out)
        self.emit(
            se.ResponseOutputItemAdded(
                response_id=response.id, output_index=out.output_index, item=dict(item)
            )
        )
        previous = None
        if not response.out_of_band:
            previous = self.conversation.last_id()
            self.conversation.insert(item)
            self.emit(se.ConversationItemAdded(item=dict(item), previous_item_id=previous))
        return out, previous

    def _end_output_item(self, response: Response, out: OutputItem, status: str) -> None:
        item = out.item
        item["status"] = status
        if not response.out_of_band:
            previous = self.conversation.previous_of(item["id"]) if item["id"] in self.conversation else None
            self.emit(se.ConversationItemDone(item=dict(item), previous_item_id=previous))
        self.emit(
            se.ResponseOutputItemDone(response_id=response.id, output_index=out.output_index, item=dict(item))
        )

    def _mcp_approval_request(
        self, response: Response, server: McpServerState, name: str, arguments: str
    ) -> None:
        item: dict[str, Any] = {
            "id": new_id("mcpr_"),
            "object": "realtime.item",
            "type": "mcp_approval_request",
            "status": "in_progress",
            "server_label": server.config["server_label"],
            "name": name,
            "arguments": arguments,
        }
        out, _ = self._add_output_item(response, item)
        self._end_output_item(response, out, "completed")
        if not response.out_of_band:
            self.mcp_approvals[item["id"]] = {"item": item, "state": "pending"}

    def _run_approved_mcp_calls(self, response: Response) -> None:
        """Approved requests run at the start of the next response, before the model speaks."""
        for request_id, approval in self.mcp_approvals.items():
            if approval["state"] != "approved":
                continue
            approval["state"] = "run"
            request = approval["item"]
            server = self.mcp_servers.get(request["server_label"])
            self._start_mcp_call(response, server, request["name"], request["arguments"], request_id)

    def _start_mcp_call(
        self,
        response: Response,
        server: McpServerState | None,
        name: str,
        arguments: str,
        approval_request_id: str | None,
    ) -> None:
        item: dict[str, Any] = {
            "id": new_id("mcp_"),
            "object": "realtime.item",
            "type": "mcp_call",
            "status": "in_progress",
            "server_label": server.config["server_label"] if server is not None else "",
            "name": name,
            "arguments": "",
            "approval_request_id": approval_request_id,
            "output": None,
            "error": None,
        }
        out, _ = self._add_output_item(response, item)
        ids = {"response_id": response.id, "item_id": item["id"], "output_index": out.output_index}
        for chunk in _chunks(arguments, 32):
            self.emit(se.ResponseMcpCallArgumentsDelta(delta=chunk, **ids))
        self.emit(se.ResponseMcpCallArgumentsDone(arguments=arguments, **ids))
        item["arguments"] = arguments
        self.emit(se.ResponseMcpCallInProgress(item_id=item["id"], output_index=out.output_index))
        response.pending_mcp[item["id"]] = out
        if server is None:
            self.mcp_call_result(
                response.id,
                item["id"],
                None,
                {"type": "tool_execution_error", "message": "The MCP server is no longer configured."},
            )
            return
        self._commands.append(
            CallMcpTool(
                response_id=response.id,
                item_id=item["id"],
                server_label=server.config["server_label"],
                server_url=server.config["server_url"],
                name=name,
                arguments=arguments,
                headers=mcp_headers(server.config),
            )
        )

    def mcp_call_result(
        self, response_id: str, item_id: str, output: str | None, error: dict[str, Any] | None
    ) -> None:
        """The runtime ran an MCP call: its text ``output``, or an ``error`` in wire shape."""
        response = self._live(response_id)
        out = response.pending_mcp.pop(item_id, None) if response is not None else None
        if response is None or out is None:
            return
        out.item["output"] = output
        out.item["error"] = error
        if error is None:
            self.emit(se.ResponseMcpCallCompleted(item_id=item_id, output_index=out.output_index))
        else:
            self.emit(se.ResponseMcpCallFailed(item_id=item_id, output_index=out.output_index))
        self._end_output_item(response, out, "completed" if error is None else "incomplete")

    def mcp_calls_pending(self, response_id: str) -> bool:
        response = self._live(response_id)
        return response is not None and bool(response.pending_mcp)

    def response_prompt(self, response_id: str, prompt_tokens: int, cached_tokens: int) -> None:
        """The model has read its prompt: input token counts for usage (also when cancelled)."""
        response = self._live(response_id)
        if response is not None:
            response.usage.input_text_tokens = prompt_tokens
            response.usage.cached_text_tokens = cached_tokens
            response.prompt_reported = True

    def response_done(
        self,
        response_id: str,
        finish_reason: str,
        *,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
    ) -> None:
        """The engines finished the response."""
        response = self._live(response_id)
        if response is None:
            return
        response.usage.input_text_tokens = prompt_tokens
        response.usage.cached_text_tokens = cached_tokens
        response.usage.output_text_tokens = completion_tokens
        response.prompt_reported = True
        if finish_reason == "length":
            self._finish(response, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
        else:
            self._finish(response, "completed", None)

    def response_failed(self, response_id: str, code: str, message: str) -> None:
        response = self._live(response_id)
        if response is None:
            return
        self._finish(
            response,
            "failed",
            {"type": "failed", "error": {"type": "server_error", "code": code, "message": message}},
        )

    def cancel_response(self, response_id: str, reason: Literal["client_cancelled", "turn_detected"]) -> None:
        """Cancel: close what is open, report ``cancelled`` and tell the runtime to stop."""
        response = self._live(response_id)
        if response is None:
            return
        self._commands.append(CancelResponse(response_id))
        if not response.prompt_reported:
            response.usage.input_text_tokens = self._estimate_prompt_tokens(response)
        response.usage.output_text_tokens = self.count_tokens(response.text) if response.text else 0
        self._finish(response, "cancelled", {"type": "cancelled", "reason": reason})

    def _estimate_prompt_tokens(self, response: Response) -> int:
        """Input tokens of a response cancelled before the model reported its prompt."""
        instructions = str(response.request_options.get("instructions") or "")
        texts = [instructions] if instructions else []
        for item in response.context_items:
            texts.append(item_text(item) or str(item.get("arguments") or item.get("output") or ""))
        return sum(self.count_tokens(text) for text in texts if text)

    def _close_open_item(self, response: Response, status: str) -> None:
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
            self.emit(se.ResponseOutputAudioDone(**ids))
            if response.audio is not None:
                response.audio_ms_total += response.audio.duration_ms
            self.emit(se.ResponseOutputAudioTranscriptDone(transcript=response.text, **ids))
            part_wire = {"type": "audio", "transcript": response.text}
            item["content"] = [{"type": "output_audio", "transcript": response.text}]
        else:
            self.emit(se.ResponseOutputTextDone(text=response.text, **ids))
            part_wire = {"type": "text", "text": response.text}
            item["content"] = [{"type": "output_text", "text": response.text}]
        self.emit(se.ResponseContentPartDone(part=part_wire, **ids))
        item["status"] = status
        if not response.out_of_band:
            previous = self.conversation.previous_of(item["id"]) if item["id"] in self.conversation else None
            self.emit(se.ConversationItemDone(item=item_to_wire(item), previous_item_id=previous))
        self.emit(
            se.ResponseOutputItemDone(
                response_id=response.id, output_index=out.output_index, item=item_to_wire(item)
            )
        )

    def _finish(self, response: Response, status: str, details: dict[str, Any] | None) -> None:
        self._close_open_item(response, "completed" if status == "completed" else "incomplete")
        for item_id in list(response.pending_mcp):
            self.mcp_call_result(
                response.id,
                item_id,
                None,
                {"type": "tool_execution_error", "message": f"The call was stopped: the response {status}."},
            )
        response.usage.output_audio_ms = response.audio_ms_total
        response.usage.input_audio_ms = response.context_audio_ms
        cached_prefix = response.usage.cached_text_tokens
        account_audio(response.usage, self._prompt_audio(response), cached_prefix)
        account_images(response.usage, self._prompt_images(response), cached_prefix)
        usage = response.usage.wire()
        self.emit(se.ResponseDone(response=response.wire(status, details, usage)))
        del self.responses[response.id]
        if self.active_default == response.id:
            self.active_default = None
        self._commands.append(
            ResponseFinished(
                response_id=response.id,
                audio_ms=response.audio_ms_total,
                out_of_band=response.out_of_band,
            )
        )
        self.tokens_used += usage["total_tokens"]
        limit = self.limits.rate_limit_tokens
        self.emit(
            se.RateLimitsUpdated(
                rate_limits=[
                    se.RateLimit(
                        name="tokens",
                        limit=limit,
                        remaining=max(0, limit - usage["total_tokens"]),
                        reset_seconds=0.001,
                    ),
                    *self._budget_rate_limits(response.id, usage),
                ]
            )
        )

    def _budget_rate_limits(self, response_id: str, usage: dict[str, Any]) -> list[se.RateLimit]:
        entry = self.budget_rate_limit(response_id, usage) if self.budget_rate_limit is not None else None
        return [se.RateLimit(**entry)] if entry else []

    # ------------------------------------------------------------------ turn taking

    def _configure_turn_detection(self) -> None:
        """Keep the speech segmenter in step with ``audio.input.turn_detection``."""
        detection = self.session.audio.input.turn_detection
        if detection is None:
            self.segmenter = None
            return
        config: seg.SegmenterConfig
        if detection.type == "server_vad":
            config = seg.ServerVadConfig(
                threshold=detection.threshold,
                prefix_padding_ms=detection.prefix_padding_ms,
                silence_duration_ms=detection.silence_duration_ms,
            )
        else:
            config = seg.SemanticVadConfig(eagerness=detection.eagerness)
        if self.segmenter is None:
            self.segmenter = seg.SpeechSegmenter(
                config, buffer_start_ms=self.total_input_ms - self.input_buffer_ms
            )
        else:
            self.segmenter.update_config(config)

    def vad_frames(self, frames: list[tuple[float, float, float, float | None]]) -> None:
        """Speech probabilities of consecutive frames: ``(p, start_ms, end_ms, level_db)``."""
        if self.segmenter is None or self.closed:
            return
        for p, start_ms, end_ms, level_db in frames:
            for event in self.segmenter.process(p, start_ms, end_ms, level_db):
                self._on_segmenter_event(event)

    def end_of_turn_result(self, request_id: int, probability: float) -> None:
        if self.segmenter is None or self.closed:
            return
        for event in self.segmenter.end_of_turn_result(request_id, probability):
            self._on_segmenter_event(event)

    def _on_segmenter_event(self, event: seg.SegmenterEvent) -> None:
        detection = self.session.audio.input.turn_detection
        if detection is None:
            return
        if isinstance(event, seg.SpeechStarted):
            item_id = new_id("item_")
            self.pending_user_item_id = item_id
            self.emit(se.InputAudioBufferSpeechStarted(audio_start_ms=event.audio_start_ms, item_id=item_id))
            self._commands.append(SpeechStarted(item_id=item_id, audio_start_ms=event.audio_start_ms))
            if detection.interrupt_response and self.active_default is not None:
                self.cancel_response(self.active_default, "turn_detected")
        elif isinstance(event, seg.SpeechStopped):
            item_id = self.pending_user_item_id or new_id("item_")
            self.pending_user_item_id = item_id
            self.emit(se.InputAudioBufferSpeechStopped(audio_end_ms=event.audio_end_ms, item_id=item_id))
            buffer_start = self.total_input_ms - self.input_buffer_ms
            end_byte = int((event.detected_at_ms - buffer_start) * BYTES_PER_MS[self.input_format])
            end_byte -= end_byte % (2 if self.input_format == "audio/pcm" else 1)
            self.commit_input_buffer(end_byte, by_vad=True)
            if detection.create_response and not self.is_transcription:
                self._auto_response()
        elif isinstance(event, seg.EndOfTurnRequested):
            self._commands.append(
                PredictEndOfTurn(
                    request_id=event.request_id,
                    audio_start_ms=event.audio_start_ms,
                    audio_end_ms=event.audio_end_ms,
                )
            )

    def _auto_response(self) -> None:
        """``create_response``: answer the committed turn (refused while one is running)."""
        try:
            self._on_response_create(ce.ResponseCreate(type="response.create"))
        except RealtimeError as err:
            self.error(err)

    def idle_timeout(self) -> None:
        """``idle_timeout_ms`` passed after the assistant finished speaking: prompt the user."""
        detection = self.session.audio.input.turn_detection
        if detection is None or detection.type != "server_vad" or self.active_default is not None:
            return
        if self.segmenter is not None and self.segmenter.in_speech:
            return
        item_id = new_id("item_")
        start = int(self.total_input_ms - self.input_buffer_ms)
        self.emit(
            se.InputAudioBufferTimeoutTriggered(
                audio_start_ms=start, audio_end_ms=int(self.total_input_ms), item_id=item_id
            )
        )
        self.pending_user_item_id = item_id
        self.commit_input_buffer(by_vad=True)
        if self.segmenter is not None:
            self.segmenter.reset(self.total_input_ms)
        self._auto_response()

    # ------------------------------------------------------------------ transcription results

    def transcription_delta(self, item_id: str, delta: str) -> None:
        if delta and item_id in self.conversation and self._transcription_on():
            self.emit(se.TranscriptionDelta(item_id=item_id, delta=delta))

    def transcription_completed(self, item_id: str, transcript: str, usage: dict[str, Any]) -> None:
        """Fill the user item's transcript (the model reads it) and report it when enabled."""
        item = self.conversation.get(item_id)
        if item is None:
            return
        for part in item.get("content") or []:
            if part.get("type") == "input_audio":
                part["transcript"] = transcript
                break
        if self._transcription_on():
            self.emit(se.TranscriptionCompleted(item_id=item_id, transcript=transcript, usage=usage))

    def transcription_failed(self, item_id: str, message: str) -> None:
        if item_id in self.conversation and self._transcription_on():
            self.emit(
                se.TranscriptionFailed(
                    item_id=item_id,
                    error={
                        "type": "transcription_error",
                        "code": "audio_unintelligible",
                        "message": message,
                        "param": None,
                    },
                )
            )

    def _transcription_on(self) -> bool:
        return self.session.audio.input.transcription is not None


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
