"""The session object (GA shape): configuration, defaults and ``session.update`` merging.

Client input is validated strictly (unknown keys are errors, as on the real service); the
effective session is always complete. It is emitted the way the real service emits it: every
field of the GA launch shape is present (``null`` where unset), because strict clients
validate ``session.created``/``session.updated`` and read from it; a field added to the API
later (spec §15) appears only once it has a value. Clients built against the launch shape
break on those even as ``null``: pipecat 1.14's transcription model takes exactly ``model``,
``language`` and ``prompt``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")

DEFAULT_INSTRUCTIONS = (
    "You are a helpful, friendly voice assistant running on the user's own machine. "
    "Answer in one to three short spoken sentences: plain words, no lists, no markdown, no emoji. "
    "If a tool fits the request, call it; otherwise answer directly. "
    "If you do not know something, say so briefly."
)


class Strict(BaseModel):
    """Base for client-supplied objects: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


def _unset(value: object) -> bool:
    return value is None


def later_addition(**constraints: Any) -> Any:
    """A field added to the API after the GA launch (spec §15). It is ``None`` until a client
    sets it and left out of the wire form while ``None``, as the real service leaves out the
    later fields a client did not set."""
    return Field(default=None, exclude_if=_unset, **constraints)


# --------------------------------------------------------------------------- audio formats


