"""Commands the session core asks its runtime to carry out (start or stop engine work).

Frozen values: the core decides, the runtime does; what the work produces comes back to the
core as a ``Result`` (events.py) through ``SessionCore.receive``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .events import PcmAudio


@dataclass(frozen=True)
class StartResponse:
    """Generate response ``response_id``: run the LLM, speak the answer if audio."""

    response_id: str
    context_item_ids: tuple[str, ...]
    """Items the response reads; the runtime waits for their transcripts, then asks the core
    for the request (``SessionCore.chat_request``)."""
    modality: Literal["audio", "text"]
    voice: str
    speed: float
    output_format: str
    """The wire format of its audio: ``audio/pcm``, ``audio/pcmu`` or ``audio/pcma``."""
    language: str | None = None
    """The language to answer in when the response was created (ISO 639-1; None: English or
    undecided); the request (``ChatRequest.language``) has the one its transcripts settled."""


@dataclass(frozen=True)
class CancelResponse:
    """Stop work for ``response_id`` at once; everything it still produces is dropped."""

    response_id: str


@dataclass(frozen=True)
class TranscribeItem:
    """Transcribe the committed user audio of ``item_id``."""

    item_id: str
    pcm: PcmAudio
    model: str | None
    language: str | None
    prompt: str | None


@dataclass(frozen=True)
class AnalyzeImage:
    """Describe the image in content part ``content_index`` of user item ``item_id`` for the
    LLM, once; the result (``ImageAnalyzed``) is cached on the item."""

    item_id: str
    content_index: int
    image: bytes
    detail: Literal["auto", "low", "high"]
    question_hint: str | None


@dataclass(frozen=True)
class InputAppended:
    """New caller audio for VAD and streaming transcription."""

    pcm: PcmAudio
    start_ms: float
    """Position of the first sample on the session's input clock."""
    turn_detection: bool = True
    """Turn detection is on: score the audio with the VAD and report ``SpeechProbabilities``."""
    silence_below: float = 0.35
    """With turn detection, a frame scoring below this is silence to the turn (the segmenter's
    negative threshold): the streaming transcription's pass at the pause starts from it."""


@dataclass(frozen=True)
class SpeechStarted:
    """VAD confirmed speech: the user item ``item_id`` begins at ``audio_start_ms`` (its
    transcription may start now, with the session's ``language`` and ``prompt``)."""

    item_id: str
    audio_start_ms: int
    language: str | None = None
    prompt: str | None = None
    held: bool = False
    """The speech began while the answer plays: report its transcript (``HeldSpeechHeard``)
    until it is decided (core/backchannels.py)."""


@dataclass(frozen=True)
class HeldSpeechDropped:
    """Held speech was a backchannel: drop its transcription."""

    item_id: str


@dataclass(frozen=True)
class TranscribeHeld:
    """Held speech ended: transcribe exactly ``[start_ms, end_ms)`` (its onset to its end, on
    the input clock) and report it as ``HeldSpeechHeard``, whatever the pass finds (no words
    for a cough) or if it fails (no words)."""

    item_id: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class PredictEndOfTurn:
    """Run the turn detector on ``[audio_start_ms, audio_end_ms)`` and report the result."""

    request_id: int
    audio_start_ms: int
    audio_end_ms: int
    speech_end_ms: int | None = None
    """Where the speech before the pause ended (prosody is measured up to here)."""


@dataclass(frozen=True)
class InputCommitted:
    """The buffer up to ``end_ms`` on the input clock became user item ``item_id``."""

    item_id: str
    start_ms: float
    end_ms: float
    by_vad: bool


@dataclass(frozen=True)
class ResponseFinished:
    """A response ended (any status); ``audio_ms`` of speech was generated for it."""

    response_id: str
    audio_ms: int
    out_of_band: bool


@dataclass(frozen=True)
class InputBufferCleared:
    """The input audio buffer was emptied; reset VAD and streaming transcription state."""


@dataclass(frozen=True)
class CloseConnection:
    """Close the transport after sending pending events (fatal errors, expiry)."""

    code: int
    reason: str


@dataclass(frozen=True)
class ListMcpTools:
    """List the tools of the MCP server ``server_label`` for the ``mcp_list_tools`` item
    ``item_id``; report ``McpToolsListed`` or ``McpToolsFailed``."""

    item_id: str
    server_label: str
    server_url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallMcpTool:
    """Run tool ``name`` on an MCP server for the ``mcp_call`` item ``item_id`` of response
    ``response_id``; report ``McpCallDone``. The response continues (the model reads the
    result) once every call it started has been reported."""

    response_id: str
    item_id: str
    server_label: str
    server_url: str
    name: str
    arguments: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClearOutputAudio:
    """``output_audio_buffer.clear`` on WebRTC or SIP: drop the queued audio (the playback
    reports what it cleared as ``OutputCleared``)."""


Command = (
    StartResponse
    | CancelResponse
    | TranscribeItem
    | AnalyzeImage
    | InputAppended
    | SpeechStarted
    | PredictEndOfTurn
    | HeldSpeechDropped
    | TranscribeHeld
    | InputCommitted
    | ResponseFinished
    | InputBufferCleared
    | CloseConnection
    | ListMcpTools
    | CallMcpTool
    | ClearOutputAudio
)
