"""The retired beta shape of the Realtime API (spec §13), translated at the edge.

The session core speaks GA only. ``BetaShape`` sits between a beta client and it: beta client
events become GA client events (validated first against the beta shape, so errors name beta
parameters), and GA server events become the beta events the client knows. The same pure
functions translate the REST bodies of ``POST /v1/realtime/sessions`` and
``/transcription_sessions``.

Decisions where the two shapes do not map one to one:

- ``conversation.item.added`` → ``conversation.item.created`` (the item as it enters the
  conversation, as the beta service announced it); ``conversation.item.done`` is dropped
  unless its item was never announced. Beta clients read finished output items from
  ``response.output_item.done`` / ``response.done``, as before.
- ``temperature`` (session and response) is accepted, clamped to 0.6 to 1.2 and echoed; the
  GA engines have no such knob, so it does not change generation.
- Beta sessions report ``model`` only by names the beta shape knows; another name (an Azure
  deployment, a GA-only model) is reported as ``gpt-realtime``, the way Azure reports the
  model behind a deployment.
- GA-only events have no beta form and are not sent: ``input_audio_buffer.timeout_triggered``
  (the committed item and the response follow as usual), ``…dtmf_event_received``,
  ``…transcription.segment``, ``mcp_list_tools.*``, ``response.mcp_call*``; MCP items are left
  out of items lists and output-item events, ``input_image`` parts out of message content.
- A transcription session starts with ``transcription_session.created``, as the beta service
  did (the SDK's beta union lists only ``.updated``; the session object is the same), with
  ``client_secret: null``; no ``conversation.created`` follows it.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .client_events import error_from_validation, parse_json_frame
from .errors import RealtimeError
from .ids import new_id
from .session import MaxOutputTokens, ToolChoiceFunction, TracingConfig, VoiceId
from .shape import Deliver, Refuse, WireEvent

log = logging.getLogger("openrealtime.beta")

BETA_FORMATS: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
FORMAT_NAMES = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
BETA_MODELS = (
    "gpt-realtime",
    "gpt-realtime-2025-08-28",
    "gpt-4o-realtime-preview",
    "gpt-4o-realtime-preview-2024-10-01",
    "gpt-4o-realtime-preview-2024-12-17",
    "gpt-4o-realtime-preview-2025-06-03",
    "gpt-4o-mini-realtime-preview",
    "gpt-4o-mini-realtime-preview-2024-12-17",
)
"""The model names of the SDK's beta session type."""
BETA_EXTRAS_KEY = "_beta"
"""Where a session bound to an ephemeral key keeps what only the beta shape has (its
``temperature``); ``server.sessions.restore_session`` leaves ``_`` keys out of the session."""
DEFAULT_TEMPERATURE = 0.8
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.6, 1.2

