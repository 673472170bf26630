"""What a guessed answer may be built on, and when it is the committed turn's answer.

Preemptive generation (runtime/speculation.py) starts the answer to a turn on its partial
transcript before the turn is committed. These pure functions decide what that guess reads
(the request a default response would send if the turn said ``text``) and whether, once the
turn is committed, the real response's request is the same up to how the caller's words were
written (case, punctuation, spacing): then the guess is the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..engines.base import ChatMessage, ChatRequest
from ..protocol.session import ServerVad
from .context import RequestOptions, request_for
from .turns import EAGERNESS_DEFAULTS

if TYPE_CHECKING:
    from .session import SessionCore

_NOT_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The words of ``text`` without case, punctuation or spacing differences."""
    return _SPACE.sub(" ", _NOT_WORD.sub(" ", text.casefold())).strip()


PAUSE_HEARD_MS = 150
"""How long the caller must pause before the transcription pass that may settle the turn's
text starts (``StreamingTranscription``'s ``silence_seconds``)."""
MIN_HEAD_START_MS = 200
"""The least time a guess should have before the turn ends for it to be worth starting."""


def silence_window_ms(core: SessionCore) -> int | None:
    """How long the caller's pause lasts before turn detection ends the turn: ``server_vad``'s
    ``silence_duration_ms``, ``semantic_vad``'s longest wait for its eagerness (it ends sooner
    only when the turn detector is sure); None without turn detection."""
    session = core.state.realtime
    detection = session.audio.input.turn_detection if session is not None else None
    if detection is None:
        return None
    if isinstance(detection, ServerVad):
        return detection.silence_duration_ms
    return EAGERNESS_DEFAULTS[detection.eagerness][0]


def worth_guessing(window_ms: int | None, pass_ms: float) -> bool:
    """Whether a guess can start early enough to help: the pause must outlast the wait for the
    settling pass (``PAUSE_HEARD_MS``), that pass (``pass_ms``, as measured) and a useful head
    start. Otherwise the turn ends before any guess exists, or just after one started, and
    the guess only takes CPU from the final transcript (measured at 300 ms: slower, 0 % hits)."""
    return window_ms is not None and window_ms >= PAUSE_HEARD_MS + pass_ms + MIN_HEAD_START_MS


@dataclass(frozen=True)
class GuessShape:
    """How a default response of the session would be spoken (compared at release)."""

    modality: str
    voice: str
    speed: float
    output_format: str


def guess_shape(core: SessionCore) -> GuessShape | None:
    """The shape of the response turn detection would create now, or None when it would
    create none (no automatic responses, a transcription session) or reads MCP tools (their
    listings and calls run in the runtime and are not guessed)."""
    session = core.state.realtime
    if session is None:
        return None
    detection = session.audio.input.turn_detection
    if detection is None or not getattr(detection, "create_response", False):
        return None
    if any(tool.type == "mcp" for tool in session.tools):
        return None
    voice = session.audio.output.voice
    return GuessShape(
        modality=session.output_modalities[0],
        voice=voice if isinstance(voice, str) else voice.id,
        speed=session.audio.output.speed,
        output_format=session.audio.output.format.type,
    )


def guess_request(core: SessionCore, text: str, *, turn_id: str | None = None) -> ChatRequest | None:
    """The request a default response would send if the turn being spoken said ``text``;
    ``turn_id``: that turn is already committed (an item whose transcript is not ready yet),
    so the conversation is read up to it."""
    session = core.state.realtime
    if session is None or not text.strip():
        return None
    before = core.state.conversation.items()
    if turn_id is not None:
        ids = [item.get("id") for item in before]
        before = before[: ids.index(turn_id)] if turn_id in ids else before
    items = [
        *before,
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    ]
    tools = [t.model_dump(mode="json") for t in session.tools]
    choice = session.tool_choice
    max_tokens = session.max_output_tokens
    options = RequestOptions(
        instructions=session.instructions,
        tools=tools,
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(mode="json"),
        max_output_tokens=None if max_tokens == "inf" else int(max_tokens),
        max_input_tokens=core.responses._max_input_tokens(session, max_tokens),
        truncate=session.truncation != "disabled",
    )
    model_tools, _ = core.mcp.tools_for_model(tools)
    return request_for(
        items, [], options, model_tools, core.state.count_tokens, language=core.responses.answer_language()
    )


def prefix_request(core: SessionCore) -> ChatRequest | None:
    """The part of every request of the session that comes first: instructions and tools."""
    request = guess_request(core, "prefill")
    if request is None:
        return None
    system = tuple(m for m in request.messages[:1] if m.role == "system")
    return ChatRequest(messages=system, tools=request.tools, tool_choice=request.tool_choice)


def _same_message(guess: ChatMessage, real: ChatMessage) -> bool:
    return (
        guess.role == real.role == "user"
        and not guess.images
        and not real.images
        and normalise(guess.content) == normalise(real.content)
    )


def same_request(guess: ChatRequest, real: ChatRequest) -> bool:
    """``real`` asks what ``guess`` asked: everything equal but the caller's last words, which
    may differ only in case, punctuation and spacing."""
    if (guess.tools, guess.tool_choice, guess.max_output_tokens, guess.temperature) != (
        real.tools,
        real.tool_choice,
        real.max_output_tokens,
        real.temperature,
    ):
        return False
    if len(guess.messages) != len(real.messages) or not guess.messages:
        return False
    if guess.messages[:-1] != real.messages[:-1]:
        return False
    return _same_message(guess.messages[-1], real.messages[-1])
