"""Semantic end of turn: what is known at a pause, and whether its silence is enough.

Each pause of a ``semantic_vad`` turn gathers evidence that the turn is over
(:class:`~openrealtime.engines.turn.end_of_turn.TurnEvidence`): smart-turn's answer to the
segmenter's ``EndOfTurnRequested``, the completeness of the pause's transcript and the prosody
at the end of speech, reported by the runtime as they arrive (``EndOfTurnPredicted``). Every
frame of silence, and every answer, asks
:class:`~openrealtime.engines.turn.end_of_turn.EndOfTurnPolicy` how much silence this evidence
needs; the turn ends once the silence since the end of speech reaches it. Until the runtime
says otherwise the pause's transcript counts as pending, so the turn waits for it (the
response needs that transcript anyway: waiting for it costs no voice-to-voice time). Answers
to a request made before the caller resumed belong to an earlier pause and are ignored.

Pure and deterministic, like the segmenter that owns it (core/turns.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..engines.turn.end_of_turn import EndOfTurnPolicy, TurnEvidence

__all__ = ["PauseEvidence", "TurnEvidence"]


@dataclass
class PauseEvidence:
    """The evidence of the current pause of one turn."""

    policy: EndOfTurnPolicy
    evidence: TurnEvidence = field(default_factory=TurnEvidence)
    text_pending: bool = True
    first_request: int = 0
    """Answers to requests older than this belong to an earlier pause."""

    def start(self, next_request_id: int) -> None:
        """A new pause begins; the next request the segmenter makes is its first."""
        self.evidence = TurnEvidence()
        self.text_pending = True
        self.first_request = next_request_id

    def belongs(self, request_id: int) -> bool:
        return request_id >= self.first_request

    def merge(
        self,
        *,
        smart_turn: float | None = None,
        text: float | None = None,
        prosody: float | None = None,
        text_pending: bool | None = None,
    ) -> None:
        """Add what arrived (``None``: nothing new of that kind)."""
        values = {
            name: value
            for name, value in (("smart_turn", smart_turn), ("text", text), ("prosody", prosody))
            if value is not None
        }
        if values:
            self.evidence = replace(self.evidence, **values)
        if text_pending is not None:
            self.text_pending = text_pending

    def ends(self, silence_ms: float) -> bool:
        """Whether ``silence_ms`` since the end of speech ends the turn, on what is known."""
        return self.policy.should_end(silence_ms, self.evidence, text_pending=self.text_pending)

    @property
    def probability(self) -> float:
        return self.policy.probability(self.evidence)
