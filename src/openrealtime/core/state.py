"""The session's phases, the one table of legal transitions, and the state the parts share.

Four things in a session move through phases (h11's ``_state.py`` is the model):

* a **response**: ``CREATED`` → ``GENERATING`` ⇄ ``AWAITING_TOOL`` (an MCP call it made is
  running; model output meanwhile is dropped) → ``DONE``;
* the **input turn**: ``LISTENING`` ⇄ ``SPEAKING`` (between ``speech_started`` and the commit
  that ends the turn);
* each **MCP tool listing**: ``LISTING`` → ``LISTED`` | ``FAILED``;
* each **MCP approval request**: ``PENDING`` → ``APPROVED`` | ``DENIED`` (the client may change
  its mind) → ``RUN`` (an approved call ran; it cannot be decided again).

The session itself is ``OPEN`` until a fatal error ``CLOSED`` it. Every change of phase goes
through :func:`transition`, which looks the pair up in ``TRANSITIONS`` and raises
:class:`IllegalTransition` on anything else: a bug, never a client error (client errors are
refused before a transition is attempted).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.ids import new_id
from ..protocol.session import RealtimeSession, TranscriptionSession
from .commands import CloseConnection, Command
from .conversation import Conversation
from .events import Output


class SessionPhase(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class SessionTrigger(enum.Enum):
    FATAL_ERROR = "fatal_error"


class ResponsePhase(enum.Enum):
    CREATED = "created"
    """``response.created`` was sent; nothing produced yet."""
    GENERATING = "generating"
    AWAITING_TOOL = "awaiting_tool"
    """An MCP call of the response is running; the model continues once all have reported."""
    DONE = "done"
    """``response.done`` was sent (any status); results for it are stale."""


class ResponseTrigger(enum.Enum):
    OUTPUT = "output"
    """Text, speech or a function call arrived."""
    TOOL_STARTED = "tool_started"
    TOOLS_SETTLED = "tools_settled"
    """The last running MCP call of the response reported."""
    FINISHED = "finished"
    """The engines finished (completed, incomplete or failed)."""
    CANCELLED = "cancelled"


class TurnPhase(enum.Enum):
    LISTENING = "listening"
    SPEAKING = "speaking"
    """``speech_started`` was sent; the turn's user item id is reserved."""


