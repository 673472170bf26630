"""End-of-turn policy, text completeness rules, prosody and the backchannel classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openrealtime.engines.turn.backchannel import (
    BackchannelConfig,
    Verdict,
    classify,
    transcript_words,
    without_repeats,
)
from openrealtime.engines.turn.completeness import RuleCompleteness, TextCompleteness, normalise
from openrealtime.engines.turn.end_of_turn import (
    EAGERNESS_BUDGETS,
    Eagerness,
    EndOfTurnPolicy,
    EvidenceWeights,
    SilenceBudget,
    TurnEvidence,
    combine,
)
from openrealtime.engines.turn.prosody import end_probability, prosody_at_end

# --------------------------------------------------------------------------- policy


def test_combine_is_monotone_and_uses_the_prior_without_evidence() -> None:
    weights = EvidenceWeights(prior=0.4)
    assert combine(TurnEvidence(), weights) == 0.4
    low = combine(TurnEvidence(smart_turn=0.2, text=0.3), weights)
    high = combine(TurnEvidence(smart_turn=0.8, text=0.3), weights)
    assert low < high
    assert combine(TurnEvidence(smart_turn=0.9, text=0.9)) > combine(TurnEvidence(smart_turn=0.9))
    # clipping: no single source vetoes
    assert 0.0 < combine(TurnEvidence(smart_turn=0.0, text=1.0)) < 1.0


def test_evidence_must_be_probabilities() -> None:
    with pytest.raises(ValueError):
        TurnEvidence(smart_turn=1.5)
    with pytest.raises(ValueError):
        TurnEvidence(text=math.nan)


def test_budget_grows_with_uncertainty() -> None:
    budget = SilenceBudget(min_ms=200, max_ms=2200)
    assert budget.wait_ms(1.0) == 200
    assert budget.wait_ms(0.0) == 2200
    assert budget.wait_ms(0.5) == pytest.approx(1200)
    with pytest.raises(ValueError):
        SilenceBudget(min_ms=500, max_ms=100)


def test_eagerness_keeps_its_meaning() -> None:
    evidence = TurnEvidence(smart_turn=0.5, text=0.5)
    waits = {e: EndOfTurnPolicy(e).required_silence_ms(evidence) for e in ("low", "medium", "high")}
    assert waits["low"] > waits["medium"] > waits["high"]
    assert EndOfTurnPolicy("auto").budget == EAGERNESS_BUDGETS["medium"]
    with pytest.raises(ValueError):
        EndOfTurnPolicy("eager")  # type: ignore[arg-type]


def test_a_clear_end_is_quick_and_a_clear_pause_is_patient() -> None:
    policy = EndOfTurnPolicy("auto")
    done = TurnEvidence(smart_turn=0.95, text=0.85, prosody=0.7)
    unsure = TurnEvidence(smart_turn=0.5, text=0.45)
    midway = TurnEvidence(smart_turn=0.1, text=0.08, prosody=0.4)
    assert policy.required_silence_ms(done) <= 1050
    assert (
        policy.required_silence_ms(done)
        < policy.required_silence_ms(unsure)
        < policy.required_silence_ms(midway)
    )
    assert policy.required_silence_ms(midway) > 900  # a 0.9 s mid-sentence pause does not end the turn
    assert not policy.should_end(900, midway)
    assert policy.should_end(policy.budget.max_ms, midway)


@pytest.mark.parametrize("eagerness", ["auto", "medium", "low"])
def test_no_evidence_ends_a_turn_inside_a_pause_under_a_second(eagerness: Eagerness) -> None:
    """A mid-sentence pause can read as finished ("He was not." with smart-turn sure): below
    ``high`` no certainty may end the turn within 0.9 s of silence, with a frame to spare."""
    policy = EndOfTurnPolicy(eagerness)
    sure = TurnEvidence(smart_turn=0.99, text=0.99, prosody=0.99)
    assert policy.probability(sure) > 0.95
    assert not policy.should_end(900 + 64, sure)
    assert policy.should_end(policy.budget.max_ms, sure)
    assert EndOfTurnPolicy("high").should_end(400, sure)  # high stays eager


def test_the_transcript_is_awaited_up_to_a_limit() -> None:
    policy = EndOfTurnPolicy("high", text_wait_ms=1000)
    sure = TurnEvidence(smart_turn=0.99, prosody=0.9)
    assert not policy.should_end(700, sure, text_pending=True)
    assert policy.should_end(1000, sure, text_pending=True)
    assert policy.should_end(700, sure, text_pending=False)


# --------------------------------------------------------------------------- text


def test_rule_completeness() -> None:
    rules = RuleCompleteness()
    assert isinstance(rules, TextCompleteness)
    assert rules.probability("") is None
    assert rules.probability("  ...") is None
    finished = rules.probability("He might even have been made amiable himself.")
    assert finished is not None and finished >= 0.6
    assert rules.probability("Seven of") == pytest.approx(0.08)
    assert rules.probability("I want a table for the") == pytest.approx(0.08)
    assert rules.probability("He might even...") == pytest.approx(0.2)
    # an auxiliary ends a sentence only with end punctuation
    assert (rules.probability("than he was.") or 0) > 0.5
    assert rules.probability("than he was") == pytest.approx(0.08)
    assert (rules.probability("What is the time?") or 0) > (rules.probability("go forward ten") or 1)
    assert normalise("Go  forward, ten METERS!") == "go forward ten meters"


# --------------------------------------------------------------------------- prosody


def glide(f0: float, f1: float, seconds: float = 1.0, fade_db: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    freq = np.linspace(f0, f1, t.size)
    phase = 2 * np.pi * np.cumsum(freq) / 16000
    gain = 10 ** (np.linspace(0, fade_db, t.size) / 20)
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.2 * gain * wave).astype(np.float32)


def test_prosody_sees_falling_and_rising_pitch() -> None:
    falling = prosody_at_end(glide(140, 95, fade_db=-12))
    rising = prosody_at_end(glide(110, 160))
    assert falling.pitch_end_st is not None and falling.pitch_end_st < -1
    assert rising.pitch_end_st is not None and rising.pitch_end_st > 1
    assert falling.energy_end_db < rising.energy_end_db
    p_fall, p_rise = end_probability(falling), end_probability(rising)
    assert p_fall is not None and p_rise is not None and p_fall > p_rise


def test_prosody_without_voice_says_nothing() -> None:
    noise = (np.random.default_rng(1).standard_normal(16000) * 0.05).astype(np.float32)
    assert end_probability(prosody_at_end(noise)) is None
    assert prosody_at_end(np.zeros(100, dtype=np.float32)).voiced_tail_windows == 0


# --------------------------------------------------------------------------- backchannels


def test_backchannels_do_not_interrupt() -> None:
    for text in ("Mhm.", "Mm-hmm", "okay", "Yeah, okay.", "I see.", "Got it", "uh-huh", ""):
        assert classify(400, speech_ended=True, transcript=text) is Verdict.BACKCHANNEL, text
    # short speech waits for the transcript of all of it, however long its pass takes
    assert classify(250, speech_ended=True, transcript=None) is Verdict.UNDECIDED


def test_repeats_and_decoding_loops_count_once() -> None:
    loop = "Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay."
    assert without_repeats(transcript_words(loop)) == ["okay"]
    pairs = "Yeah. Right. Yeah. Right. Yeah. Right. Yeah. Yeah. Yeah. Yeah. Yeah."
    assert without_repeats(transcript_words(pairs)) == ["yeah", "right"]
    assert classify(500, speech_ended=True, transcript=loop) is Verdict.BACKCHANNEL
    assert classify(500, speech_ended=True, transcript=pairs) is Verdict.BACKCHANNEL
    assert classify(500, speech_ended=True, transcript="yeah yeah yeah") is Verdict.BACKCHANNEL
    # a word of the turn's own, repeated or not, still interrupts; so do four different words
    assert classify(500, speech_ended=True, transcript="no no no no") is Verdict.INTERRUPTION
    assert classify(500, speech_ended=True, transcript="okay wait okay wait") is Verdict.INTERRUPTION
    assert without_repeats(["okay", "so", "i", "see", "okay", "so"]) == [
        "okay",
        "so",
        "i",
        "see",
        "okay",
        "so",
    ]


def test_words_or_length_make_an_interruption() -> None:
    # a transcript is read once the speech ended: a pass over part of it is not its words
    assert classify(300, speech_ended=False, transcript="wait") is Verdict.UNDECIDED
    assert classify(300, speech_ended=True, transcript="wait") is Verdict.INTERRUPTION
    assert classify(400, speech_ended=True, transcript="five") is Verdict.INTERRUPTION
    assert classify(600, speech_ended=True, transcript="yeah okay sure right") is Verdict.INTERRUPTION
    assert classify(1000, speech_ended=False, transcript=None) is Verdict.INTERRUPTION
    assert classify(999, speech_ended=False, transcript="yeah") is Verdict.UNDECIDED
    config = BackchannelConfig(max_speech_ms=500)
    assert classify(520, speech_ended=True, transcript="okay", config=config) is Verdict.INTERRUPTION
    assert transcript_words("Mm-hmm. OK!") == ["mm-hmm", "ok"]
    with pytest.raises(ValueError):
        BackchannelConfig(max_words=0)
