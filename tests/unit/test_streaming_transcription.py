"""StreamingTranscription logic with a scripted fake recogniser (no models).

The fake hears one word per 0.4 s of loud audio; a word whose audio is only partly there comes
out garbled, the way a real recogniser guesses at a cut-off word. Silence adds nothing.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from openrealtime.engines.asr.streaming import StreamingTranscription, common_prefix
from openrealtime.engines.asr.wer import corpus_wer, normalize, number_to_words, wer
from openrealtime.engines.base import CancelToken, FloatAudio, Transcriber, Transcript

SR = 16_000
WORD = int(0.4 * SR)
SCRIPT = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "near",
    "the",
    "river",
    "bank",
    "today",
]


_spoken = [0]  # samples of speech produced so far in the current test


@pytest.fixture(autouse=True)
def _new_speaker() -> None:
    _spoken[0] = 0


def speech(seconds: float) -> FloatAudio:
    """Loud noise whose level encodes which word of the script is being said."""
    n = int(seconds * SR)
    start = _spoken[0]
    _spoken[0] += n
    index = np.arange(start, start + n) // WORD
    signs = np.random.default_rng(start).choice([-1.0, 1.0], n)
    samples: FloatAudio = ((0.05 + 0.004 * index) * signs).astype(np.float32)
    return samples


def silence(seconds: float) -> FloatAudio:
    return np.zeros(int(seconds * SR), dtype=np.float32)


@dataclass(frozen=True)
class FakeSegment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class FakeTimed:
    transcript: Transcript
    segments: tuple[FakeSegment, ...]


@dataclass
class FakeTranscriber:
    """Words from the amount of loud audio; records every call."""

    script: list[str] = field(default_factory=lambda: list(SCRIPT))
    name: str = "fake"
    sample_rate: int = SR
    supports_prefix: bool = True
    delay: float = 0.0
    final_override: str | None = None
    calls: list[dict[str, object]] = field(default_factory=list)
    word_offset: int = 0

    def _words(self, audio: FloatAudio) -> list[str]:
        voiced = np.abs(audio[np.abs(audio) > 1e-3])
        words = []
        for start in range(0, voiced.size, WORD):
            block = voiced[start : start + WORD]
            word = self.script[min(len(self.script) - 1, round((float(block.mean()) - 0.05) / 0.004))]
            if block.size == WORD:
                words.append(word)
            elif block.size > WORD // 2:
                words.append(word[:2] + "~")
        return words

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        prefix: str | None = None,
    ) -> Transcript:
        self.calls.append({"seconds": audio.size / SR, "prompt": prompt, "prefix": prefix})
        if self.delay:
            time.sleep(self.delay)
        words = self._words(audio)
        if prefix is not None and self.final_override is None:
            assert words[: len(prefix.split())] == prefix.split()
        text = self.final_override if self.final_override is not None else " ".join(words)
        return Transcript(text, language or "en", audio.size / SR, len(text.split()))


@dataclass
class FakeSegmentTranscriber(FakeTranscriber):
    """Also returns timed segments: one per two words."""

    def transcribe_segments(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        prefix: str | None = None,
        cancel: CancelToken | None = None,
    ) -> FakeTimed:
        transcript = self.transcribe(audio, language=language, prompt=prompt, prefix=prefix)
        words = transcript.text.split()
        segments = tuple(
            FakeSegment(i * 0.4, min(len(words), i + 2) * 0.4, " ".join(words[i : i + 2]))
            for i in range(0, len(words), 2)
        )
        return FakeTimed(transcript, segments)


def feed_in_chunks(stream: StreamingTranscription, audio: FloatAudio, chunk_seconds: float = 0.1) -> None:
    step = int(chunk_seconds * SR)
    for start in range(0, audio.size, step):
        stream.feed(audio[start : start + step])


def test_fake_satisfies_protocol() -> None:
    assert isinstance(FakeTranscriber(), Transcriber)


def test_deltas_are_agreed_append_only_and_add_up_to_final() -> None:
    fake = FakeTranscriber()
    seen: list[str] = []
    stream = StreamingTranscription(fake, interval_seconds=0.8, on_delta=seen.append)
    feed_in_chunks(stream, speech(4.0))
    assert stream.passes >= 4
    assert seen == stream.deltas
    assert all("~" not in delta for delta in seen), "an unstable word was shown"
    shown = stream.text
    assert shown and SCRIPT[: len(shown.split())] == shown.split()
    final = stream.finish()
    assert final.deltas_match
    assert "".join(stream.deltas) == final.transcript.text == " ".join(SCRIPT[:10])
    assert final.transcript.input_audio_seconds == pytest.approx(4.0)
    assert final.transcript.output_tokens == 10


def test_no_delta_before_two_passes_agree() -> None:
    stream = StreamingTranscription(
        FakeTranscriber(), interval_seconds=0.8, min_agree_seconds=0.0, hold_last_word=False
    )
    feed_in_chunks(stream, speech(0.8))
    assert stream.passes == 1
    assert stream.deltas == []
    feed_in_chunks(stream, speech(0.8))
    assert stream.passes == 2
    assert stream.deltas == ["the quick"]
    assert stream.take_deltas() == ["the quick"]
    assert stream.take_deltas() == []


def test_early_passes_and_last_word_are_not_committed() -> None:
    stream = StreamingTranscription(FakeTranscriber(), interval_seconds=0.8, min_agree_seconds=1.5)
    feed_in_chunks(stream, speech(1.6))
    assert stream.passes == 2
    # passes at 0.8 s and 1.6 s agree on "the quick", but the first was too short to vouch
    assert stream.deltas == []
    feed_in_chunks(stream, speech(0.8))
    assert stream.deltas == ["the quick brown fox"]
    _spoken[0] = 0  # a new turn
    hold = StreamingTranscription(FakeTranscriber(), interval_seconds=0.8, silence_seconds=0.15)
    feed_in_chunks(hold, speech(2.4))
    feed_in_chunks(hold, silence(0.6))
    # the pass at 2.4 s heard all six words; only the 1.6 s/2.4 s agreement is shown
    assert hold.passes == 3
    assert hold.text == " ".join(SCRIPT[:4])
    final = hold.finish()
    assert final.delta == " jumps over" and final.reused


def test_pass_at_start_of_silence_becomes_the_final() -> None:
    fake = FakeTranscriber()
    stream = StreamingTranscription(fake, interval_seconds=10.0, silence_seconds=0.15)
    feed_in_chunks(stream, speech(2.0))
    assert stream.passes == 0
    feed_in_chunks(stream, silence(0.2))
    assert stream.passes == 1
    feed_in_chunks(stream, silence(0.4))
    assert stream.passes == 1, "silence alone must not trigger more passes"
    calls = len(fake.calls)
    final = stream.finish()
    assert final.reused and len(fake.calls) == calls
    assert final.transcript.text == " ".join(SCRIPT[:5])
    assert "".join(stream.deltas) == final.transcript.text


def test_final_pass_extends_shown_text_through_prefix() -> None:
    fake = FakeTranscriber()
    stream = StreamingTranscription(fake, interval_seconds=0.8, silence_seconds=5.0, final_prefix=True)
    feed_in_chunks(stream, speech(3.3))
    shown = stream.text
    assert shown
    final = stream.finish()
    assert not final.reused
    assert fake.calls[-1]["prefix"] == shown
    assert final.transcript.text.startswith(shown)
    assert "".join(stream.deltas) == final.transcript.text


def test_final_pass_is_unconstrained_by_default() -> None:
    fake = FakeTranscriber()
    stream = StreamingTranscription(fake, interval_seconds=0.8, silence_seconds=5.0)
    feed_in_chunks(stream, speech(3.3))
    assert stream.text
    final = stream.finish()
    assert fake.calls[-1]["prefix"] is None and fake.calls[-1]["seconds"] == pytest.approx(3.3)
    assert final.deltas_match
    assert "".join(stream.deltas) == final.transcript.text == " ".join(SCRIPT[:8])


def test_final_that_only_repunctuates_shown_words_keeps_them() -> None:
    fake = FakeTranscriber()
    stream = StreamingTranscription(fake, interval_seconds=0.8, silence_seconds=5.0)
    feed_in_chunks(stream, speech(3.3))
    assert stream.text == "the quick brown fox jumps over"
    fake.final_override = "The quick, brown fox jumps over the lazy dog."
    final = stream.finish()
    assert final.deltas_match
    assert final.transcript.text == "the quick brown fox jumps over the lazy dog."
    assert "".join(stream.deltas) == final.transcript.text


@pytest.mark.parametrize("final_prefix", [False, True])
def test_disagreeing_final_is_authoritative_without_correcting_delta(final_prefix: bool) -> None:
    fake = FakeTranscriber(supports_prefix=False)
    stream = StreamingTranscription(
        fake, interval_seconds=0.8, silence_seconds=5.0, final_prefix=final_prefix
    )
    feed_in_chunks(stream, speech(3.0))
    before = stream.deltas
    assert before
    fake.final_override = "something else entirely"
    final = stream.finish()
    assert fake.calls[-1]["prefix"] is None
    assert final.transcript.text == "something else entirely"
    assert not final.deltas_match and final.delta == ""
    assert stream.deltas == before


def test_busy_vetoes_periodic_passes_but_not_end_of_speech() -> None:
    stream = StreamingTranscription(FakeTranscriber(), interval_seconds=0.5, busy=lambda: True)
    feed_in_chunks(stream, speech(3.0))
    assert stream.passes == 0
    feed_in_chunks(stream, silence(0.3))
    assert stream.passes == 1
    assert stream.finish().reused


def test_executor_skips_while_a_pass_runs_and_finish_waits() -> None:
    fake = FakeTranscriber(delay=0.25)
    with ThreadPoolExecutor(1) as pool:
        stream = StreamingTranscription(fake, interval_seconds=0.2, executor=pool)
        started = time.perf_counter()
        feed_in_chunks(stream, speech(4.0))
        feed_in_chunks(stream, silence(0.3))
        assert time.perf_counter() - started < 0.2, "feed must not block on passes"
        final = stream.finish()
    assert final.transcript.text == " ".join(SCRIPT[:10])
    assert "".join(stream.deltas) == final.transcript.text
    assert final.passes == len(fake.calls) - (0 if final.reused else 1)
    assert final.passes < 20


@pytest.mark.parametrize("context_prompt", [False, True])
def test_long_turn_trims_audio(context_prompt: bool) -> None:
    fake = FakeSegmentTranscriber()
    stream = StreamingTranscription(
        fake,
        interval_seconds=0.4,
        trim_after_seconds=2.0,
        silence_seconds=5.0,
        context_prompt=context_prompt,
    )
    feed_in_chunks(stream, speech(5.2))
    assert stream.trimmed_seconds > 0
    assert max(float(str(call["seconds"])) for call in fake.calls[-3:]) < 5.0
    prompts = [call["prompt"] for call in fake.calls]
    if context_prompt:
        assert prompts[-1] and SCRIPT[: len(str(prompts[-1]).split())] == str(prompts[-1]).split()
    else:
        assert set(prompts) == {None}
    final = stream.finish()
    assert float(str(fake.calls[-1]["seconds"])) < 5.0
    assert final.transcript.text == " ".join(SCRIPT[:13])
    assert "".join(stream.deltas) == final.transcript.text


def test_cheap_model_for_deltas_and_better_model_for_the_final() -> None:
    cheap = FakeTranscriber()
    better = FakeTranscriber()
    stream = StreamingTranscription(cheap, final_transcriber=better, interval_seconds=0.8)
    feed_in_chunks(stream, speech(2.4))
    assert len(cheap.calls) == 3 and better.calls == []
    assert stream.text == " ".join(SCRIPT[:4])
    feed_in_chunks(stream, silence(0.3))
    assert len(better.calls) == 1 and len(cheap.calls) == 3
    final = stream.finish()
    assert final.reused and len(better.calls) == 1
    assert "".join(stream.deltas) == final.transcript.text == " ".join(SCRIPT[:6])


def test_stale_pass_is_cancelled_at_finish() -> None:
    gate = threading.Event()
    seen_cancelled: list[bool] = []

    @dataclass
    class Slow(FakeTranscriber):
        def transcribe(
            self,
            audio: FloatAudio,
            *,
            language: str | None = None,
            prompt: str | None = None,
            cancel: CancelToken | None = None,
            prefix: str | None = None,
        ) -> Transcript:
            if not self.calls:
                gate.wait(5)
                seen_cancelled.append(cancel is not None and cancel.cancelled)
            return super().transcribe(audio, language=language, prompt=prompt, cancel=cancel, prefix=prefix)

    slow = Slow()
    with ThreadPoolExecutor(1) as pool:
        stream = StreamingTranscription(slow, interval_seconds=0.8, silence_seconds=5.0, executor=pool)
        feed_in_chunks(stream, speech(2.0))
        threading.Timer(0.2, gate.set).start()
        final = stream.finish()
    assert seen_cancelled == [True]
    assert not final.reused
    assert final.transcript.text == " ".join(SCRIPT[:5])


def test_a_failing_pass_does_not_end_the_turn() -> None:
    @dataclass
    class Flaky(FakeTranscriber):
        def transcribe(
            self,
            audio: FloatAudio,
            *,
            language: str | None = None,
            prompt: str | None = None,
            cancel: CancelToken | None = None,
            prefix: str | None = None,
        ) -> Transcript:
            result = super().transcribe(audio, language=language, prompt=prompt, cancel=cancel, prefix=prefix)
            if len(self.calls) == 1:
                raise RuntimeError("engine hiccup")
            return result

    flaky = Flaky()
    stream = StreamingTranscription(flaky, interval_seconds=0.8)
    feed_in_chunks(stream, speech(2.4))
    assert len(flaky.calls) == 3 and stream.passes == 2
    assert stream.finish().transcript.text == " ".join(SCRIPT[:6])


def test_prompt_is_passed_to_every_pass() -> None:
    fake = FakeTranscriber(script=["alpha", *SCRIPT])
    stream = StreamingTranscription(fake, prompt="alpha", silence_seconds=5.0)
    feed_in_chunks(stream, speech(1.6))
    stream.finish()
    assert fake.calls and all(call["prompt"] == "alpha" for call in fake.calls)


class FakePartials:
    """An incremental decoder that hears the same words, one 0.4 s word at a time."""

    def __init__(self) -> None:
        self.samples = 0
        self.finished = False

    def feed(self, audio: FloatAudio) -> str | None:
        before = self.samples // (WORD // 2)
        self.samples += int(np.count_nonzero(np.abs(audio) > 1e-3))
        if self.samples // (WORD // 2) == before:
            return None  # no fresh hypothesis for this chunk
        return " ".join(SCRIPT[: self.samples // WORD])

    def finish(self) -> Transcript:
        self.finished = True
        return Transcript(" ".join(SCRIPT[: self.samples // WORD]))


def test_partials_decoder_gives_deltas_and_whisper_gives_final() -> None:
    fake = FakeTranscriber()
    partials = FakePartials()
    stream = StreamingTranscription(fake, partials=partials, silence_seconds=0.15)
    feed_in_chunks(stream, speech(2.0))
    assert fake.calls == [], "only the partial decoder runs while speaking"
    assert stream.text == " ".join(SCRIPT[:4])
    feed_in_chunks(stream, silence(0.3))
    assert len(fake.calls) == 1
    final = stream.finish()
    assert partials.finished and final.reused and final.deltas_match
    assert "".join(stream.deltas) == final.transcript.text == " ".join(SCRIPT[:5])


def test_cancel_releases_the_partials_decoder() -> None:
    partials = FakePartials()
    stream = StreamingTranscription(FakeTranscriber(), partials=partials)
    feed_in_chunks(stream, speech(1.0))
    stream.cancel()
    assert partials.finished
    stream.feed(speech(0.1))  # a late chunk after cancel is dropped
    assert stream.audio_seconds == pytest.approx(1.0)


def test_empty_and_misuse() -> None:
    stream = StreamingTranscription(FakeTranscriber())
    final = stream.finish()
    assert final.transcript.text == "" and stream.deltas == []
    with pytest.raises(RuntimeError):
        stream.feed(speech(0.1))
    with pytest.raises(RuntimeError):
        stream.finish()
    cancelled = StreamingTranscription(FakeTranscriber())
    cancelled.cancel()
    with pytest.raises(RuntimeError):
        cancelled.finish()


def test_feed_from_another_thread() -> None:
    stream = StreamingTranscription(FakeTranscriber())
    worker = threading.Thread(target=feed_in_chunks, args=(stream, speech(2.0)))
    worker.start()
    worker.join()
    assert stream.finish().transcript.text == " ".join(SCRIPT[:5])


def test_common_prefix() -> None:
    assert common_prefix(["a", "b", "c"], ["a", "b", "d"]) == 2
    assert common_prefix([], ["a"]) == 0


# --------------------------------------------------------------------------- WER scoring


def test_normalize_numbers_case_punctuation() -> None:
    assert normalize("Go forward, 10 meters!") == ["go", "forward", "ten", "meters"]
    assert normalize("He was not an ill-disposed young man.") == [
        "he",
        "was",
        "not",
        "an",
        "ill",
        "disposed",
        "young",
        "man",
    ]
    assert normalize("Mr. Dashwood's 21st birthday") == ["mister", "dashwoods", "twenty", "first", "birthday"]
    assert normalize("5, 5") == ["five", "five"]
    assert normalize("Convert $100 to euros") == ["convert", "one", "hundred", "dollars", "to", "euros"]
    assert number_to_words(100) == "one hundred"
    assert number_to_words(47) == "forty seven"
    assert number_to_words(0) == "zero"


def test_wer_counts_edits_and_pools() -> None:
    assert wer("go forward ten meters", "Go forward 10 meters.").errors == 0
    result = wer("ten of clubs", "10 of clothes")
    assert (result.errors, result.reference_words) == (1, 3)
    assert wer("a b c", "").errors == 3
    assert wer("a b", "a x b y").errors == 2
    assert corpus_wer([("a b c d", "a b c d"), ("e f", "e")]) == pytest.approx(1 / 6)


def test_settled_text_is_what_finish_would_return_until_speech_goes_on() -> None:
    stream = StreamingTranscription(FakeTranscriber(), interval_seconds=10.0, silence_seconds=0.15)
    feed_in_chunks(stream, speech(2.0))
    assert stream.settled_text() is None  # no pass has heard the pause yet
    feed_in_chunks(stream, silence(0.2))
    settled = stream.settled_text()
    assert settled == " ".join(SCRIPT[:5])
    feed_in_chunks(stream, speech(0.4))
    assert stream.settled_text() is None  # the caller went on: the pass missed a word
    feed_in_chunks(stream, silence(0.2))
    assert stream.settled_text() == " ".join(SCRIPT[:6])
    assert stream.finish().transcript.text == stream.text == " ".join(SCRIPT[:6])
    assert stream.settled_text() is None


def noise(seconds: float, level: float = 0.008) -> FloatAudio:
    """Background noise loud enough for the energy tracker to call it voice (above 6 % of the
    speech's peak and the 0.004 floor)."""
    signs = np.random.default_rng(7).choice([-1.0, 1.0], int(seconds * SR))
    samples: FloatAudio = (level * signs).astype(np.float32)
    return samples


def feed_marked(stream: StreamingTranscription, audio: FloatAudio, voiced: bool) -> None:
    """Feed in VAD frames (32 ms), each followed by the VAD's verdict, as the runtime does."""
    step = 512
    for start in range(0, audio.size, step):
        stream.feed(audio[start : start + step])
        stream.mark_speech(round(stream.audio_seconds * SR), voiced)


def test_noise_after_speech_keeps_the_energy_tracker_from_the_pause() -> None:
    stream = StreamingTranscription(FakeTranscriber(), interval_seconds=10.0, silence_seconds=0.15)
    feed_in_chunks(stream, speech(2.0))
    feed_in_chunks(stream, noise(1.0))
    assert stream.passes == 0, "room tone above the energy threshold reads as speech"
    assert stream.settled_text() is None


def test_the_vad_marks_start_the_pass_at_the_pause_through_noise() -> None:
    fake = FakeTranscriber()
    stream = StreamingTranscription(fake, interval_seconds=10.0, silence_seconds=0.15)
    feed_marked(stream, speech(2.0), voiced=True)
    assert stream.passes == 0
    feed_marked(stream, noise(0.12), voiced=False)
    assert stream.passes == 0, "the pause is not 150 ms long yet"
    feed_marked(stream, noise(0.06), voiced=False)
    assert stream.passes == 1
    assert len(fake.calls) == 1 and 2.15 <= float(fake.calls[0]["seconds"]) <= 2.2  # type: ignore[arg-type]
    assert stream.settled_text() == " ".join(SCRIPT[:5])
    feed_marked(stream, noise(0.6), voiced=False)
    assert stream.passes == 1, "noise the VAD calls silence starts no pass"
    final = stream.finish()
    assert final.reused and len(fake.calls) == 1
    assert final.transcript.text == " ".join(SCRIPT[:5])


def test_in_a_quiet_room_the_pause_is_heard_before_the_vad_releases() -> None:
    stream = StreamingTranscription(FakeTranscriber(), interval_seconds=10.0, silence_seconds=0.15)
    feed_marked(stream, speech(2.0), voiced=True)
    feed_marked(stream, silence(0.2), voiced=True)  # the VAD's release lags the last word
    assert stream.passes == 1
    assert stream.settled_text() == " ".join(SCRIPT[:5])
    feed_marked(stream, silence(0.3), voiced=False)
    assert stream.passes == 1
    assert stream.finish().reused


def test_marks_after_the_turn_ended_are_ignored() -> None:
    stream = StreamingTranscription(FakeTranscriber(), interval_seconds=10.0, silence_seconds=0.15)
    feed_marked(stream, speech(1.0), voiced=True)
    stream.finish()
    stream.mark_speech(SR * 2, voiced=False)  # a late VAD verdict racing the commit
    assert stream.passes == 0
