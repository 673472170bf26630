"""Content safety: caller transcripts and model text checked before the text is spoken.

``build_moderation(settings)`` gives the server's ``Moderation`` (``None`` for
``moderation=none``). Per response, ``moderation.output(chunker)`` is the speech path's
streaming check (``push`` text deltas, get ``Decision``s clause by clause, before speaking
them); per caller turn, ``moderation.check_input(transcript)`` says whether the turn may go to
the model (``pass``/``redact``) or gets ``refusal`` instead (``block``). Every block and
redaction is counted (by direction and rule id, never the text) and logged without the text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from ..config import Settings
from ..engines.tts.chunker import ClauseChunker
from .endpoint import EndpointModerator
from .rules import Direction, RulesError, RuleSet, load_rules
from .screen import Clause, Decision, OutputScreen, RulesJudge, Verdict

__all__ = [
    "Decision",
    "EndpointModerator",
    "InputVerdict",
    "ModeratedOutput",
    "Moderation",
    "ModerationCounter",
    "Moderator",
    "RuleSet",
    "RulesError",
    "RulesModerator",
    "Verdict",
    "build_moderation",
]

log = logging.getLogger("openrealtime.safety")


class Moderator(Protocol):
    async def check(self, text: str, direction: Direction, context: str = "") -> Verdict:
        """The verdict on ``text`` (``context``: the text just before it, already judged)."""


class ModerationCounter(Protocol):
    """Where blocks and redactions are counted (``telemetry.metrics.ModerationMetrics``)."""

    def count(self, direction: Direction, action: str, rules: tuple[str, ...], error: bool) -> None: ...


class RulesModerator:
    """A ``Moderator`` on a rules file (no I/O: the verdict is immediate)."""

    def __init__(self, rules: RuleSet) -> None:
        self.judge = RulesJudge(rules)

    async def check(self, text: str, direction: Direction, context: str = "") -> Verdict:
        return self.judge(text, direction, context)


@dataclass(frozen=True)
class InputVerdict:
    """A caller turn's verdict: ``text`` is the transcript to give the model (redacted when
    ``redact``); on ``block`` the model gets nothing and ``refusal`` is said instead."""

    action: str
    text: str
    refusal: str | None
    rules: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        return self.action == "block"


class Moderation:
    """The server's content-safety checks (one per server, shared by every session)."""

    def __init__(
        self, moderator: Moderator, *, refusal: str, counter: ModerationCounter | None = None
    ) -> None:
        self.moderator = moderator
        self.refusal = refusal
        self.counter = counter

    def output(self, chunker: ClauseChunker | None = None, *, session_id: str = "") -> ModeratedOutput:
        """The streaming check of one response's text (give it the speech path's chunker)."""
        return ModeratedOutput(self, OutputScreen(chunker), session_id)

    async def check_input(self, transcript: str, *, session_id: str = "") -> InputVerdict:
        verdict = await self.moderator.check(transcript, "input")
        self.report("input", verdict.action, verdict.rules, verdict.error, session_id)
        if verdict.action == "block":
            return InputVerdict("block", "", self.refusal, verdict.rules)
        return InputVerdict(verdict.action, verdict.text, None, verdict.rules)

    def report(
        self, direction: Direction, action: str, rules: tuple[str, ...], error: bool, session_id: str
    ) -> None:
        """Count and log a verdict (ids only: the text is never logged)."""
        if self.counter is not None:
            self.counter.count(direction, action, rules, error)
        if action != "pass":
            log.info(
                "moderation %s %s rules=%s session=%s",
                direction,
                action,
                ",".join(rules) or "-",
                session_id or "-",
            )

    async def close(self) -> None:
        close = getattr(self.moderator, "close", None)
        if close is not None:
            await close()


class ModeratedOutput:
    """One response's model text, checked clause by clause before it is spoken."""

    def __init__(self, moderation: Moderation, screen: OutputScreen, session_id: str) -> None:
        self.moderation = moderation
        self.screen = screen
        self.session_id = session_id

    @property
    def blocked(self) -> Decision | None:
        """The decision that cut the response (then end it ``incomplete``/``content_filter``)."""
        return self.screen.blocked

    async def push(self, delta: str) -> list[Decision]:
        return await self._settle(self.screen.push(delta))

    async def flush(self) -> list[Decision]:
        return await self._settle(self.screen.flush())

    async def _settle(self, clauses: list[Clause]) -> list[Decision]:
        decisions = []
        for clause in clauses:
            if self.screen.blocked is not None:
                decisions.append(self.screen.settle(clause, Verdict("block", "")))
                continue
            verdict = await self.moderation.moderator.check(clause.text, "output", clause.context)
            decision = self.screen.settle(clause, verdict)
            self.moderation.report("output", decision.action, decision.rules, decision.error, self.session_id)
            decisions.append(decision)
        return decisions


def build_moderation(settings: Settings, counter: ModerationCounter | None = None) -> Moderation | None:
    """The moderation the settings ask for; raises ``RulesError`` on a bad rules file."""
    moderator: Moderator
    if settings.moderation == "none":
        return None
    if settings.moderation == "rules":
        assert settings.moderation_rules is not None  # the settings validator ensures it
        moderator = RulesModerator(load_rules(settings.moderation_rules))
    else:
        assert settings.moderation_url is not None
        moderator = EndpointModerator(
            settings.moderation_url,
            api_key=settings.moderation_api_key,
            model=settings.moderation_model,
            timeout_s=settings.moderation_timeout_seconds,
            fail_closed=settings.moderation_fail_closed,
        )
    return Moderation(moderator, refusal=settings.moderation_refusal, counter=counter)
