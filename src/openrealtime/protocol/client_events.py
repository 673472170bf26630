"""Client events (GA) and their strict parsing into OpenAI-shaped errors.

``parse_client_event`` turns one text frame into a typed event or raises ``RealtimeError``
with the code, param and message the real service uses, and the client's ``event_id``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import RealtimeError
from .items import (
    AssistantMessage,
    ClientItem,
    FunctionCall,
    FunctionCallOutput,
    ItemReference,
    McpApprovalResponse,
    SystemMessage,
    UserMessage,
)
from .session import (
    REMOVED_GA_FIELDS,
    AudioFormat,
    MaxOutputTokens,
    Prompt,
    Reasoning,
    Tool,
    ToolChoice,
    VoiceId,
)

MAX_APPEND_BASE64_CHARS = 15 * 1024 * 1024 * 4 // 3 + 4
"""15 MiB of audio, base64-encoded."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(default=None, max_length=512)


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: dict[str, Any]
    """Validated against the session models by the core, which knows the current state."""


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    item: dict[str, Any]
    """Checked by ``parse_item`` after the envelope, so errors name the exact field."""
    previous_item_id: str | None = None


class ConversationItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ResponseAudioOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None


class ResponseAudio(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output: ResponseAudioOutput | None = None


class ResponseParams(BaseModel):
    """Per-response overrides; nothing here persists to the session."""

    model_config = ConfigDict(extra="forbid")

    conversation: str | None = None
    input: list[dict[str, Any]] | None = None
    """Items and ``item_reference``s, checked by ``parse_item``."""
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_modalities: list[Literal["audio", "text"]] | None = Field(default=None, min_length=1, max_length=1)
    audio: ResponseAudio | None = None
    max_output_tokens: MaxOutputTokens | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    prompt: Prompt | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
    | OutputAudioBufferClear
)

EVENT_MODELS: dict[str, type[_Event]] = {
    "session.update": SessionUpdate,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit,
    "input_audio_buffer.clear": InputAudioBufferClear,
    "conversation.item.create": ConversationItemCreate,
    "conversation.item.retrieve": ConversationItemRetrieve,
    "conversation.item.truncate": ConversationItemTruncate,
    "conversation.item.delete": ConversationItemDelete,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
    "output_audio_buffer.clear": OutputAudioBufferClear,
}

