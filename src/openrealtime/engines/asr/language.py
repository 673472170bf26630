"""Which language a session's speech is transcribed in.

Whisper guesses the language from the audio, and on a second or two of telephone speech the
guess is unreliable ("Hello?" came back as Korean, Arabic and Chinese). A session therefore
keeps one language and transcribes in it; it switches only when detection is confident on a
long enough utterance, so a caller who really speaks another language is still followed.

* :class:`LanguageTracker` is the per-session state: the client's explicit language
  (``audio.input.transcription.language``) wins; otherwise the tracked language, starting
  from ``OPENREALTIME_ASR_LANGUAGE`` (``auto``: undecided).
* :class:`LanguagePolicy` is the tracker's rule frozen for one transcription pass. It is
  plain data, so it can travel to an engine in another process; the engine runs language
  detection on the encoder output it computes anyway and calls :meth:`LanguagePolicy.choose`
  before decoding, so a switch costs no second decode.
* :func:`keep_script` drops words written in a script the language does not use: whatever
  the decoder does, a transcript never comes out in the wrong script.

The rule was measured with ``bench/telephone_asr.py --detection`` (Whisper base; the shared
real speech band-limited and G.711-coded at 8 kHz, as whole clips and as 1-, 2- and 4-word
cuts; espeak-ng speech in eight other languages through the same telephone chain). Detecting
per utterance put 11 of 91 real English utterances in another language, all of them under
0.5 s of speech (Arabic, Hindi, Urdu, Japanese, ...), at most at p = 0.44; from 0.75 s on,
English was always detected, at p >= 0.77 (>= 0.998 from 2 s). Synthetic foreign speech is
harder: over the phone Whisper base often misjudged it with high confidence on short turns
(German at 1.4 s as Thai, p = 0.97) and found the right language at p 0.5-0.96 from 2 s. So a
switch needs p >= 0.5 on >= 2 s of speech: no real English utterance would have switched, and
Italian, German, Spanish and French callers were followed. Latin is never a switch target (it
is what Whisper answers for Portuguese over a phone line, p up to 0.88).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from openrealtime.engines.base import FloatAudio

__all__ = [
    "AUTO",
    "DEFAULT_SWITCH_PROBABILITY",
    "DEFAULT_SWITCH_SECONDS",
    "LanguageDetection",
    "LanguagePolicy",
    "LanguageTracker",
    "keep_script",
    "normalise_language",
    "speech_seconds",
    "wrong_script",
]

AUTO = "auto"
DEFAULT_SWITCH_PROBABILITY = 0.5
"""Change the session's language (or decide it, in an ``auto`` session) only for a detection
at least this sure ..."""
DEFAULT_SWITCH_SECONDS = 2.0
"""... on at least this much speech (measured, see the module doc)."""
NOT_SPOKEN_ON_CALLS = frozenset({"la", "sa"})
"""Whisper languages nobody calls in (Latin, Sanskrit): false detections, never switch targets."""

# Scripts besides Latin that Whisper's languages are written in (Latin is always allowed:
# names, brands and acronyms appear in Latin letters in every language).
_SCRIPTS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("zh", "yue"), frozenset({"CJK"})),
    "ja": frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    "ko": frozenset({"HANGUL", "CJK"}),
    **dict.fromkeys(("ar", "fa", "ur", "ps", "sd", "ug"), frozenset({"ARABIC"})),
    **dict.fromkeys(
        ("ru", "uk", "be", "bg", "mk", "sr", "kk", "mn", "tg", "ba", "tt"), frozenset({"CYRILLIC"})
    ),
    "el": frozenset({"GREEK"}),
    **dict.fromkeys(("he", "yi"), frozenset({"HEBREW"})),
    **dict.fromkeys(("hi", "mr", "ne", "sa"), frozenset({"DEVANAGARI"})),
    **dict.fromkeys(("bn", "as"), frozenset({"BENGALI"})),
    "ta": frozenset({"TAMIL"}),
    "te": frozenset({"TELUGU"}),
    "kn": frozenset({"KANNADA"}),
    "ml": frozenset({"MALAYALAM"}),
    "gu": frozenset({"GUJARATI"}),
    "pa": frozenset({"GURMUKHI"}),
    "th": frozenset({"THAI"}),
    "lo": frozenset({"LAO"}),
    "my": frozenset({"MYANMAR"}),
    "km": frozenset({"KHMER"}),
    "si": frozenset({"SINHALA"}),
    "ka": frozenset({"GEORGIAN"}),
    "hy": frozenset({"ARMENIAN"}),
    "am": frozenset({"ETHIOPIC"}),
    "bo": frozenset({"TIBETAN"}),
}
_SCRIPT_ALIASES = {"HALFWIDTH": "KATAKANA", "FULLWIDTH": "LATIN", "IDEOGRAPHIC": "CJK"}


def normalise_language(value: str | None) -> str | None:
    """``"EN"``/``"en-US"`` → ``"en"``; ``None``, ``""`` and ``"auto"`` → ``None`` (undecided)."""
    if value is None:
        return None
    code = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return None if not code or code == AUTO else code


def _script(char: str) -> str | None:
    """The script of a letter (``LATIN``, ``CJK``, ``HANGUL``, ...); None for anything else."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if not name:
        return None
    word = name.split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(word, word)


