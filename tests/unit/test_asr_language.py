"""The per-session transcription language: policy, tracker, script guard (no models)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from openrealtime.engines.asr.language import (
    DEFAULT_SWITCH_PROBABILITY,
    DEFAULT_SWITCH_SECONDS,
    LanguageDetection,
    LanguagePolicy,
    LanguageTracker,
    keep_script,
    normalise_language,
    speech_seconds,
    wrong_script,
)
from openrealtime.engines.asr.streaming import StreamingTranscription, transcribe_in
from openrealtime.engines.base import CancelToken, FloatAudio, Transcript

LONG = DEFAULT_SWITCH_SECONDS + 1.0
SHORT = 1.0


def detected(language: str, p: float, seconds: float) -> LanguageDetection:
    rest = (1.0 - p) / 2
    return LanguageDetection.of([(f"<|{language}|>", p), ("<|zh|>", rest), ("<|ar|>", rest)], seconds)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("en", "en"), ("EN", "en"), ("en-US", "en"), ("pt_BR", "pt"), ("auto", None), ("", None), (None, None)],
)
def test_language_codes_are_normalised(value: str | None, expected: str | None) -> None:
    assert normalise_language(value) == expected


@pytest.mark.parametrize(
    ("text", "language", "wrong"),
    [
        ("안녕하세요?", "en", True),
        ("حلو", "en", True),
        ("你好", "en", True),
        ("Hello?", "en", False),
        ("Hola, señor, ¿qué tal?", "es", False),
        ("Привет, OK", "ru", False),
        ("Привет", "en", True),
        ("こんにちは 世界 OK", "ja", False),
        ("안녕하세요", "ko", False),
        ("123 + 4 = 127!", "en", False),
        ("Grüße", "de", False),
    ],
)
def test_wrong_script(text: str, language: str, wrong: bool) -> None:
    assert wrong_script(text, language) is wrong


def test_keep_script_drops_foreign_words_only() -> None:
    assert keep_script("Hello 你好 there", "en") == "Hello there"
    assert keep_script("안녕하세요?", "en") == ""
    assert keep_script("Hola señor", "es") == "Hola señor"
    assert keep_script("Hello", None) == "Hello"


def test_speech_seconds_counts_loud_frames_only() -> None:
    sr = 16_000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    audio = np.concatenate([np.zeros(sr, np.float32), tone, np.zeros(2 * sr, np.float32)])
    assert speech_seconds(audio) == pytest.approx(1.0, abs=0.05)
    assert speech_seconds(np.zeros(10, np.float32)) == 0.0


def test_a_session_stays_in_its_language_on_short_or_unsure_detections() -> None:
    policy = LanguagePolicy(current="en")
    assert policy.choose(detected("ko", 0.99, SHORT)).language == "en"  # "Hello?" heard as Korean
    assert policy.choose(detected("ar", DEFAULT_SWITCH_PROBABILITY - 0.05, LONG)).language == "en"
    assert policy.choose(None).language == "en"
    choice = policy.choose(detected("en", 0.4, SHORT))
    assert (choice.language, choice.confident) == ("en", False)


def test_a_confident_long_detection_switches() -> None:
    choice = LanguagePolicy(current="en").choose(detected("es", 0.97, LONG))
    assert (choice.language, choice.confident) == ("es", True)


def test_an_explicit_language_is_always_used() -> None:
    policy = LanguagePolicy.fixed("de")
    assert not policy.needs_detection
    assert policy.choose(detected("es", 0.99, 10.0)).language == "de"
    assert policy.without_detection == "de"


def test_undecided_sessions_fall_back_until_a_confident_detection() -> None:
    policy = LanguagePolicy(current=None, fallback="en")
    assert policy.choose(detected("ko", 0.6, SHORT)).language == "en"
    choice = policy.choose(detected("fr", 0.95, 2.0))
    assert (choice.language, choice.confident) == ("fr", True)


def test_tracker_follows_a_caller_who_really_speaks_another_language() -> None:
    tracker = LanguageTracker.from_setting("en")
    assert tracker.language == "en" and tracker.decided
    assert tracker.observe(detected("zh", 0.99, SHORT)) is None  # one short unsure turn: no
    assert tracker.language == "en"
    assert tracker.observe(detected("es", 0.98, LONG)) == "es"
    assert tracker.language == "es"
    assert tracker.policy().current == "es"
    assert tracker.observe(detected("en", 0.6, SHORT)) is None  # a short "OK" does not undo it
    assert tracker.observe(detected("en", 0.97, LONG)) == "en"
    assert tracker.switches == [("en", "es"), ("es", "en")]


def test_tracker_auto_starts_undecided() -> None:
    tracker = LanguageTracker.from_setting("auto")
    assert not tracker.decided
    assert tracker.language == "en"  # what an undecided session is transcribed and answered in
    assert tracker.policy().current is None
    assert tracker.observe(detected("de", 0.95, 2.0)) == "de"
    assert tracker.decided and tracker.language == "de"


def test_explicit_language_wins_and_freezes_tracking() -> None:
    tracker = LanguageTracker.from_setting("en")
    tracker.set_explicit("fr-FR")
    assert tracker.language == "fr"
    assert tracker.policy() == LanguagePolicy.fixed("fr")
    assert tracker.observe(detected("es", 0.99, LONG)) is None
    tracker.set_explicit(None)
    assert tracker.language == "en"


# --------------------------------------------------------------------------- engine plumbing


@dataclass
class PolicyTranscriber:
    """Decodes in whatever the policy chooses from a scripted detection; records what it got."""

    detection: LanguageDetection
    text_by_language: dict[str, str]
    name: str = "fake"
    sample_rate: int = 16_000
    supports_language_policy: bool = True

    def __post_init__(self) -> None:
        self.calls: list[tuple[str | None, LanguagePolicy | None]] = []

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        policy: LanguagePolicy | None = None,
    ) -> Transcript:
        self.calls.append((language, policy))
        chosen = policy.choose(self.detection).language if policy is not None else language or "en"
        return Transcript(self.text_by_language.get(chosen, ""), chosen, len(audio) / 16_000, 1)

    def transcribe_segments(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        prefix: str | None = None,
        cancel: CancelToken | None = None,
        policy: LanguagePolicy | None = None,
    ) -> Timed:
        transcript = self.transcribe(audio, language=language, policy=policy)
        return Timed(transcript, (), self.detection if policy is not None else None)


@dataclass(frozen=True)
class Timed:
    transcript: Transcript
    segments: tuple[()]
    detection: LanguageDetection | None


@dataclass
class PlainTranscriber:
    name: str = "plain"
    sample_rate: int = 16_000

    def __post_init__(self) -> None:
        self.languages: list[str | None] = []

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        self.languages.append(language)
        return Transcript("Hello 안녕 there", language, 1.0, 3)


def test_transcribe_in_passes_the_policy_to_engines_that_take_it() -> None:
    fake = PolicyTranscriber(detected("es", 0.99, LONG), {"es": "hola amigo", "en": "hello friend"})
    policy = LanguageTracker.from_setting("en").policy()
    transcript, _, _ = transcribe_in(fake, np.zeros(16_000, np.float32), policy)
    assert transcript.text == "hola amigo" and transcript.language == "es"
    assert fake.calls[0][1] is policy


def test_other_engines_get_the_session_language_and_are_kept_in_script() -> None:
    plain = PlainTranscriber()
    transcript, _, detection = transcribe_in(
        plain, np.zeros(16_000, np.float32), LanguagePolicy(current="en")
    )
    assert plain.languages == ["en"]
    assert transcript.text == "Hello there" and detection is None


def test_streaming_final_carries_the_detection() -> None:
    detection = detected("de", 0.99, LONG)
    fake = PolicyTranscriber(detection, {"de": "guten tag", "en": "good day"})
    stream = StreamingTranscription(fake, language=LanguagePolicy(current="en"), silence_seconds=10.0)
    stream.feed((0.1 * np.sign(np.sin(np.arange(32_000)))).astype(np.float32))
    final = stream.finish()
    assert final.transcript.text == "guten tag"
    assert final.transcript.language == "de"
    assert final.detection == detection


def test_latin_is_never_a_switch_target() -> None:
    """Whisper hears Portuguese over the phone as Latin; the next language counts instead."""
    detection = LanguageDetection.of([("la", 0.8), ("pt", 0.15), ("en", 0.05)], LONG)
    assert detection.language == "pt"
    assert LanguagePolicy(current="en").choose(detection).language == "en"  # pt at 0.15: unsure


def test_the_setting_takes_a_code_or_auto() -> None:
    from pydantic import ValidationError

    from openrealtime.config import Settings

    assert Settings(asr_language="EN").asr_language == "en"
    assert Settings(asr_language="auto").asr_language == "auto"
    assert Settings().asr_language == "en"
    with pytest.raises(ValidationError):
        Settings(asr_language="english")
