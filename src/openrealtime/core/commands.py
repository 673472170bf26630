"""Commands the session core asks its runtime to carry out (start or stop engine work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StartResponse:
    """Generate response ``response_id``: run the LLM, speak the answer if audio."""

    response_id: str
    context_item_ids: tuple[str, ...]
    """Items the response reads; the runtime waits for their transcripts, then asks the core
    for the request (``SessionCore.build_request``)."""
    modality: Literal["audio", "text"]
    voice: str
    speed: float
    output_format: str
    """The wire format of audio deltas: ``audio/pcm``, ``audio/pcmu`` or ``audio/pcma``."""


@dataclass(frozen=True)
class CancelResponse:
    """Stop work for ``response_id`` at once; everything it still produces is dropped."""

    response_id: str


@dataclass(frozen=True)
class TranscribeItem:
    """Transcribe the committed user audio of ``item_id`` (input format bytes)."""

    item_id: str
    audio: bytes
    input_format: str
    model: str | None
    language: str | None
    prompt: str | None


@dataclass(frozen=True)
class InputAppended:
    """New caller audio (input format bytes) for VAD and streaming transcription."""

    audio: bytes
    input_format: str
    start_ms: float
    """Position of the first byte on the session's input clock."""


@dataclass(frozen=True)
class SpeechStarted:
    """VAD confirmed speech: the user item ``item_id`` begins at ``audio_start_ms``."""

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class PredictEndOfTurn:
    """Run the turn detector on ``[audio_start_ms, audio_end_ms)`` and report the result."""

    request_id: int
    audio_start_ms: int
    audio_end_ms: int


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


Command = (
    StartResponse
    | CancelResponse
    | TranscribeItem
    | InputAppended
    | SpeechStarted
    | PredictEndOfTurn
    | InputCommitted
    | ResponseFinished
    | InputBufferCleared
    | CloseConnection
)