class TurnTrigger(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    """The segmenter ended the turn: the buffer up to there is committed."""
    COMMITTED = "committed"
    """``input_audio_buffer.commit`` (or the idle timeout) committed the buffer."""
    CLEARED = "cleared"
    DETECTION_OFF = "detection_off"
    """``turn_detection`` became null: no segmenter is left to end the turn."""


class ListingPhase(enum.Enum):
    LISTING = "listing"
    LISTED = "listed"
    FAILED = "failed"


class ListingTrigger(enum.Enum):
    LISTED = "listed"
    FAILED = "failed"


class ApprovalPhase(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    RUN = "run"


class ApprovalTrigger(enum.Enum):
    APPROVE = "approve"
    DENY = "deny"
    RUN = "run"
    """The next default-conversation response ran the approved call."""


Phase = SessionPhase | ResponsePhase | TurnPhase | ListingPhase | ApprovalPhase
Trigger = SessionTrigger | ResponseTrigger | TurnTrigger | ListingTrigger | ApprovalTrigger

_R, _RT = ResponsePhase, ResponseTrigger
_T, _TT = TurnPhase, TurnTrigger
_A, _AT = ApprovalPhase, ApprovalTrigger

TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (SessionPhase.OPEN, SessionTrigger.FATAL_ERROR): SessionPhase.CLOSED,
    # a response
    (_R.CREATED, _RT.OUTPUT): _R.GENERATING,
    (_R.CREATED, _RT.TOOL_STARTED): _R.AWAITING_TOOL,  # approved MCP calls run first
    (_R.CREATED, _RT.FINISHED): _R.DONE,
    (_R.CREATED, _RT.CANCELLED): _R.DONE,
    (_R.GENERATING, _RT.OUTPUT): _R.GENERATING,
    (_R.GENERATING, _RT.TOOL_STARTED): _R.AWAITING_TOOL,
    (_R.GENERATING, _RT.FINISHED): _R.DONE,
    (_R.GENERATING, _RT.CANCELLED): _R.DONE,
    (_R.AWAITING_TOOL, _RT.TOOL_STARTED): _R.AWAITING_TOOL,
    (_R.AWAITING_TOOL, _RT.TOOLS_SETTLED): _R.GENERATING,
    # the input turn
    (_T.LISTENING, _TT.SPEECH_STARTED): _T.SPEAKING,
    (_T.SPEAKING, _TT.SPEECH_STOPPED): _T.LISTENING,
    (_T.LISTENING, _TT.COMMITTED): _T.LISTENING,
    (_T.SPEAKING, _TT.COMMITTED): _T.LISTENING,
    (_T.LISTENING, _TT.CLEARED): _T.LISTENING,
    (_T.SPEAKING, _TT.CLEARED): _T.LISTENING,
    (_T.LISTENING, _TT.DETECTION_OFF): _T.LISTENING,
    (_T.SPEAKING, _TT.DETECTION_OFF): _T.LISTENING,
    # an MCP tool listing
    (ListingPhase.LISTING, ListingTrigger.LISTED): ListingPhase.LISTED,
    (ListingPhase.LISTING, ListingTrigger.FAILED): ListingPhase.FAILED,
    # an MCP approval request
    (_A.PENDING, _AT.APPROVE): _A.APPROVED,
    (_A.PENDING, _AT.DENY): _A.DENIED,
    (_A.APPROVED, _AT.APPROVE): _A.APPROVED,
    (_A.APPROVED, _AT.DENY): _A.DENIED,
    (_A.DENIED, _AT.APPROVE): _A.APPROVED,
    (_A.DENIED, _AT.DENY): _A.DENIED,
    (_A.APPROVED, _AT.RUN): _A.RUN,
}
"""(phase, trigger) → the next phase; any pair not listed is a bug."""


class IllegalTransition(RuntimeError):
    """A (phase, trigger) pair the table does not allow."""

    def __init__(self, phase: Phase, trigger: Trigger) -> None:
        super().__init__(f"no transition from {phase} on {trigger}")
        self.phase = phase
        self.trigger = trigger


P = TypeVar("P", SessionPhase, ResponsePhase, TurnPhase, ListingPhase, ApprovalPhase)


def transition(phase: P, trigger: Trigger) -> P:
    """The phase after ``trigger`` in ``phase``; raises :class:`IllegalTransition`."""
    following = TRANSITIONS.get((phase, trigger))
    if following is None:
        raise IllegalTransition(phase, trigger)
    return cast(P, following)


# --------------------------------------------------------------------------- shared state


@dataclass
class Limits:
    """Per-session limits (configurable; the defaults follow the real service)."""

    max_input_buffer_ms: int = 15 * 60 * 1000
    max_context_tokens: int = 32_768
    max_items: int = 10_000
    max_session_minutes: float = 60
    rate_limit_tokens: int = 15_000_000


IdSource = Callable[[str], str]
"""``prefix`` → a new id (``item_…``, ``resp_…``, ``event_…``); injected for determinism."""


@dataclass
class SessionState:
    """What every part of the core reads and writes: the session's configuration and its
    conversation, the ids, and the outbox of events (to send) and commands (to carry out)."""

    session: RealtimeSession | TranscriptionSession
    count_tokens: Callable[[str], int]
    limits: Limits
    ids: IdSource = new_id
    llm_sees_images: bool = False
    """The LLM is given images themselves rather than their analysis."""
    conversation: Conversation = field(default_factory=Conversation)
    caller_language: str | None = None
    """The language the runtime hears the caller speak (``CallerLanguageChanged``)."""
    phase: SessionPhase = SessionPhase.OPEN
    events: list[Output] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.phase is SessionPhase.CLOSED

    @property
    def realtime(self) -> RealtimeSession | None:
        """The session when it is a realtime (not a transcription) session."""
        return self.session if isinstance(self.session, RealtimeSession) else None

    def new_id(self, prefix: str) -> str:
        return self.ids(prefix)

    def emit(self, event: Output) -> None:
        """Queue an event to send; server events get their ``event_id`` from ``ids``."""
        if isinstance(event, se.ServerEvent):
            event.event_id = self.ids("event_")
        self.events.append(event)

    def command(self, command: Command) -> None:
        self.commands.append(command)

    def error(self, err: RealtimeError) -> None:
        """Report ``err`` as an ``error`` event; a fatal one closes the session."""
        self.emit(se.ErrorEvent(error=err.as_dict()))
        if err.fatal and not self.closed:
            self.phase = transition(self.phase, SessionTrigger.FATAL_ERROR)
            code = 4000 if err.code == "beta_api_shape_disabled" else 1008
            self.command(CloseConnection(code=code, reason=err.code or "error"))

    def session_wire(self) -> dict[str, Any]:
        return self.session.model_dump(mode="json", exclude_none=False)
