"""Content safety in the answer path (``safety/``): what the runtime checks before speaking or
showing model text.

Model output: the response's speech cuts the model text into clauses; with moderation on, the
cut goes through the ``ModeratedOutput`` screen instead, so each clause is judged before it is
spoken, and a blocked clause ends the response (``incomplete``, ``content_filter``) with
nothing of it or after it said. A text-only response is screened the same way before its
deltas are sent (``ScreenedText``). Caller turns: a transcript is judged before the model reads it;
a blocked turn reaches the model as an empty transcript and is answered with the short refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.commands import StartResponse
from ..core.events import GenerationFinished, TextGenerated
from ..engines.base import CancelToken
from ..engines.tts.chunker import ClauseChunker
from ..safety import ModeratedOutput, Moderation
from ..safety.screen import Decision

if TYPE_CHECKING:
    from .responding import ResponseHost

__all__ = ["ScreenedClauses", "ScreenedText", "refuse"]


class ScreenedClauses:
    """The clauses of one response's text to speak: the chunker's pieces, screened by the
    moderation when there is one."""

    def __init__(self, chunker: ClauseChunker, moderation: Moderation | None, session_id: str) -> None:
        self.chunker = chunker
        self.screen: ModeratedOutput | None = (
            moderation.output(chunker, session_id=session_id) if moderation is not None else None
        )

    @property
    def blocked(self) -> bool:
        """A clause was blocked: nothing more of this response may be spoken."""
        return self.screen is not None and self.screen.blocked is not None

    async def push(self, text: str) -> list[str]:
        if self.screen is None:
            return self.chunker.push(text)
        return [d.text for d in await self.screen.push(text) if d.spoken]

    async def flush(self) -> list[str]:
        if self.screen is None:
            return self.chunker.flush()
        return [d.text for d in await self.screen.flush() if d.spoken]


class ScreenedText:
    """A text-only response's deltas. Without moderation each passes at once; with it, the
    text is held back clause by clause until judged, like speech, and released with the
    model's own spacing and line breaks (the screen's clauses are trimmed slices of it)."""

    def __init__(self, moderation: Moderation | None, session_id: str) -> None:
        self.screen: ModeratedOutput | None = (
            moderation.output(ClauseChunker(min_first_words=3), session_id=session_id)
            if moderation is not None
            else None
        )
        self._held = ""
        """Model text received and not yet released."""

    @property
    def blocked(self) -> bool:
        """A clause was blocked: nothing more of this response may be shown."""
        return self.screen is not None and self.screen.blocked is not None

    async def push(self, delta: str) -> str:
        if self.screen is None:
            return delta
        self._held += delta
        return self._release(await self.screen.push(delta))

    async def flush(self) -> str:
        if self.screen is None:
            return ""
        shown = self._release(await self.screen.flush())
        if not self.blocked:
            shown, self._held = shown + self._held, ""
        return shown

    def _release(self, decisions: list[Decision]) -> str:
        shown: list[str] = []
        for decision in decisions:
            if decision.action == "block":
                self._held = ""
                break
            clause = decision.clause.text
            at = self._held.find(clause)
            if at < 0:  # not a slice of what is held: show the verdict's text alone
                shown.append((" " if shown else "") + decision.text)
                continue
            shown.append(self._held[:at] + decision.text)
            self._held = self._held[at + len(clause) :]
        return "".join(shown)


async def refuse(host: ResponseHost, command: StartResponse, token: CancelToken, text: str) -> None:
    """Answer a blocked caller turn with ``text`` (spoken when the response is audio) instead of
    asking the model."""
    from .responding import speak_text

    rid = command.response_id
    if token.cancelled or not host.is_live(rid):
        return
    if command.modality == "audio":
        await speak_text(host, command, token, text)
    else:
        host.report(TextGenerated(rid, text))
    if not token.cancelled:
        host.report(GenerationFinished(rid, "stop", 0, 0, 0))
