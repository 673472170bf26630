"""Content safety in the speech path (``safety/``): what the runtime checks before speaking.

Model output: the response's speech cuts the model text into clauses; with moderation on, the
cut goes through the ``ModeratedOutput`` screen instead, so each clause is judged before it is
spoken, and a blocked clause ends the response (``incomplete``, ``content_filter``) with
nothing of it or after it said. Caller turns: a transcript is judged before the model reads it;
a blocked turn reaches the model as an empty transcript and is answered with the short refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.commands import StartResponse
from ..core.events import GenerationFinished, TextGenerated
from ..engines.base import CancelToken
from ..engines.tts.chunker import ClauseChunker
from ..safety import ModeratedOutput, Moderation

if TYPE_CHECKING:
    from .responding import ResponseHost

__all__ = ["ScreenedClauses", "refuse"]


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
