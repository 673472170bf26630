"""What goes into the core and what comes out of it, besides its commands (commands.py).

* ``ClientInput``: the GA client events, typed, with their audio already decoded to PCM at the
  edge (``transports/wire.py``): ``AppendAudio`` and ``CreateItem`` stand in for the two events
  that carry base64 audio. ``SessionCore.handle`` matches over this union.
* ``Result``: everything the runtime reports back (engine output, transcripts, VAD scores,
  timers, caller audio from a media transport, cleared playback). ``SessionCore.receive``
  matches over this union; a result for a response that is no longer live is dropped there,
  in one place.
* ``Output``: server events, plus PCM the edge turns into wire audio (``OutputAudio``) and a
  retrieved item whose audio the edge encodes (``RetrievedItem``).

Audio inside is 24 kHz mono int16 (``audio.formats.INTERNAL_RATE``) as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..protocol import client_events as ce
from ..protocol import server_events as se

PcmAudio = npt.NDArray[np.int16]
"""24 kHz mono int16."""

CancelReason = Literal["client_cancelled", "turn_detected"]

# --------------------------------------------------------------------------- client inputs


@dataclass(frozen=True)
class AppendAudio:
    """``input_audio_buffer.append`` with its audio decoded from the session's input format."""

    pcm: PcmAudio
    event_id: str | None = None


@dataclass(frozen=True)
class CreateItem:
    """``conversation.item.create``; ``audio`` holds the decoded ``input_audio`` of content
    parts by index (their base64 ``audio`` was taken out of ``event.item``)."""

    event: ce.ConversationItemCreate
    audio: Mapping[int, PcmAudio] = field(default_factory=dict)

    @property
    def event_id(self) -> str | None:
        return self.event.event_id


ClientInput = (
    ce.SessionUpdate
    | AppendAudio
    | ce.InputAudioBufferCommit
    | ce.InputAudioBufferClear
    | CreateItem
    | ce.ConversationItemRetrieve
    | ce.ConversationItemTruncate
    | ce.ConversationItemDelete
    | ce.ResponseCreate
    | ce.ResponseCancel
    | ce.OutputAudioBufferClear
)

# --------------------------------------------------------------------------- results: responses


@dataclass(frozen=True)
class TextGenerated:
    """Text from the model: ``output_text``, or the transcript of speech, by modality."""

    response_id: str
    text: str


@dataclass(frozen=True)
class SpeechGenerated:
    """Speech for the text given so far."""

    response_id: str
    pcm: PcmAudio


@dataclass(frozen=True)
class ToolCalled:
    """A complete, validated tool call of the model."""

    response_id: str
    name: str
    call_id: str
    arguments: str


@dataclass(frozen=True)
class PromptRead:
    """The model has read its prompt (counts for usage, also when it is cancelled later)."""

    response_id: str
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class GenerationFinished:
    """The engines finished the response (``finish_reason`` ``length``: out of tokens;
    ``content_filter``: content safety cut it)."""

    response_id: str
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    usage: Mapping[str, Any] | None = None
    """The usage as the model's own service billed it (an upstream Realtime API's
    ``response.done``): reported as it is instead of being counted here."""


@dataclass(frozen=True)
class GenerationFailed:
    response_id: str
    code: str
    message: str


@dataclass(frozen=True)
class CancelRequested:
    """The runtime stops a response (it is the same cancel as ``response.cancel``)."""

    response_id: str
    reason: CancelReason


@dataclass(frozen=True)
class OutputCleared:
    """Server-side playback (WebRTC, SIP) dropped the queued audio of ``response_id``:
    stop the response if it still runs, and truncate ``item_id`` to what was played."""

    response_id: str
    item_id: str
    played_ms: int
    reason: CancelReason


# --------------------------------------------------------------------------- results: tools


@dataclass(frozen=True)
class McpToolsListed:
    item_id: str
    tools: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class McpToolsFailed:
    item_id: str
    code: str
    message: str


@dataclass(frozen=True)
class McpCallDone:
    """An MCP call ran: its text ``output``, or an ``error`` in wire shape."""

    response_id: str
    item_id: str
    output: str | None
    error: dict[str, Any] | None


# --------------------------------------------------------------------------- results: input


@dataclass(frozen=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True)
class TranscriptCompleted:
    item_id: str
    transcript: str
    usage: dict[str, Any]


@dataclass(frozen=True)
class TranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True)
class CallerLanguageChanged:
    """The language the caller is heard speaking changed (ISO 639-1; None: undecided). Answers
    follow it unless the client set ``transcription.language``."""

    language: str | None


@dataclass(frozen=True)
class ImageAnalyzed:
    """What the LLM reads for an image from now on (its analysis, or why there is none)."""

    item_id: str
    content_index: int
    text: str


@dataclass(frozen=True)
class VadFrame:
    probability: float
    start_ms: float
    end_ms: float
    level_db: float | None = None
    assistant_audible: bool = False
    """The answer may be playing at the caller's end during this frame (core/backchannels.py)."""


@dataclass(frozen=True)
class SpeechProbabilities:
    """VAD scores of consecutive frames of the input audio."""

    frames: tuple[VadFrame, ...]


@dataclass(frozen=True)
class HeldSpeechHeard:
    """The transcript of held speech over ``TranscribeHeld``'s span, which ended at ``end_ms``."""

    item_id: str
    text: str
    end_ms: float


@dataclass(frozen=True)
class EndOfTurnPredicted:
    """Evidence for the pause that ``request_id`` asked about: smart-turn's score (``None``:
    none new), the completeness of the pause's transcript and the prosody at its end (each a
    probability that the turn is over), and whether that transcript is still being made."""

    request_id: int
    probability: float | None
    text: float | None = None
    prosody: float | None = None
    text_pending: bool | None = None


@dataclass(frozen=True)
class CallerAudio:
    """Caller audio from a media transport (RTP), appended like ``input_audio_buffer.append``."""

    pcm: PcmAudio


@dataclass(frozen=True)
class IdleTimeout:
    """``idle_timeout_ms`` passed after the assistant's audio finished playing."""


@dataclass(frozen=True)
class SessionExpired:
    """The maximum session duration was reached."""


Result = (
    TextGenerated
    | SpeechGenerated
    | ToolCalled
    | PromptRead
    | GenerationFinished
    | GenerationFailed
    | CancelRequested
    | OutputCleared
    | McpToolsListed
    | McpToolsFailed
    | McpCallDone
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | CallerLanguageChanged
    | ImageAnalyzed
    | SpeechProbabilities
    | EndOfTurnPredicted
    | HeldSpeechHeard
    | CallerAudio
    | IdleTimeout
    | SessionExpired
)

# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class OutputAudio:
    """Speech of a response's content part; on WebSocket it becomes
    ``response.output_audio.delta`` in ``format``, on WebRTC and SIP it is played out."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int
    pcm: PcmAudio
    format: str


@dataclass(frozen=True)
class AudioClip:
    """Audio of a content part and the wire format it is reported in."""

    pcm: bytes
    """int16 little-endian samples."""
    format: str


@dataclass(frozen=True)
class RetrievedItem:
    """``conversation.item.retrieved``; the edge puts ``clips`` into the parts' ``audio``."""

    event: se.ConversationItemRetrieved
    clips: Mapping[int, AudioClip] = field(default_factory=dict)


Output = se.ServerEvent | OutputAudio | RetrievedItem
