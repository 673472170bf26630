"""Under ``semantic_vad``, is speech during the answer a backchannel or an interruption?

Callers say "mhm", "okay", "yeah", "right", cough or laugh while the assistant speaks; none of
that is a bid for the turn, and cancelling the answer for it is one of the most common
complaints about voice agents. ``server_vad`` keeps OpenAI's semantics (any speech
interrupts); under ``semantic_vad`` the runtime holds ``speech_started`` for speech that
begins while the answer plays and asks :func:`classify` as the speech goes on:

1. **Long speech is a turn.** Speech that lasts ``max_speech_ms`` is an interruption
   whatever the words (nobody says "mhm" for a second), decided on the audio's own clock
   while it goes on.
2. **Short speech is judged by its words, once it ended**: the transcript of exactly that
   speech (one Whisper pass over the VAD's onset to its end, never a partial pass: those
   cover whatever audio had arrived when the pass started, half a word or the answer's echo
   after the speech, and so depend on how busy the machine is). A word outside
   :data:`BACKCHANNEL_WORDS`, or more than ``max_words`` words (repeats counted once), is an
   interruption ("wait", "no", "what about ..."); only backchannel words, or no words at all
   (a cough, a laugh, a breath), a backchannel.
3. Otherwise (speech going on, or its transcript not yet in): not decided yet, however long
   the pass takes, so the verdict is the same on a busy machine and on an idle one; only when
   it is given does an interruption stop the answer (where the server plays the answer, on
   WebRTC and SIP, it is paused meanwhile: runtime/playback.py).

A real interruption is recognised at the latest ``max_speech_ms`` after its onset, a short
one when its pass is done (measured in ``bench/backchannel.py``). Pure and deterministic: no
clock, no model.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "BACKCHANNEL_PROMPT",
    "BACKCHANNEL_WORDS",
    "BackchannelConfig",
    "Verdict",
    "classify",
    "transcript_words",
    "without_repeats",
]

BACKCHANNEL_PROMPT = "Mhm. Uh-huh. Okay. Yeah. Right. I see."
"""Whisper's initial prompt for the short-speech pass: without it Whisper spells a "mhm" as
whatever word it resembles ("image him")."""

BACKCHANNEL_WORDS = frozenset(
    [
        "mhm",
        "mm",
        "mmm",
        "mm-hmm",
        "mmhmm",
        "hmm",
        "hm",
        "uh-huh",
        "uhhuh",
        "uh",
        "huh",
        "um",
        "ah",
        "oh",
        "aha",
        "ooh",
        "wow",
        "ok",
        "okay",
        "k",
        "kay",
        "yeah",
        "yea",
        "yes",
        "yep",
        "yup",
        "ya",
        "right",
        "sure",
        "alright",
        "all",
        "i",
        "see",
        "got",
        "it",
        "cool",
        "nice",
        "great",
        "good",
        "fine",
        "true",
        "exactly",
        "indeed",
        "totally",
        "absolutely",
        "gotcha",
        "thanks",
        "thank",
        "you",
        "so",
    ]
)
"""Words a listener says without taking the turn ("all right", "I see", "got it", "thank
you" are made of them)."""

MAX_LOOP_WORDS = 3
"""The longest phrase :func:`without_repeats` recognises as said over and over."""

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def transcript_words(text: str) -> list[str]:
    """Lower-case words of a transcript ("Mm-hmm." -> ["mm-hmm"])."""
    return _WORD.findall(text.lower())


def without_repeats(words: list[str]) -> list[str]:
    """The words with repetition taken out: a word said again at once counts once, and a
    phrase of up to :data:`MAX_LOOP_WORDS` words said over and over counts once ("okay okay
    okay", "yeah right yeah right yeah"). Whisper, prompted with backchannels, loops like this
    in the silence after a short word; a caller saying "yeah yeah yeah" means one "yeah"."""
    once = [word for i, word in enumerate(words) if i == 0 or word != words[i - 1]]
    for period in range(1, MAX_LOOP_WORDS + 1):
        if len(once) > period and all(once[i] == once[i % period] for i in range(len(once))):
            return once[:period]
    return once


class Verdict(enum.Enum):
    BACKCHANNEL = "backchannel"
    INTERRUPTION = "interruption"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class BackchannelConfig:
    max_speech_ms: float = 1000.0
    max_words: int = 3

    def __post_init__(self) -> None:
        if self.max_speech_ms <= 0 or self.max_words < 1:
            raise ValueError("max_speech_ms and max_words must be positive")


def classify(
    speech_ms: float,
    *,
    speech_ended: bool,
    transcript: str | None,
    config: BackchannelConfig | None = None,
) -> Verdict:
    """Decide about speech heard during the answer.

    ``speech_ms``: its length so far (onset to now, or to its end); ``speech_ended``: the VAD
    saw it end; ``transcript``: the transcript of the whole speech (onset to end), ``None``
    while it has not come; it is not read before the speech ended.
    """
    cfg = config or BackchannelConfig()
    if speech_ms >= cfg.max_speech_ms:
        return Verdict.INTERRUPTION
    if not speech_ended or transcript is None:
        return Verdict.UNDECIDED
    words = without_repeats(transcript_words(transcript))
    if len(words) > cfg.max_words or any(word not in BACKCHANNEL_WORDS for word in words):
        return Verdict.INTERRUPTION
    return Verdict.BACKCHANNEL
