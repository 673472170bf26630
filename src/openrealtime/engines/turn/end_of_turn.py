"""When has the caller finished? Evidence in, a silence budget out.

``semantic_vad`` used to ask smart-turn once the caller had been quiet 250 ms and, whenever it
said "not yet", wait for a flat eagerness timeout (8/4/2 s). smart-turn alone is unsure on
real speech (AUC ~0.65 here), so most turns waited the full timeout. This module instead
turns every piece of evidence available at a pause into one probability that the turn is
over, and the probability into how much silence to wait for:

* **Evidence** (:class:`TurnEvidence`), each optional, each a probability that the turn is
  over: smart-turn's score on the turn's audio; the partial transcript's completeness
  (:mod:`openrealtime.engines.turn.completeness`: a rule classifier over the last words, or
  the chat model's end-of-utterance probability); the prosody at the end of speech
  (:mod:`openrealtime.engines.turn.prosody`). Evidence arrives at different times (smart-turn
  ~0.2 s into the pause, the transcript when the end-of-speech pass is done); the policy is
  asked again whenever some arrives.
* **Combination** (:class:`EvidenceWeights`): a logistic combination, ``p = sigmoid(bias +
  sum(w_i * logit(p_i)))`` over the evidence present, each ``p_i`` clipped to [0.02, 0.98]
  so no single source can veto. With no evidence, ``prior``.
* **Silence budget** (:class:`SilenceBudget`): the turn ends once the silence since the end
  of speech reaches ``min_ms + (max_ms - min_ms) * (1 - p) ** shape``: a clear end waits
  little more than ``min_ms``, an unsure one longer, a clear "not yet" up to ``max_ms``.
  ``eagerness`` keeps its meaning: ``low`` waits longer at every level of certainty,
  ``high`` cuts sooner; ``auto`` is ``medium``.
* **The transcript first.** While the end-of-speech transcript is being made the turn waits
  for it (at most ``text_wait_ms``): the answer cannot start before that transcript anyway,
  so this costs no voice-to-voice time and lets the text count in every decision.

The operating points (:data:`EAGERNESS_BUDGETS`, :data:`DEFAULT_WEIGHTS`) were chosen on the
labelled real-speech set of ``bench/end_of_turn.py`` (see its results); the module is pure and
deterministic: no model, no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_WEIGHTS",
    "EAGERNESS_BUDGETS",
    "Eagerness",
    "EndOfTurnPolicy",
    "EvidenceWeights",
    "SilenceBudget",
    "TurnEvidence",
    "combine",
]

Eagerness = Literal["low", "medium", "high", "auto"]

_CLIP = 0.02


@dataclass(frozen=True)
class TurnEvidence:
    """What is known at a pause; every field a probability that the turn is over, or None."""

    smart_turn: float | None = None
    text: float | None = None
    prosody: float | None = None

    def __post_init__(self) -> None:
        for name in ("smart_turn", "text", "prosody"):
            value = getattr(self, name)
            if (value is not None and not (0.0 <= value <= 1.0)) or (value is not None and math.isnan(value)):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class EvidenceWeights:
    """Weights of each source's log-odds, a bias, and the probability with no evidence."""

    smart_turn: float = 1.0
    text: float = 1.0
    prosody: float = 0.5
    bias: float = 0.0
    prior: float = 0.5


DEFAULT_WEIGHTS = EvidenceWeights(smart_turn=0.5, text=1.5, prosody=0.0, bias=0.0, prior=0.5)
"""Chosen on bench/end_of_turn.py: the transcript separates ends from pauses best (AUC ~0.65 for
the rules, ~0.67 for Qwen 0.5B), smart-turn less well on this speech (~0.59), and the prosody
of read speech not at all (~0.51), so it carries no weight by default."""


def _logit(p: float) -> float:
    q = min(max(p, _CLIP), 1.0 - _CLIP)
    return math.log(q / (1.0 - q))