BETA_CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
_UNCHANGED_CLIENT_EVENTS = frozenset(
    {
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)
_APPEND_FRAME = re.compile(r'^\s*\{\s*"type"\s*:\s*"input_audio_buffer\.append"\s*,')
"""Audio appends are the same in both shapes and the bulk of the traffic: recognised without
parsing (the session parses and validates them once)."""

# --------------------------------------------------------------------------- beta input models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


BetaFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
BetaModality = Literal["text", "audio"]


class BetaTranscription(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class BetaNoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None


class BetaTurnDetection(_Strict):
    type: Literal["server_vad", "semantic_vad"] | None = None
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    idle_timeout_ms: int | None = None


class BetaTool(_Strict):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class BetaExpiry(_Strict):
    anchor: Literal["created_at"] = "created_at"
    seconds: int | None = None


class BetaClientSecret(_Strict):
    expires_after: BetaExpiry | None = None
    expires_at: BetaExpiry | None = None
    """The transcription-session spelling of ``expires_after``."""


class BetaSessionConfig(_Strict):
    """A beta realtime session as ``session.update`` and ``POST /realtime/sessions`` take it."""

    model: str | None = None
    modalities: list[BetaModality] | None = Field(default=None, min_length=1, max_length=2)
    instructions: str | None = None
    voice: str | VoiceId | None = None
    input_audio_format: BetaFormat | None = None
    output_audio_format: BetaFormat | None = None
    input_audio_transcription: BetaTranscription | None = None
    input_audio_noise_reduction: BetaNoiseReduction | None = None
    turn_detection: BetaTurnDetection | None = None
    tools: list[BetaTool] | None = None
    tool_choice: str | ToolChoiceFunction | None = None
    temperature: float | None = None
    max_response_output_tokens: MaxOutputTokens | None = None
    speed: float | None = None
    tracing: Literal["auto"] | TracingConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    client_secret: BetaClientSecret | None = None


class BetaTranscriptionSessionConfig(_Strict):
    """A beta transcription session (``transcription_session.update``,
    ``POST /realtime/transcription_sessions``)."""

    input_audio_format: BetaFormat | None = None
    input_audio_transcription: BetaTranscription | None = None
    input_audio_noise_reduction: BetaNoiseReduction | None = None
    turn_detection: BetaTurnDetection | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    modalities: list[BetaModality] | None = Field(default=None, min_length=1, max_length=2)
    """Accepted for completeness; a transcription session produces text only."""
    client_secret: BetaClientSecret | None = None


class BetaResponseParams(_Strict):
    conversation: str | None = None
    input: list[dict[str, Any]] | None = None
    instructions: str | None = None
    max_response_output_tokens: MaxOutputTokens | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    modalities: list[BetaModality] | None = Field(default=None, min_length=1, max_length=2)
    output_audio_format: BetaFormat | None = None
    temperature: float | None = None
    tool_choice: str | ToolChoiceFunction | None = None
    tools: list[BetaTool] | None = None
    voice: str | VoiceId | None = None


class _Envelope(_Strict):
    event_id: str | None = Field(default=None, max_length=512)


class _SessionUpdate(_Envelope):
    type: Literal["session.update"]
    session: dict[str, Any]


class _TranscriptionSessionUpdate(_Envelope):
    type: Literal["transcription_session.update"]
    session: dict[str, Any]


class _ResponseCreate(_Envelope):
    type: Literal["response.create"]
    response: dict[str, Any] | None = None


class _ItemCreate(_Envelope):
    type: Literal["conversation.item.create"]
    item: dict[str, Any]
    previous_item_id: str | None = None


# --------------------------------------------------------------------------- beta → GA


def clamp_temperature(value: float) -> float:
    return min(MAX_TEMPERATURE, max(MIN_TEMPERATURE, float(value)))


def _validate(model: type[_Strict], data: Any, param: str, event_id: str | None) -> dict[str, Any]:
    """``data`` checked against a beta model; the fields sent (``null`` included), coerced."""
    if not isinstance(data, dict):
        raise RealtimeError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param=param, event_id=event_id
        )
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise error_from_validation(exc, event_id=event_id, data=data, prefix=param) from None
    dumped: dict[str, Any] = parsed.model_dump(mode="json", exclude_unset=True)
    return dumped


def _modalities_to_ga(modalities: list[str]) -> list[str]:
    """Beta ``["text"]`` is text only; any list with ``audio`` is audio (with its transcript)."""
    return ["audio"] if "audio" in modalities else ["text"]


def _tool_choice_to_ga(choice: Any) -> Any:
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "name": choice}
    return choice