_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _supported(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def parse_json_frame(text: str | bytes) -> dict[str, Any]:
    """Decode one frame into a JSON object, or raise ``invalid_json`` / ``invalid_event``."""
    if isinstance(text, bytes | bytearray):
        raise RealtimeError(
            "invalid_event", "Binary frames are not supported; send JSON events as text frames."
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RealtimeError(
            "invalid_json",
            f"The server could not parse the event as JSON: {str(exc)[:200]}",
        ) from None
    if not isinstance(data, dict):
        raise RealtimeError("invalid_event", "An event must be a JSON object.")
    if _ESCAPED_SURROGATE.search(text) is not None and _has_lone_surrogate(data):
        raise RealtimeError(
            "invalid_json",
            "The event contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode.",
            event_id=data.get("event_id") if isinstance(data.get("event_id"), str) else None,
        )
    return data


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(data: Any) -> bool:
    """JSON may escape half of a surrogate pair; such text cannot be encoded again later."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_client_event(text: str | bytes) -> ClientEvent:
    """Parse and strictly validate one client event frame."""
    return validate_client_event(parse_json_frame(text))


MAX_TEXT_CHARS = 262_144
"""Longest string a client event may carry outside audio and image payloads: far beyond any
context window the engines have, and cheap to tokenise (a 1 MB text took 1.3 s on 2 cores,
stalling every session on the event loop)."""
_BULK_FIELDS = {"audio", "image_url"}


def _overlong_string(value: Any, path: str) -> tuple[str, int] | None:
    """The first string longer than ``MAX_TEXT_CHARS`` (outside audio/image data) and its path."""
    if isinstance(value, str):
        return (path, len(value)) if len(value) > MAX_TEXT_CHARS else None
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _BULK_FIELDS:
                continue
            found = _overlong_string(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _overlong_string(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def validate_client_event(data: dict[str, Any]) -> ClientEvent:
    raw_event_id = data.get("event_id")
    event_id = raw_event_id if isinstance(raw_event_id, str) else None
    overlong = _overlong_string(data, "")
    if overlong is not None:
        param, length = overlong
        raise RealtimeError(
            "string_above_max_length",
            f"Invalid '{param}': string too long. Expected a string with maximum length {MAX_TEXT_CHARS}, "
            f"but got a string with length {length} instead.",
            param=param,
            event_id=event_id,
        )
    if "type" not in data:
        raise RealtimeError("invalid_event", "The 'type' field is missing.", param="type", event_id=event_id)
    kind = data["type"]
    model = EVENT_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        shown = kind if isinstance(kind, str) else json.dumps(kind)[:100]
        raise RealtimeError(
            "invalid_value",
            f"Invalid value: '{shown[:100]}'. Supported values are: {_supported(list(EVENT_MODELS))}.",
            param="type",
            event_id=event_id,
        )
    if model is SessionUpdate and isinstance(data.get("session"), dict):
        check_removed_session_fields(data["session"], event_id)
    try:
        event: ClientEvent = model.model_validate(data)  # type: ignore[assignment]
    except ValidationError as exc:
        raise error_from_validation(exc, event_id=event_id, data=data) from None
    if isinstance(event, ConversationItemCreate):
        parse_item(event.item, "item", event_id)
    elif isinstance(event, ResponseCreate) and event.response and event.response.input is not None:
        for index, entry in enumerate(event.response.input):
            parse_item(entry, f"response.input[{index}]", event_id, allow_reference=True)
    return event


_ITEM_MODELS: dict[tuple[str, str | None], type[BaseModel]] = {
    ("message", "system"): SystemMessage,
    ("message", "user"): UserMessage,
    ("message", "assistant"): AssistantMessage,
    ("function_call", None): FunctionCall,
    ("function_call_output", None): FunctionCallOutput,
    ("mcp_approval_response", None): McpApprovalResponse,
    ("item_reference", None): ItemReference,
}


def parse_item(
    data: Any, param: str, event_id: str | None, *, allow_reference: bool = False
) -> ClientItem | ItemReference:
    """Validate a client-supplied item, choosing its model by ``type`` and ``role``."""
    if not isinstance(data, dict):
        raise RealtimeError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param=param, event_id=event_id
        )
    kind = data.get("type")
    if kind is None:
        raise RealtimeError(
            "missing_required_parameter",
            f"Missing required parameter: '{param}.type'.",
            param=f"{param}.type",
            event_id=event_id,
        )
    kinds = [k for k, _ in _ITEM_MODELS if allow_reference or k != "item_reference"]
    if kind not in kinds:
        raise RealtimeError(
            "invalid_value",
            f"Invalid value: '{str(kind)[:100]}'. Supported values are: {_supported(sorted(set(kinds)))}.",
            param=f"{param}.type",
            event_id=event_id,
        )
    role: str | None = None
    if kind == "message":
        role = data.get("role")
        if role is None:
            raise RealtimeError(
                "missing_required_parameter",
                f"Missing required parameter: '{param}.role'.",
                param=f"{param}.role",
                event_id=event_id,
            )
        if role not in ("system", "user", "assistant"):
            raise RealtimeError(
                "invalid_value",
                f"Invalid value: '{str(role)[:100]}'. Supported values are: 'system', 'user', 'assistant'.",
                param=f"{param}.role",
                event_id=event_id,
            )
    model = _ITEM_MODELS[(kind, role)]
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise error_from_validation(exc, event_id=event_id, data=data, prefix=param) from None


def check_removed_session_fields(
    session: dict[str, Any], event_id: str | None, prefix: str = "session"
) -> None:
    """Fields of the retired beta session shape get a pointed message instead of a generic one."""
    for key, hint in REMOVED_GA_FIELDS.items():
        if key in session:
            raise RealtimeError(
                "unknown_parameter",
                f"Unknown parameter: '{prefix}.{key}'. {hint}",
                param=f"{prefix}.{key}",
                event_id=event_id,
            )


def _loc_to_param(loc: tuple[int | str, ...], data: Any, prefix: str) -> str:
    """Turn a pydantic error location into the dotted ``param`` path of the real service.

    Union members and discriminator tags that pydantic inserts into locations are dropped by
    walking the input alongside the location.
    """
    parts: list[str] = [prefix] if prefix else []
    current = data
    for index, piece in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(piece, int) and isinstance(current, list) and 0 <= piece < len(current):
            if parts:
                parts[-1] = f"{parts[-1]}[{piece}]"
            else:
                parts.append(f"[{piece}]")
            current = current[piece]
        elif isinstance(piece, str) and isinstance(current, dict) and piece in current:
            parts.append(piece)
            current = current[piece]
        elif last and isinstance(piece, str) and isinstance(current, dict):
            parts.append(piece)  # a missing key
        # anything else is a union member or tag name inserted by pydantic
    return ".".join(parts)


def error_from_validation(
    exc: ValidationError, *, event_id: str | None, data: Any = None, prefix: str = ""
) -> RealtimeError:
    """Map the most relevant pydantic error to the real service's error codes."""
    errors = exc.errors(include_url=False)

    def rank(err: Any) -> int:
        order = {
            "extra_forbidden": 0,
            "missing": 1,
            "union_tag_invalid": 2,
            "less_than_equal": 3,
            "greater_than_equal": 3,
            "too_long": 3,
            "literal_error": 4,
        }
        return order.get(err["type"], 5)

    err = sorted(errors, key=rank)[0]
    param = _loc_to_param(tuple(err["loc"]), data, prefix)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return RealtimeError(
            "unknown_parameter", f"Unknown parameter: '{param}'.", param=param, event_id=event_id
        )
    if kind == "missing":
        return RealtimeError(
            "missing_required_parameter",
            f"Missing required parameter: '{param}'.",
            param=param,
            event_id=event_id,
        )
    if kind in ("literal_error", "union_tag_invalid", "enum"):
        expected = err.get("ctx", {}).get("expected") or err.get("ctx", {}).get("expected_tags") or ""
        shown = value if isinstance(value, str) else json.dumps(value, default=str)[:100]
        if kind == "union_tag_invalid":
            shown = str(err.get("ctx", {}).get("tag", shown))
            param = f"{param}.{err.get('ctx', {}).get('discriminator', 'type').strip(chr(39))}"
        return RealtimeError(
            "invalid_value",
            f"Invalid value: '{str(shown)[:100]}'. Supported values are: {expected}.",
            param=param,
            event_id=event_id,
        )
    if kind in (
        "greater_than_equal",
        "greater_than",
        "less_than_equal",
        "less_than",
        "too_long",
        "too_short",
    ):
        ctx = err.get("ctx", {})
        if kind in ("too_long", "too_short"):
            code = "array_above_max_length" if kind == "too_long" else "array_below_min_length"
            if isinstance(value, str):
                code = "string_above_max_length" if kind == "too_long" else "string_below_min_length"
        else:
            bound = next((v for k, v in ctx.items() if k in ("le", "ge", "lt", "gt")), value)
            number = "integer" if isinstance(bound, int) and isinstance(value, int) else "decimal"
            direction = "above_max" if kind.startswith("less") else "below_min"
            code = f"{number}_{direction}_value"
        return RealtimeError(
            code,
            f"Invalid '{param}': {err['msg']} (got {json.dumps(value, default=str)[:60]}). {ctx or ''}".strip(),
            param=param,
            event_id=event_id,
        )
    if kind == "string_pattern_mismatch":
        return RealtimeError(
            "invalid_value", f"Invalid '{param}': {err['msg']}.", param=param, event_id=event_id
        )
    type_name = type(value).__name__ if value is not None else "null"
    return RealtimeError(
        "invalid_type",
        f"Invalid type for '{param}': {err['msg'].lower()}, but got {type_name} instead.",
        param=param,
        event_id=event_id,
    )