def combine(evidence: TurnEvidence, weights: EvidenceWeights = DEFAULT_WEIGHTS) -> float:
    """The probability that the turn is over, from whatever evidence is present."""
    terms = [
        (weights.smart_turn, evidence.smart_turn),
        (weights.text, evidence.text),
        (weights.prosody, evidence.prosody),
    ]
    present = [(w, p) for w, p in terms if p is not None and w != 0.0]
    if not present:
        return weights.prior
    z = weights.bias + sum(w * _logit(p) for w, p in present)
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class SilenceBudget:
    """Silence to wait for, from the probability that the turn is over."""

    min_ms: float
    max_ms: float
    shape: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_ms <= self.max_ms:
            raise ValueError("need 0 <= min_ms <= max_ms")
        if self.shape <= 0:
            raise ValueError("shape must be positive")

    def wait_ms(self, probability: float) -> float:
        p = min(max(probability, 0.0), 1.0)
        return float(self.min_ms + (self.max_ms - self.min_ms) * (1.0 - p) ** self.shape)


EAGERNESS_BUDGETS: dict[Eagerness, SilenceBudget] = {
    "low": SilenceBudget(min_ms=1500, max_ms=5000, shape=2.0),
    "medium": SilenceBudget(min_ms=1000, max_ms=2600, shape=2.0),
    "auto": SilenceBudget(min_ms=1000, max_ms=2600, shape=2.0),
    "high": SilenceBudget(min_ms=200, max_ms=1400, shape=1.0),
}
"""Eagerness → budget; chosen on bench/end_of_turn.py's curve (README, Turn-taking).

``auto``, ``medium`` and ``low`` never end a turn inside a pause shorter than a second,
whatever the evidence: a pause in the middle of a sentence often reads as finished (Whisper
writes a full stop after "He was not" or "Unless to be rather cold" when the clip stops
there; smart-turn is sure of both), so no level of certainty from this evidence may cut one.
Above that floor the budget grows with uncertainty (``shape`` 2: a clear end waits little
more than the floor). ``high`` keeps a 200 ms floor: it answers sooner and may cut such a
pause."""


class EndOfTurnPolicy:
    """Combine the evidence at a pause and say how long to wait (pure, deterministic)."""

    def __init__(
        self,
        eagerness: Eagerness = "auto",
        *,
        weights: EvidenceWeights = DEFAULT_WEIGHTS,
        budget: SilenceBudget | None = None,
        text_wait_ms: float = 1500.0,
    ) -> None:
        if text_wait_ms < 0:
            raise ValueError("text_wait_ms must be non-negative")
        if eagerness not in EAGERNESS_BUDGETS:
            raise ValueError(f"eagerness must be one of {sorted(EAGERNESS_BUDGETS)}, got {eagerness!r}")
        self.eagerness = eagerness
        self.weights = weights
        self.budget = budget or EAGERNESS_BUDGETS[eagerness]
        self.text_wait_ms = text_wait_ms

    def probability(self, evidence: TurnEvidence) -> float:
        return combine(evidence, self.weights)

    def required_silence_ms(self, evidence: TurnEvidence, *, text_pending: bool = False) -> float:
        """Silence after the end of speech at which the turn ends, given this evidence.

        ``text_pending``: the end-of-speech transcript is still being made. The turn then
        waits for it, up to ``text_wait_ms``: the response needs that transcript anyway, so
        ending sooner would not answer sooner, and the text is the best evidence there is.
        """
        need = self.budget.wait_ms(self.probability(evidence))
        return max(need, self.text_wait_ms) if text_pending else need

    def should_end(self, silence_ms: float, evidence: TurnEvidence, *, text_pending: bool = False) -> bool:
        """Whether ``silence_ms`` of silence ends the turn, given the evidence so far."""
        return silence_ms >= self.required_silence_ms(evidence, text_pending=text_pending) - 1e-6