def _allowed(language: str) -> frozenset[str]:
    return _SCRIPTS.get(language, frozenset()) | {"LATIN"}


def wrong_script(text: str, language: str | None) -> bool:
    """Whether ``text`` has a letter in a script ``language`` is not written in."""
    if language is None:
        return False
    allowed = _allowed(language)
    return any((s := _script(c)) is not None and s not in allowed for c in text)


def keep_script(text: str, language: str | None) -> str:
    """``text`` without the words that contain letters of a script foreign to ``language``."""
    if not wrong_script(text, language):
        return text
    assert language is not None
    allowed = _allowed(language)
    words = [w for w in text.split() if all((s := _script(c)) is None or s in allowed for c in w)]
    kept = " ".join(words)
    return kept if any(c.isalnum() for c in kept) else ""


def speech_seconds(audio: FloatAudio, sample_rate: int = 16_000) -> float:
    """Seconds of 20 ms frames loud enough to be speech: within 30 dB of the loudest frame
    and 10 dB above the line's noise (its quietest tenth of frames).

    The length that counts for a switch: the turn's audio also holds the VAD's padding and
    the silence that ended it.
    """
    frame = sample_rate // 50
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = samples.size // frame
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1))
    threshold = max(0.004, 0.03 * float(rms.max()), 3.0 * float(np.percentile(rms, 10)))
    return float(np.count_nonzero(rms > threshold)) / 50


@dataclass(frozen=True)
class LanguageDetection:
    """Language probabilities of one utterance (most likely first) and its speech length."""

    probabilities: tuple[tuple[str, float], ...]
    speech_seconds: float

    @classmethod
    def of(cls, probabilities: Sequence[tuple[str, float]], speech_seconds: float) -> LanguageDetection:
        """From ``(language, probability)`` pairs; Whisper's ``<|en|>`` tokens are accepted."""
        cleaned = [(code.strip("<|>"), float(p)) for code, p in probabilities]
        cleaned.sort(key=lambda pair: pair[1], reverse=True)
        return cls(tuple(cleaned), speech_seconds)

    @property
    def language(self) -> str | None:
        """The most likely language that a caller could speak (see ``NOT_SPOKEN_ON_CALLS``)."""
        top = self._top()
        return top[0] if top is not None else None

    @property
    def probability(self) -> float:
        top = self._top()
        return top[1] if top is not None else 0.0

    def _top(self) -> tuple[str, float] | None:
        return next(((c, p) for c, p in self.probabilities if c not in NOT_SPOKEN_ON_CALLS), None)


@dataclass(frozen=True)
class LanguageChoice:
    """What a pass decodes in, and whether that is a confident detection (a switch or a
    first decision), which is what moves the session's language."""

    language: str
    confident: bool


