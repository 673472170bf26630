"""The small typed interfaces every engine implements.

Engines are shared by all sessions and are called from worker threads (never on the event
loop), so every method here is synchronous. Long-running calls take a ``CancelToken`` and
stop early once it is set; streams are plain iterators the runtime drains on a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

FloatAudio = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1]."""
PcmAudio = npt.NDArray[np.int16]
"""Mono signed 16-bit samples."""


class CancelToken:
    """A flag shared between the runtime and an engine call; set means 'stop soon'."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


# --------------------------------------------------------------------------- language model


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: name, description and JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    """A complete call the model decided to make; ``arguments`` is a JSON object string."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatImage:
    """An image the user shared, as a data URL, for models that see images themselves."""

    url: str
    detail: Literal["auto", "low", "high"] = "auto"


@dataclass(frozen=True)
class ChatMessage:
    """One chat-completions style message built from conversation items."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    images: tuple[ChatImage, ...] = ()
    """Images of a user message. ``content`` already carries their text analysis (for models
    without vision); a vision model gets the images and ``content_without_images`` instead."""
    content_without_images: str | None = None


ToolChoice = Literal["auto", "none", "required"] | str
"""``auto``/``none``/``required``, or the name of the one function that must be called."""


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | None = None
    temperature: float = 0.7
    language: str | None = None
    """The language the answer is in (ISO 639-1; None: English or undecided): its voice."""
    verbatim: Mapping[str, str] = field(default_factory=dict)
    """Exact texts of the context's function results by marker id (core/verbatim.py): the
    model writes a marker, the caller hears these words."""
    priority: int = 0
    """How soon the answer is needed, lower first (the scheduler's classes: 0 a caller is
    listening, 5 a text-only response, 20 a guess): a batching engine serves lower first."""


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A finished, grammar-constrained tool call (arguments are a JSON object string)."""

    call: ToolCall


@dataclass(frozen=True)
class GenerationDone:
    """Last event of every generation: why it stopped and what it cost in tokens."""

    finish_reason: Literal["stop", "length", "tool_calls", "cancelled"]
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int


LLMEvent = TextDelta | ToolCallDelta | GenerationDone


@runtime_checkable
class LanguageModel(Protocol):
    """A chat model that streams text or returns tool calls."""

    name: str

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer (used for usage accounting)."""
        ...

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Stream the answer; always ends with exactly one ``GenerationDone``."""
        ...


# --------------------------------------------------------------------------- speech in


@runtime_checkable
class VADStream(Protocol):
    """Per-session voice activity state (models like Silero are recurrent)."""

    def speech_probability(self, frame: FloatAudio) -> float:
        """Probability of speech in one frame of ``frame_samples`` samples."""
        ...

    def reset(self) -> None: ...


@runtime_checkable
class VAD(Protocol):
    sample_rate: int
    frame_samples: int

    def new_stream(self) -> VADStream: ...


@runtime_checkable
class TurnDetector(Protocol):
    """Predicts whether the speaker has finished their turn from the audio of the turn."""

    sample_rate: int

    def end_of_turn_probability(self, audio: FloatAudio) -> float: ...


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    input_audio_seconds: float = 0.0
    output_tokens: int = 0


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text on 16 kHz float audio."""

    name: str
    sample_rate: int

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript: ...


# --------------------------------------------------------------------------- speech out


@dataclass(frozen=True)
class VoiceInfo:
    """An installed voice an engine can speak with."""

    id: str
    engine: str
    description: str = ""


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech; yields int16 chunks at ``sample_rate`` as soon as they exist."""

    name: str
    sample_rate: int

    def voices(self) -> list[VoiceInfo]: ...

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[PcmAudio]: ...


# --------------------------------------------------------------------------- images in


@dataclass(frozen=True)
class RecognizedText:
    """One line of text read from an image, with the recogniser's confidence (0..1)."""

    text: str
    confidence: float


@dataclass(frozen=True)
class ImageLabel:
    """One class a classifier assigned to the whole image, with its probability (0..1)."""

    label: str
    probability: float


@dataclass(frozen=True)
class ImageAnalysis:
    """What a describer recognised in one image, and the text a language model reads for it.

    ``text`` says plainly what was recognised and what was not, so a text-only model does not
    invent details; ``image_tokens`` is what the image is billed as (OpenAI's image rule).
    """

    text: str
    image_tokens: int
    ocr: tuple[RecognizedText, ...] = ()
    labels: tuple[ImageLabel, ...] = ()
    seconds: float = 0.0


@runtime_checkable
class VisionDescriber(Protocol):
    """Turns an image into text a language model can read (OCR, labels, or a full caption)."""

    name: str

    def describe(
        self,
        image: bytes | PILImage,
        *,
        question_hint: str | None = None,
        detail: Literal["auto", "low", "high"] = "auto",
    ) -> ImageAnalysis:
        """Analyse ``image`` (encoded bytes or a decoded Pillow image); ``question_hint`` is
        the user's text next to it, which a describer may use to focus."""
        ...
