"""Checking text before it is spoken: verdicts, and the streaming screen for model output.

The speech path cuts the model's streaming text into clauses (``ClauseChunker``) and speaks
each as soon as it is complete. ``OutputScreen`` sits exactly there: fed the text deltas, it
hands out the same clauses, each to be judged before it is spoken, and turns each verdict into
a ``Decision``: speak the clause, speak its redaction, or stop before it (``block``: nothing of
it or after it is spoken, and the response ends ``incomplete`` with reason ``content_filter``).

Each clause is judged together with the text before it (``context``), so a phrase that
straddles a clause boundary is still caught, in the clause where it ends. A phrase still
unfinished at the end of a clause cannot be judged before that clause is spoken; rules should
therefore name whole phrases, the way they are said.

Pure and synchronous: no I/O, no clock. How a verdict is reached (rules here, or an endpoint
over HTTP) is the ``Moderator``'s business (``safety/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..engines.tts.chunker import ClauseChunker
from .rules import Action, Direction, RuleSet, redact

__all__ = ["Clause", "Decision", "OutputScreen", "RulesJudge", "Verdict", "screen_text"]

CONTEXT_CHARS = 200


@dataclass(frozen=True)
class Verdict:
    """What a moderator says of one text: ``text`` is what may be used (the text itself, its
    redaction, or ``""`` when blocked); ``rules`` names what matched (rule ids or endpoint
    categories, never the text); ``error`` marks a verdict reached because the check failed."""

    action: Action
    text: str
    rules: tuple[str, ...] = ()
    error: bool = False

    @classmethod
    def passed(cls, text: str) -> Verdict:
        return cls("pass", text)


class RulesJudge:
    """Verdicts from a rules file: any ``block`` match blocks, else ``redact`` matches redact."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    def __call__(self, text: str, direction: Direction, context: str = "") -> Verdict:
        found = [m for m in self.rules.matches(context + text, direction) if m.end > len(context)]
        if not found:
            return Verdict.passed(text)
        ids = tuple(dict.fromkeys(m.rule.id for m in found))
        blocking = tuple(dict.fromkeys(m.rule.id for m in found if m.rule.action == "block"))
        if blocking:
            return Verdict("block", "", blocking)
        return Verdict("redact", redact(text, found, offset=len(context)), ids)


@dataclass(frozen=True)
class Clause:
    """A clause of model output waiting for its verdict; ``context`` is the output before it."""

    index: int
    text: str
    context: str


@dataclass(frozen=True)
class Decision:
    """What to do with one clause: ``text`` is what to speak and show (``""`` when blocked)."""

    clause: Clause
    action: Action
    text: str
    rules: tuple[str, ...] = ()
    error: bool = False

    @property
    def spoken(self) -> bool:
        return self.action != "block" and bool(self.text.strip())


class OutputScreen:
    """The clauses of one response's output text, each settled before it may be spoken.

    ``push(delta)`` / ``flush()`` return the clauses completed so far (as the chunker would
    cut them); ``settle(clause, verdict)`` must then be called for each, in order. Once a
    clause is blocked the screen is ``blocked``: later clauses are never handed out.
    """

    def __init__(self, chunker: ClauseChunker | None = None, *, context_chars: int = CONTEXT_CHARS) -> None:
        self.chunker = chunker or ClauseChunker()
        self.context_chars = context_chars
        self.blocked: Decision | None = None
        self._said = ""  # model text so far (judged, whatever was spoken of it)
        self._count = 0

    def push(self, delta: str) -> list[Clause]:
        if self.blocked is not None:
            return []
        return self._clauses(self.chunker.push(delta))

    def flush(self) -> list[Clause]:
        if self.blocked is not None:
            self.chunker.reset()
            return []
        return self._clauses(self.chunker.flush())

    def _clauses(self, pieces: list[str]) -> list[Clause]:
        clauses = []
        for piece in pieces:
            context = self._said[-self.context_chars :]
            clauses.append(Clause(self._count, piece, context + " " if context else ""))
            self._said = f"{self._said} {piece}" if self._said else piece
            self._count += 1
        return clauses

    def settle(self, clause: Clause, verdict: Verdict) -> Decision:
        if self.blocked is not None:
            return Decision(clause, "block", "")  # after the cut: dropped, not counted again
        if verdict.action == "block":
            self.blocked = Decision(clause, "block", "", verdict.rules, verdict.error)
            self.chunker.reset()
            return self.blocked
        return Decision(clause, verdict.action, verdict.text, verdict.rules, verdict.error)


def screen_text(
    deltas: list[str],
    judge: Callable[[str, Direction, str], Verdict],
    chunker: ClauseChunker | None = None,
) -> list[Decision]:
    """Screen a whole stream of deltas synchronously (rules; tests and tools)."""
    screen = OutputScreen(chunker)
    decisions: list[Decision] = []
    for delta in [*deltas, None]:
        clauses = screen.flush() if delta is None else screen.push(delta)
        for clause in clauses:
            if screen.blocked is not None:
                break  # clauses handed out together with the blocked one are never spoken
            decisions.append(screen.settle(clause, judge(clause.text, "output", clause.context)))
    return decisions