class AudioPCM(Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


class AudioPCMU(Strict):
    type: Literal["audio/pcmu"]


class AudioPCMA(Strict):
    type: Literal["audio/pcma"]


AudioFormat = Annotated[AudioPCM | AudioPCMU | AudioPCMA, Field(discriminator="type")]


# --------------------------------------------------------------------------- input side


class Transcription(Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = later_addition()
    keywords: list[str] | None = later_addition()
    languages: list[str] | None = later_addition()


class NoiseReduction(Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = later_addition(ge=0.0, le=1.0)


class ServerVad(Strict):
    type: Literal["server_vad"]
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    silence_duration_ms: int = Field(default=200, ge=0, le=10_000)
    idle_timeout_ms: int | None = Field(default=None, ge=1_000, le=30_000)
    create_response: bool = True
    interrupt_response: bool = True


class SemanticVad(Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class AudioInput(Strict):
    format: AudioFormat = Field(default_factory=AudioPCM)
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = Field(default_factory=lambda: ServerVad(type="server_vad"))


class VoiceId(Strict):
    id: str


class AudioOutput(Strict):
    format: AudioFormat = Field(default_factory=AudioPCM)
    voice: str | VoiceId = "marin"
    speed: float = Field(default=1.0, ge=0.25, le=1.5)


class Audio(Strict):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput = Field(default_factory=AudioOutput)


# --------------------------------------------------------------------------- tools


class FunctionTool(Strict):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class McpToolFilter(Strict):
    tool_names: list[str] | None = None
    read_only: bool | None = None


class McpApprovalFilter(Strict):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


class McpTool(Strict):
    type: Literal["mcp"]
    server_label: str
    server_url: str | None = None
    connector_id: str | None = None
    tunnel_id: str | None = later_addition()
    authorization: str | None = None
    headers: dict[str, str] | None = None
    allowed_tools: list[str] | McpToolFilter | None = None
    require_approval: Literal["always", "never"] | McpApprovalFilter | None = None
    server_description: str | None = None
    defer_loading: bool | None = later_addition()
    allowed_callers: list[Literal["direct", "programmatic"]] | None = later_addition()


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class ToolChoiceFunction(Strict):
    type: Literal["function"]
    name: str


class ToolChoiceMcp(Strict):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction | ToolChoiceMcp


# --------------------------------------------------------------------------- misc


class TracingConfig(Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


class TokenLimits(Strict):
    post_instructions: int | None = later_addition(ge=0)


class RetentionRatio(Strict):
    type: Literal["retention_ratio"]
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimits | None = later_addition()


class Prompt(Strict):
    id: str
    version: str | None = None
    variables: dict[str, Any] | None = None


class Reasoning(Strict):
    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = later_addition()


Modality = Literal["audio", "text"]
MaxOutputTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]


class RealtimeSession(Strict):
    """The effective configuration of a ``realtime`` session (all defaults filled)."""

    type: Literal["realtime"] = "realtime"
    object: Literal["realtime.session"] = "realtime.session"
    id: str = ""
    model: str = "gpt-realtime"
    output_modalities: list[Literal["audio", "text"]] = Field(
        default_factory=lambda: list[Modality](["audio"]), min_length=1, max_length=1
    )
    instructions: str = DEFAULT_INSTRUCTIONS
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    max_output_tokens: MaxOutputTokens = "inf"
    tracing: Literal["auto"] | TracingConfig | None = None
    truncation: Literal["auto", "disabled"] | RetentionRatio = "auto"
    prompt: Prompt | None = None
    expires_at: int = 0
    audio: Audio = Field(default_factory=Audio)
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    parallel_tool_calls: bool | None = later_addition()
    reasoning: Reasoning | None = later_addition()


class TranscriptionTurnDetection(Strict):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    silence_duration_ms: int = Field(default=200, ge=0, le=10_000)


class TranscriptionAudioInput(Strict):
    format: AudioFormat = Field(default_factory=AudioPCM)
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = Field(default_factory=lambda: ServerVad(type="server_vad"))


class TranscriptionAudio(Strict):
    input: TranscriptionAudioInput = Field(default_factory=TranscriptionAudioInput)


class TranscriptionSession(Strict):
    """The effective configuration of a ``transcription`` session (``?intent=transcription``)."""

    type: Literal["transcription"] = "transcription"
    object: Literal["realtime.transcription_session"] = "realtime.transcription_session"
    id: str = ""
    expires_at: int = 0
    audio: TranscriptionAudio = Field(default_factory=TranscriptionAudio)
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


AnySession = RealtimeSession | TranscriptionSession

# Keys a client may never set: they are output only.
_OUTPUT_ONLY = ("object", "id", "expires_at")
# Objects that merge field by field in ``session.update``; everything else is replaced whole.
_MERGED_PATHS = {("audio",), ("audio", "input"), ("audio", "output")}

REMOVED_GA_FIELDS = {
    "temperature": "Use response-level settings; 'temperature' was removed from the GA session.",
    "modalities": "Use 'output_modalities'.",
    "voice": "Use 'audio.output.voice'.",
    "input_audio_format": "Use 'audio.input.format'.",
    "output_audio_format": "Use 'audio.output.format'.",
    "input_audio_transcription": "Use 'audio.input.transcription'.",
    "input_audio_noise_reduction": "Use 'audio.input.noise_reduction'.",
    "turn_detection": "Use 'audio.input.turn_detection'.",
    "speed": "Use 'audio.output.speed'.",
    "max_response_output_tokens": "Use 'max_output_tokens'.",
    "client_secret": "Use 'expires_after' on client_secrets.",
}


def merge_session_update(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a ``session.update`` body to the current session dict (spec §5.7).

    Only present fields change; ``null`` turns a feature off; ``audio``, ``audio.input`` and
    ``audio.output`` merge per field, as does ``turn_detection`` when its ``type`` is unchanged.
    Lists (``tools``, ``output_modalities``) and other objects are replaced whole.
    """
    merged = copy.deepcopy(current)
    _merge_into(merged, patch, ())
    return merged


def _merge_into(target: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> None:
    for key, value in patch.items():
        if key in _OUTPUT_ONLY and not path:
            continue
        here = (*path, key)
        existing = target.get(key)
        if isinstance(value, dict) and isinstance(existing, dict):
            same_vad = key == "turn_detection" and value.get("type", existing.get("type")) == existing.get(
                "type"
            )
            if here in _MERGED_PATHS or same_vad:
                _merge_into(existing, value, here)
                continue
        target[key] = copy.deepcopy(value)