def _tools_to_ga(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", **tool} for tool in tools]


def _turn_detection_to_ga(value: dict[str, Any] | None, current_type: str | None) -> dict[str, Any] | None:
    """Beta turn detection may leave out ``type``: it keeps the current one (server VAD when
    turn detection was off)."""
    if value is None:
        return None
    if value.get("type") is None:
        return {**value, "type": current_type or "server_vad"}
    return value


def session_to_ga(
    config: Any,
    *,
    kind: Literal["realtime", "transcription"] = "realtime",
    current_turn_detection: str | None = None,
    param: str = "session",
    event_id: str | None = None,
) -> tuple[dict[str, Any], float | None, dict[str, Any] | None]:
    """A beta session object as a GA session patch (``type`` included), with the temperature
    it set (clamped; None when not sent) and its ``client_secret`` request (or None).

    Raises ``RealtimeError`` naming beta parameters (``session.voice``, …)."""
    model = BetaSessionConfig if kind == "realtime" else BetaTranscriptionSessionConfig
    fields = _validate(model, config, param, event_id)
    ga: dict[str, Any] = {"type": kind}
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    temperature: float | None = None
    for key, value in fields.items():
        if key in ("model", "instructions", "tracing", "include"):
            ga[key] = value
        elif key == "modalities":
            if kind == "realtime":
                ga["output_modalities"] = _modalities_to_ga(value)
        elif key == "voice":
            audio_out["voice"] = value
        elif key == "speed":
            audio_out["speed"] = value
        elif key == "input_audio_format":
            audio_in["format"] = dict(BETA_FORMATS[value])
        elif key == "output_audio_format":
            audio_out["format"] = dict(BETA_FORMATS[value])
        elif key == "input_audio_transcription":
            audio_in["transcription"] = value
        elif key == "input_audio_noise_reduction":
            audio_in["noise_reduction"] = value
        elif key == "turn_detection":
            audio_in["turn_detection"] = _turn_detection_to_ga(value, current_turn_detection)
        elif key == "tools":
            ga["tools"] = _tools_to_ga(value)
        elif key == "tool_choice":
            ga["tool_choice"] = _tool_choice_to_ga(value)
        elif key == "max_response_output_tokens":
            ga["max_output_tokens"] = value
        elif key == "temperature" and value is not None:
            temperature = clamp_temperature(value)
    audio: dict[str, Any] = {}
    if audio_in:
        audio["input"] = audio_in
    if audio_out:
        audio["output"] = audio_out
    if audio:
        ga["audio"] = audio
    secret = fields.get("client_secret")
    return ga, temperature, secret


def item_to_ga(item: Any) -> Any:
    """A beta conversation item as a GA one: assistant ``text`` / ``audio`` parts become
    ``output_text`` / ``output_audio``. Anything else passes as sent (the GA validation that
    follows reports problems at the same ``param`` paths)."""
    if not isinstance(item, dict):
        return item
    content = item.get("content")
    if item.get("role") != "assistant" or not isinstance(content, list):
        return item
    renamed = {"text": "output_text", "audio": "output_audio"}
    parts = [
        {**part, "type": renamed[part["type"]]}
        if isinstance(part, dict) and part.get("type") in renamed
        else part
        for part in content
    ]
    return {**item, "content": parts}


def response_to_ga(params: Any, *, event_id: str | None = None) -> tuple[dict[str, Any], float | None]:
    """Beta ``response.create.response`` overrides as GA ones, with the temperature asked for."""
    fields = _validate(BetaResponseParams, params, "response", event_id)
    ga: dict[str, Any] = {}
    output: dict[str, Any] = {}
    temperature: float | None = None
    for key, value in fields.items():
        if key in ("conversation", "instructions", "metadata"):
            ga[key] = value
        elif key == "input":
            ga["input"] = [item_to_ga(entry) for entry in value] if value is not None else None
        elif key == "max_response_output_tokens":
            ga["max_output_tokens"] = value
        elif key == "modalities":
            ga["output_modalities"] = _modalities_to_ga(value) if value is not None else None
        elif key == "output_audio_format":
            if value is not None:
                output["format"] = dict(BETA_FORMATS[value])
        elif key == "voice":
            if value is not None:
                output["voice"] = value
        elif key == "tools":
            ga["tools"] = _tools_to_ga(value) if value is not None else None
        elif key == "tool_choice":
            ga["tool_choice"] = _tool_choice_to_ga(value)
        elif key == "temperature" and value is not None:
            temperature = clamp_temperature(value)
    if output:
        ga["audio"] = {"output": output}
    return ga, temperature


# --------------------------------------------------------------------------- GA → beta


def _format_name(fmt: Any) -> str:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return FORMAT_NAMES.get(str(kind), "pcm16")


def _voice_name(voice: Any) -> str:
    return str(voice.get("id", "")) if isinstance(voice, dict) else str(voice)


def beta_model_name(model: str) -> str:
    return model if model in BETA_MODELS else "gpt-realtime"


def _transcription_to_beta(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {"model": value.get("model"), "language": value.get("language"), "prompt": value.get("prompt")}


def _noise_reduction_to_beta(value: Any) -> dict[str, Any] | None:
    return {"type": value.get("type")} if isinstance(value, dict) else None


def _turn_detection_to_beta(value: Any, *, transcription: bool = False) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    if value.get("type") == "semantic_vad":
        keys: tuple[str, ...] = ("type", "eagerness", "create_response", "interrupt_response")
        if transcription:
            keys = ("type", "eagerness")
    elif transcription:
        keys = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")
    else:
        keys = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response")
        keys += ("interrupt_response",)
    out = {key: value.get(key) for key in keys}
    if not transcription and value.get("idle_timeout_ms") is not None:
        out["idle_timeout_ms"] = value["idle_timeout_ms"]
    return out


def _tool_choice_to_beta(choice: Any) -> str:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return str(choice.get("name"))
    return "auto"


def _modalities_to_beta(modalities: Any) -> list[str]:
    return ["audio", "text"] if isinstance(modalities, list) and "audio" in modalities else ["text"]


def session_to_beta(session: dict[str, Any], *, temperature: float = DEFAULT_TEMPERATURE) -> dict[str, Any]:
    """A GA realtime session (wire form) as the beta session object."""
    audio = session.get("audio") or {}
    audio_in, audio_out = audio.get("input") or {}, audio.get("output") or {}
    tools = [
        {
            "type": "function",
            "name": tool.get("name"),
            "description": tool.get("description"),
            "parameters": tool.get("parameters"),
        }
        for tool in session.get("tools") or []
        if tool.get("type") == "function"
    ]
    return {
        "id": session.get("id"),
        "object": "realtime.session",
        "expires_at": session.get("expires_at"),
        "model": beta_model_name(str(session.get("model") or "")),
        "modalities": _modalities_to_beta(session.get("output_modalities")),
        "instructions": session.get("instructions"),
        "voice": _voice_name(audio_out.get("voice", "alloy")),
        "input_audio_format": _format_name(audio_in.get("format")),
        "output_audio_format": _format_name(audio_out.get("format")),
        "input_audio_transcription": _transcription_to_beta(audio_in.get("transcription")),
        "input_audio_noise_reduction": _noise_reduction_to_beta(audio_in.get("noise_reduction")),
        "turn_detection": _turn_detection_to_beta(audio_in.get("turn_detection")),
        "tools": tools,
        "tool_choice": _tool_choice_to_beta(session.get("tool_choice", "auto")),
        "temperature": temperature,
        "max_response_output_tokens": session.get("max_output_tokens", "inf"),
        "speed": audio_out.get("speed", 1.0),
        "tracing": session.get("tracing"),
        "include": session.get("include"),
        "client_secret": None,
    }


def transcription_session_to_beta(session: dict[str, Any]) -> dict[str, Any]:
    """A GA transcription session (wire form) as the beta transcription session object."""
    audio_in = (session.get("audio") or {}).get("input") or {}
    return {
        "id": session.get("id"),
        "object": "realtime.transcription_session",
        "expires_at": session.get("expires_at"),
        "input_audio_format": _format_name(audio_in.get("format")),
        "input_audio_transcription": _transcription_to_beta(audio_in.get("transcription")),
        "input_audio_noise_reduction": _noise_reduction_to_beta(audio_in.get("noise_reduction")),
        "turn_detection": _turn_detection_to_beta(audio_in.get("turn_detection"), transcription=True),
        "include": session.get("include"),
        "client_secret": None,
    }


_BETA_ITEM_TYPES = ("message", "function_call", "function_call_output")


def item_to_beta(item: dict[str, Any]) -> dict[str, Any] | None:
    """A GA item (wire form) as a beta item; None for item types the beta shape lacks (MCP)."""
    if item.get("type") not in _BETA_ITEM_TYPES:
        return None
    if "content" not in item:
        return dict(item)
    parts: list[dict[str, Any]] = []
    for part in item.get("content") or []:
        kind = part.get("type")
        if kind == "output_text":
            parts.append({**part, "type": "text"})
        elif kind == "output_audio":
            parts.append({**part, "type": "audio"})
        elif kind in ("input_text", "input_audio"):
            parts.append(dict(part))
        # input_image has no beta form
    return {**item, "content": parts}


def usage_to_beta(usage: Any) -> Any:
    """GA usage without the image counts the beta shape did not have."""
    if not isinstance(usage, dict):
        return usage
    out = copy.deepcopy(usage)
    details = out.get("input_token_details")
    if isinstance(details, dict):
        details.pop("image_tokens", None)
        cached = details.get("cached_tokens_details")
        if isinstance(cached, dict):
            cached.pop("image_tokens", None)
    return out


def response_to_beta(
    response: dict[str, Any], *, temperature: float = DEFAULT_TEMPERATURE, conversation_id: str | None = None
) -> dict[str, Any]:
    """A GA response object as the beta one (``modalities``, ``voice``, ``output_audio_format``)."""
    output = (response.get("audio") or {}).get("output") or {}
    items = [converted for item in response.get("output") or [] if (converted := item_to_beta(item))]
    conversation = response.get("conversation_id")
    return {
        "object": "realtime.response",
        "id": response.get("id"),
        "status": response.get("status"),
        "status_details": response.get("status_details"),
        "output": items,
        "conversation_id": conversation_id if conversation and conversation_id else conversation,
        "modalities": _modalities_to_beta(response.get("output_modalities")),
        "voice": _voice_name(output.get("voice", "alloy")),
        "output_audio_format": _format_name(output.get("format")),
        "max_output_tokens": response.get("max_output_tokens", "inf"),
        "temperature": temperature,
        "usage": usage_to_beta(response.get("usage")),
        "metadata": response.get("metadata"),
    }


_PARAM_PATHS = (
    ("session.audio.input.format", "session.input_audio_format"),
    ("session.audio.output.format", "session.output_audio_format"),
    ("session.audio.input.transcription", "session.input_audio_transcription"),
    ("session.audio.input.noise_reduction", "session.input_audio_noise_reduction"),
    ("session.audio.input.turn_detection", "session.turn_detection"),
    ("session.audio.output.voice", "session.voice"),
    ("session.audio.output.speed", "session.speed"),
    ("session.output_modalities", "session.modalities"),
    ("session.max_output_tokens", "session.max_response_output_tokens"),
    ("response.audio.output.voice", "response.voice"),
    ("response.audio.output.format", "response.output_audio_format"),
    ("response.output_modalities", "response.modalities"),
    ("response.max_output_tokens", "response.max_response_output_tokens"),
)


def param_to_beta(param: str | None) -> str | None:
    """A GA ``param`` path as the beta parameter the client sent (``session.voice``, …)."""
    if not param:
        return param
    for ga, beta in _PARAM_PATHS:
        if param == ga or param.startswith(ga + ".") or param.startswith(ga + "["):
            return beta + param[len(ga) :]
    return param


def error_to_beta(error: dict[str, Any]) -> dict[str, Any]:
    """An ``error`` object whose ``param`` (and the message quoting it) use beta paths."""
    param = error.get("param")
    beta = param_to_beta(param)
    if beta == param:
        return error
    message = str(error.get("message") or "").replace(str(param), str(beta))
    return {**error, "param": beta, "message": message}


# --------------------------------------------------------------------------- the connection


_RENAMED = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}
UNCHANGED_SERVER_EVENTS = frozenset(
    {
        "rate_limits.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    }
)
DROPPED_SERVER_EVENTS = frozenset(
    {
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "conversation.item.input_audio_transcription.segment",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)
"""GA-only events: no beta client knows them (see the module docstring)."""


class BetaShape:
    """One connection speaking the beta shape (an ``EventShape``).

    It follows the session through the events it translates (its type, turn detection) and
    keeps what the GA session has no room for: the beta ``temperature`` and which items the
    client has already seen. ``conversation_id`` is the session's conversation (a new one is
    made up when not given); responses report it, and ``conversation.created`` announces it.
    """

    def __init__(self, *, conversation_id: str | None = None, temperature: float | None = None) -> None:
        self.conversation_id = conversation_id or new_id("conv_")
        self.temperature = clamp_temperature(temperature) if temperature is not None else DEFAULT_TEMPERATURE
        self.session: dict[str, Any] = {}
        self._announced: set[str] = set()
        self._response_temperature: dict[str, float] = {}
        self._started = False
        # set while a translated frame is being handled: what it asked for beyond GA
        self._pending_session_temperature: float | None = None
        self._pending_response_temperature: float | None = None
        self._refusing = False

    # ---- client → server

    @property
    def session_type(self) -> str:
        return str(self.session.get("type") or "realtime")

    def receive(self, frame: str | bytes, deliver: Deliver, refuse: Refuse) -> None:
        if isinstance(frame, bytes | bytearray) or _APPEND_FRAME.match(frame):
            deliver(frame)  # binary frames: the session reports them as in GA
            return
        try:
            data = parse_json_frame(frame)
        except RealtimeError:
            deliver(frame)  # not JSON: the session reports it exactly as in GA
            return
        try:
            translated, session_temperature, response_temperature = self.client_event(data)
        except Exception as exc:  # a bug on one event must not end the session
            err = exc if isinstance(exc, RealtimeError) else _translation_failed(data, exc)
            self._refusing = True  # its params are beta already
            try:
                refuse(err)
            finally:
                self._refusing = False
            return
        if translated is None:
            deliver(frame)
            return
        self._pending_session_temperature = session_temperature
        self._pending_response_temperature = response_temperature
        try:
            deliver(json.dumps(translated, ensure_ascii=False))
        finally:
            self._pending_session_temperature = self._pending_response_temperature = None

    def client_event(self, data: dict[str, Any]) -> tuple[dict[str, Any] | None, float | None, float | None]:
        """One beta client event as its GA form (None: send it as it came), with the session and
        response temperatures it asked for. Raises ``RealtimeError`` with beta params."""
        raw_event_id = data.get("event_id")
        event_id = raw_event_id if isinstance(raw_event_id, str) else None
        kind = data.get("type")
        if "type" not in data or kind in _UNCHANGED_CLIENT_EVENTS:
            return None, None, None  # the session reports a missing type as in GA
        if kind == "session.update":
            event = _validate(_SessionUpdate, data, "", event_id)
            if self.session_type == "transcription":
                raise RealtimeError(
                    "invalid_request_error",
                    "This is a transcription session: configure it with 'transcription_session.update'.",
                    param="type",
                    event_id=event_id,
                )
            patch, temperature, _ = session_to_ga(
                event["session"], current_turn_detection=self._turn_detection_type(), event_id=event_id
            )
            return self._event("session.update", event_id, session=patch), temperature, None
        if kind == "transcription_session.update":
            event = _validate(_TranscriptionSessionUpdate, data, "", event_id)
            if self.session_type != "transcription":
                raise RealtimeError(
                    "invalid_request_error",
                    "'transcription_session.update' configures transcription sessions "
                    "(connect with '?intent=transcription'); use 'session.update' here.",
                    param="type",
                    event_id=event_id,
                )
            patch, _, _ = session_to_ga(
                event["session"],
                kind="transcription",
                current_turn_detection=self._turn_detection_type(),
                event_id=event_id,
            )
            return self._event("session.update", event_id, session=patch), None, None
        if kind == "conversation.item.create":
            event = _validate(_ItemCreate, data, "", event_id)
            extra = {"previous_item_id": event["previous_item_id"]} if "previous_item_id" in event else {}
            return self._event(kind, event_id, item=item_to_ga(event["item"]), **extra), None, None
        if kind == "response.create":
            event = _validate(_ResponseCreate, data, "", event_id)
            if event.get("response") is None:
                return self._event(kind, event_id), None, None
            params, temperature = response_to_ga(event["response"], event_id=event_id)
            return self._event(kind, event_id, response=params), None, temperature
        shown = kind if isinstance(kind, str) else json.dumps(kind)[:100]
        supported = ", ".join(f"'{name}'" for name in BETA_CLIENT_EVENTS)
        raise RealtimeError(
            "invalid_value",
            f"Invalid value: '{shown[:100]}'. Supported values are: {supported}.",
            param="type",
            event_id=event_id,
        )

    @staticmethod
    def _event(kind: str, event_id: str | None, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {"type": kind, **fields}
        if event_id is not None:
            event["event_id"] = event_id
        return event

    def _turn_detection_type(self) -> str | None:
        detection = ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        return str(detection["type"]) if isinstance(detection, dict) and detection.get("type") else None

    # ---- server → client

    def send(self, event: WireEvent) -> list[str]:
        if event.type in DROPPED_SERVER_EVENTS:
            return []
        if isinstance(event, BaseModel):
            data: dict[str, Any] = event.model_dump(mode="json")
        else:
            data = json.loads(event.to_json())
        try:
            translated = self.server_event(data)
        except Exception:  # a bug on one event must not end the session
            log.exception("could not translate a %s event to the beta shape", event.type)
            return []
        return [json.dumps(out, separators=(",", ":"), ensure_ascii=False) for out in translated]

    def server_event(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """One GA server event (wire form) as the beta events it becomes (none, one or two)."""
        kind = str(data.get("type"))
        if kind in DROPPED_SERVER_EVENTS:
            return []
        if kind in UNCHANGED_SERVER_EVENTS:
            return [data]
        renamed = _RENAMED.get(kind)
        if renamed is not None:
            return [{**data, "type": renamed}]
        if kind in ("session.created", "session.updated"):
            return self._session_event(data)
        if kind == "error":
            if self._refusing:
                return [data]
            return [{**data, "error": error_to_beta(data.get("error") or {})}]
        if kind == "conversation.created":
            if self._started:
                return []  # already announced after session.created
            self._started = True
            conversation = data.get("conversation") or {}
            self.conversation_id = str(conversation.get("id") or self.conversation_id)
            return [data]
        if kind in ("conversation.item.added", "conversation.item.done", "conversation.item.created"):
            return self._item_event(data)
        if kind == "conversation.item.retrieved":
            item = item_to_beta(data.get("item") or {})
            return [{**data, "item": item}] if item is not None else []
        if kind == "conversation.item.deleted":
            self._announced.discard(str(data.get("item_id")))
            return [data]
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = item_to_beta(data.get("item") or {})
            return [{**data, "item": item}] if item is not None else []
        if kind in ("response.created", "response.done"):
            return [self._response_event(data)]
        return []  # not a GA server event: nothing a beta client could read

    def _session_event(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        session = data.get("session") or {}
        self.session = session
        created = data["type"] == "session.created"
        if not created and self._pending_session_temperature is not None:
            self.temperature = self._pending_session_temperature
            self._pending_session_temperature = None
        if session.get("type") == "transcription":
            kind = "transcription_session.created" if created else "transcription_session.updated"
            return [{**data, "type": kind, "session": transcription_session_to_beta(session)}]
        out = [{**data, "session": session_to_beta(session, temperature=self.temperature)}]
        if created and not self._started:
            self._started = True
            out.append(
                {
                    "type": "conversation.created",
                    "event_id": new_id("event_"),
                    "conversation": {"id": self.conversation_id, "object": "realtime.conversation"},
                }
            )
        return out

    def _item_event(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        item = data.get("item") or {}
        item_id = str(item.get("id"))
        if data["type"] == "conversation.item.done" and item_id in self._announced:
            return []
        beta = item_to_beta(item)
        if beta is None:
            return []
        self._announced.add(item_id)
        return [
            {
                "type": "conversation.item.created",
                "event_id": data.get("event_id"),
                "previous_item_id": data.get("previous_item_id"),
                "item": beta,
            }
        ]

    def _response_event(self, data: dict[str, Any]) -> dict[str, Any]:
        response = data.get("response") or {}
        rid = str(response.get("id"))
        if data["type"] == "response.created":
            temperature = self._pending_response_temperature
            self._pending_response_temperature = None
            if temperature is not None:
                self._response_temperature[rid] = temperature
            used = self._response_temperature.get(rid, self.temperature)
        else:
            used = self._response_temperature.pop(rid, self.temperature)
        beta = response_to_beta(response, temperature=used, conversation_id=self.conversation_id)
        return {**data, "response": beta}


def _translation_failed(data: dict[str, Any], exc: Exception) -> RealtimeError:
    log.exception("could not translate a beta client event", exc_info=exc)
    raw = data.get("event_id")
    return RealtimeError(
        "server_error",
        "The server failed to process the event.",
        type="server_error",
        event_id=raw if isinstance(raw, str) else None,
    )