@dataclass(frozen=True)
class LanguagePolicy:
    """How one pass picks its language from a detection; plain data (see the module doc).

    ``explicit``: the client's language, used as is. ``current``: the session's language, or
    None while undecided. ``fallback``: used while undecided and detection is unsure. A
    detection moves the language (switches it, or decides it) when it is at least
    ``switch_probability`` sure on at least ``switch_seconds`` of speech.
    """

    current: str | None = "en"
    explicit: str | None = None
    fallback: str = "en"
    switch_probability: float = DEFAULT_SWITCH_PROBABILITY
    switch_seconds: float = DEFAULT_SWITCH_SECONDS

    @classmethod
    def fixed(cls, language: str) -> LanguagePolicy:
        return cls(current=language, explicit=language, fallback=language)

    @property
    def needs_detection(self) -> bool:
        """False when the language is fixed (the client set it): no detection is run."""
        return self.explicit is None

    @property
    def without_detection(self) -> str:
        """The language for an engine that cannot detect."""
        return self.explicit or self.current or self.fallback

    def choose(self, detection: LanguageDetection | None) -> LanguageChoice:
        if self.explicit is not None:
            return LanguageChoice(self.explicit, False)
        top = detection.language if detection is not None else None
        if detection is None or top is None:
            return LanguageChoice(self.without_detection, False)
        if top == self.current:
            return LanguageChoice(self.current, False)
        sure = (
            detection.probability >= self.switch_probability
            and detection.speech_seconds >= self.switch_seconds
        )
        return LanguageChoice(top, True) if sure else LanguageChoice(self.without_detection, False)


@dataclass
class LanguageTracker:
    """A session's transcription language (``language``), moved only by confident detections.

    ``initial`` comes from ``OPENREALTIME_ASR_LANGUAGE`` (``auto``/None: undecided).
    :meth:`policy` gives the rule for the next pass; :meth:`observe` takes the detection of
    each final transcript and applies the same rule, so the session follows what the passes
    decoded. :attr:`language` is what the answer side reads as the caller's language.
    """

    initial: str | None = "en"
    fallback: str = "en"
    switch_probability: float = DEFAULT_SWITCH_PROBABILITY
    switch_seconds: float = DEFAULT_SWITCH_SECONDS
    explicit: str | None = None
    """The client's ``transcription.language`` (set on every turn; None when unset)."""
    tracked: str | None = field(init=False, default=None)
    switches: list[tuple[str | None, str]] = field(init=False, default_factory=list)
    """Every change of the tracked language, (from, to), for logs and tests."""

    def __post_init__(self) -> None:
        self.initial = normalise_language(self.initial)
        self.fallback = normalise_language(self.fallback) or "en"
        self.tracked = self.initial

    @classmethod
    def from_setting(cls, value: str | None) -> LanguageTracker:
        """From ``OPENREALTIME_ASR_LANGUAGE``: a language code, or ``auto`` (undecided)."""
        return cls(initial=normalise_language(value))

    @property
    def language(self) -> str:
        """The language the caller is heard in now (explicit > tracked > fallback)."""
        return self.explicit or self.tracked or self.fallback

    @property
    def decided(self) -> bool:
        return self.explicit is not None or self.tracked is not None

    def set_explicit(self, language: str | None) -> None:
        self.explicit = normalise_language(language)

    def policy(self) -> LanguagePolicy:
        if self.explicit is not None:
            return LanguagePolicy.fixed(self.explicit)
        return LanguagePolicy(
            current=self.tracked,
            fallback=self.fallback,
            switch_probability=self.switch_probability,
            switch_seconds=self.switch_seconds,
        )

    def observe(self, detection: LanguageDetection | None) -> str | None:
        """Update from a final transcript's detection; the new language if it changed."""
        if self.explicit is not None or detection is None:
            return None
        choice = self.policy().choose(detection)
        if not choice.confident or choice.language == self.tracked:
            return None
        self.switches.append((self.tracked, choice.language))
        self.tracked = choice.language
        return choice.language
