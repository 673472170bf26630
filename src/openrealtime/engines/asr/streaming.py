"""Transcription that runs while the user speaks, so the final text is ready at end of speech.

The runtime feeds the current turn's 16 kHz audio into a :class:`StreamingTranscription` as it
arrives. Every ``interval_seconds`` of new speech it re-transcribes the turn (skipping while a
pass is still running) and publishes the words that two consecutive passes agree on
(LocalAgreement-2), so the deltas are append-only like the protocol's
``input_audio_transcription.delta`` events.

End-of-speech latency is won in two places:

* as soon as the audio goes quiet for ``silence_seconds`` a pass starts at once; if no speech
  arrived after it by the time :meth:`StreamingTranscription.finish` is called (the VAD waits
  its silence timeout first), that pass *is* the final transcript and finish costs nothing;
* otherwise one more pass runs over the turn; on long turns only over the audio after the
  last committed segment (older audio is trimmed once its text is final), so its cost stays
  at one short Whisper window. The trimmed text is not given as Whisper's prompt unless
  ``context_prompt=True``: on the long test turn the prompt made base copy a misspelling
  ("ild-sposed") into four of five passes, and without it none.

``final_prefix=True`` makes that last pass continue the shown words (Whisper's ``prefix``), which
guarantees consistent deltas but freezes an early mistake: on 37 turns it measured 5.7 % WER
against 4.4 % unconstrained (deltas still matched in 97 % of turns), so it is off by default.

The final transcript is authoritative (it goes into the conversation item and to the model).
If it starts with the words already sent as deltas, up to case and punctuation, those words
keep their shown form and the rest is sent as the last delta, so the deltas add up to the
transcript exactly. If the final pass heard different words ("Howdy" shown, "Had he" final),
no correcting delta can be sent: the last delta is empty, the transcript keeps the better
words, and :attr:`FinalTranscript.deltas_match` is ``False``; clients replace delta text with
the completed transcript, as OpenAI's do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from openrealtime.engines.asr.language import LanguageDetection, LanguagePolicy, keep_script
from openrealtime.engines.base import CancelToken, FloatAudio, Transcriber, Transcript

__all__ = [
    "FinalTranscript",
    "IncrementalDecoder",
    "PassRecord",
    "SegmentTranscriber",
    "StreamingTranscription",
    "TimedSegment",
    "TimedTranscript",
    "common_prefix",
    "transcribe_in",
]

log = logging.getLogger(__name__)

_FRAME = 320  # 20 ms at 16 kHz, the unit of the speech-energy tracker


@runtime_checkable
class TimedSegment(Protocol):
    """A segment with times in seconds from the start of the audio passed in."""

    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...


@runtime_checkable
class TimedTranscript(Protocol):
    @property
    def transcript(self) -> Transcript: ...
    @property
    def segments(self) -> Sequence[TimedSegment]: ...


@runtime_checkable
class SegmentTranscriber(Protocol):
    """A transcriber that also returns timed segments (Whisper), enabling buffer trimming."""

    def transcribe_segments(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        prefix: str | None = None,
        cancel: CancelToken | None = None,
    ) -> TimedTranscript: ...


@runtime_checkable
class IncrementalDecoder(Protocol):
    """A true streaming recogniser for one utterance (PocketSphinx): cheap partials per chunk."""

    def feed(self, audio: FloatAudio) -> str | None:
        """Consume audio; return a fresh hypothesis for everything fed so far, or ``None``
        when this chunk did not produce one (agreement needs two *fresh* hypotheses)."""
        ...

    def finish(self) -> Transcript: ...


@dataclass(frozen=True)
class FinalTranscript:
    """The result of :meth:`StreamingTranscription.finish`.

    ``delta`` is the last piece of delta text (already appended to ``deltas``); ``reused`` says
    the final came from a pass that ran before finish was called; ``wait_seconds`` is the time
    finish spent (end-of-speech-to-final latency as seen by the caller); ``detection`` is the
    final pass's language detection (when a language policy asked for one).
    """

    transcript: Transcript
    delta: str
    deltas_match: bool
    reused: bool
    passes: int
    wait_seconds: float
    detection: LanguageDetection | None = None


@dataclass
class PassRecord:
    """What one pass over ``[cut, end)`` produced (kept to reuse it as the final)."""

    cut: int
    end: int
    words: list[str]
    transcript: Transcript
    segments: Sequence[TimedSegment] = ()
    detection: LanguageDetection | None = None


@dataclass
class _Inflight:
    future: Future[None] | None
    end: int
    cancel: CancelToken = field(default_factory=CancelToken)
    done: threading.Event = field(default_factory=threading.Event)


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two word lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _join(words: Sequence[str]) -> str:
    return " ".join(words)


def _spoken(word: str) -> str:
    """A word without case and punctuation: what was said, not how it was written."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


class StreamingTranscription:
    """Incremental transcription of one user turn; a plain thread-safe class, no event loop.

    ``feed`` appends audio and may run a pass: inline on the calling thread when ``executor``
    is ``None`` (deterministic; audio simply queues upstream while it runs), or on
    ``executor`` without blocking. ``busy`` lets the runtime's scheduler veto periodic passes
    when the CPU is needed elsewhere (the end-of-speech pass is never vetoed). ``partials``
    switches deltas to a true streaming decoder (PocketSphinx) and keeps ``transcriber`` for
    the end-of-speech and final passes only. ``final_transcriber`` (e.g. Whisper base beside a
    tiny.en ``transcriber``) takes the end-of-speech and final passes; being another model,
    it runs beside a periodic pass instead of queueing behind it. ``language`` is a fixed
    language, or a session's :class:`LanguagePolicy` (every pass then picks its language from
    a detection on its own audio, with models that support it).
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        language: str | LanguagePolicy | None = None,
        prompt: str | None = None,
        partials: IncrementalDecoder | None = None,
        final_transcriber: Transcriber | None = None,
        interval_seconds: float = 0.8,
        min_pass_seconds: float = 0.5,
        silence_seconds: float = 0.15,
        trim_after_seconds: float = 10.0,
        executor: Executor | None = None,
        busy: Callable[[], bool] | None = None,
        on_delta: Callable[[str], None] | None = None,
        speech_rms_floor: float = 0.004,
        speech_rms_ratio: float = 0.06,
        final_prefix: bool = False,
        context_prompt: bool = False,
        min_agree_seconds: float = 1.5,
        hold_last_word: bool = True,
    ) -> None:
        self.transcriber = transcriber
        self.sample_rate = transcriber.sample_rate
        self.policy: LanguagePolicy | None = None
        self.language: str | None = None
        if isinstance(language, LanguagePolicy):
            self.policy, self.language = language, language.without_detection
        else:
            self.language = language
        self.prompt = prompt
        self.partials = partials
        self.interval = round(interval_seconds * self.sample_rate)
        self.min_pass = round(min_pass_seconds * self.sample_rate)
        self.silence = round(silence_seconds * self.sample_rate)
        self.trim_after = round(trim_after_seconds * self.sample_rate)
        self.executor = executor
        self.busy = busy
        self.on_delta = on_delta
        self.speech_rms_floor = speech_rms_floor
        self.speech_rms_ratio = speech_rms_ratio
        self.final_prefix = final_prefix
        self.context_prompt = context_prompt
        self.min_agree = round(min_agree_seconds * self.sample_rate)
        self.hold_last_word = hold_last_word
        self.final_transcriber = final_transcriber or transcriber
        self._split = self.final_transcriber is not transcriber
        self._final_slot = "final" if self._split else "main"
        self._prefix = bool(getattr(self.final_transcriber, "supports_prefix", False))

        self._lock = threading.Lock()
        self._partials_lock = threading.Lock()  # streaming decoders are not thread-safe
        self._partials_done = False
        self._audio = np.zeros(self.sample_rate * 8, dtype=np.float32)
        self._n = 0
        self._rms: list[float] = []
        self._peak = 0.0
        self._voiced_end = 0  # sample just after the last voiced frame (energy tracker)
        self._vad_voiced_end: int | None = None  # the same by the session's VAD, once it reports
        self._vad_heard = 0  # audio up to this sample has been judged by the VAD
        self._cut = 0  # audio before this sample is final and no longer decoded
        self._cut_words = 0  # committed words that belong to audio before the cut
        self._committed: list[str] = []  # every word sent as a delta, in order
        self._previous: list[str] | None = None  # last hypothesis of the region after the cut
        self._previous_samples = 0
        self._partial_previous: list[str] | None = None
        self._last_pass: PassRecord | None = None  # latest pass of the final model
        self._last_end: dict[str, int] = {"main": 0, "final": 0}
        self._inflight: dict[str, _Inflight] = {}
        self._deltas: list[str] = []
        self._unread = 0
        self._finished = False
        self._cancelled = False
        self.passes = 0
        self.pass_seconds: list[float] = []

    # ------------------------------------------------------------------ feeding

    def feed(self, audio: FloatAudio) -> None:
        """Append audio of the turn (16 kHz float32); may start a pass."""
        chunk = np.asarray(audio, dtype=np.float32).reshape(-1)
        if chunk.size == 0:
            return
        with self._lock:
            if self._cancelled:
                return  # a late chunk racing cancel() from another thread
            if self._finished:
                raise RuntimeError("feed() after finish()")
            self._append(chunk)
        if self.partials is not None:
            with self._partials_lock:
                hypothesis = None if self._partials_done else self.partials.feed(chunk)
            if hypothesis is not None:
                self._notify(self._partial_words(hypothesis))
        self._maybe_pass()

    def _append(self, chunk: FloatAudio) -> None:
        need = self._n + chunk.size
        if need > self._audio.size:
            grown = np.zeros(max(need, self._audio.size * 2), dtype=np.float32)
            grown[: self._n] = self._audio[: self._n]
            self._audio = grown
        self._audio[self._n : need] = chunk
        start = len(self._rms) * _FRAME
        self._n = need
        while start + _FRAME <= self._n:
            frame = self._audio[start : start + _FRAME]
            rms = float(np.sqrt(np.mean(frame * frame)))
            self._rms.append(rms)
            self._peak = max(self._peak, rms)
            start += _FRAME
        threshold = max(self.speech_rms_floor, self.speech_rms_ratio * self._peak)
        # Re-scan recent frames: a louder frame raises the threshold for earlier ones too.
        for index in range(len(self._rms) - 1, -1, -1):
            if self._rms[index] > threshold:
                self._voiced_end = max(self._voiced_end, (index + 1) * _FRAME)
                break
            if (index + 1) * _FRAME <= self._voiced_end:
                break

    def mark_speech(self, end: int, voiced: bool) -> None:
        """The session's VAD judged the turn's audio up to sample ``end``: its last frame
        held speech (``voiced``) or not. A pause either tracker hears starts the pass at the
        pause: the energy tracker hears one first in a quiet room (the VAD releases ~100 ms
        after the last word), the VAD in noise (room tone above 6 % of the turn's peak kept
        the energy tracker "voiced" for seconds after the last word, so that pass started
        late or was not the final)."""
        with self._lock:
            if self._finished:
                return
            if self._vad_voiced_end is None:  # the speech before the VAD's first mark
                self._vad_voiced_end = self._voiced_end
            self._vad_heard = max(self._vad_heard, min(end, self._n))
            if voiced:
                self._vad_voiced_end = max(self._vad_voiced_end, min(end, self._n))
        self._maybe_pass()

    def _speech_end(self) -> int:
        """The sample just after the last speech, by the tracker that heard it end first
        (caller holds the lock)."""
        if self._vad_voiced_end is None:
            return self._voiced_end
        return min(self._voiced_end, self._vad_voiced_end)

    def _paused(self) -> bool:
        """Either tracker has heard ``silence_seconds`` without speech (caller holds the lock)."""
        if self._n - self._voiced_end >= self.silence:
            return True
        return self._vad_voiced_end is not None and self._vad_heard - self._vad_voiced_end >= self.silence

    def _maybe_pass(self) -> None:
        """Start passes: the final model's as soon as speech pauses, the periodic one when due.

        Each slot runs one pass at a time; with a single model both kinds share one slot.
        """
        starts: list[tuple[str, _Inflight]] = []
        with self._lock:
            if self._finished:
                return
            end = self._n
            if end - self._cut < self.min_pass:
                return
            slot = self._final_slot
            voiced_end = self._speech_end()
            quiet_tail = self._paused()
            if quiet_tail and voiced_end > self._last_end[slot]:
                stale = self._inflight.get(slot)
                if stale is None:
                    starts.append((slot, self._start(slot, end)))
                elif stale.end < voiced_end:
                    # Speech has paused and this pass missed its end: stop it early (after
                    # its encoder) so the pass that may be the final starts sooner.
                    stale.cancel.cancel()
            periodic = (
                self.partials is None
                and "main" not in self._inflight
                and voiced_end > self._last_end["main"]
                and end - self._last_end["main"] >= self.interval
            )
            if periodic and not (self.busy is not None and self.busy()):
                starts.append(("main", self._start("main", end)))
        for slot, inflight in starts:
            if self.executor is None:
                self._run_pass(slot, inflight)
            else:
                inflight.future = self.executor.submit(self._run_pass, slot, inflight)

    def _start(self, slot: str, end: int) -> _Inflight:
        inflight = _Inflight(None, end)
        self._inflight[slot] = inflight
        self._last_end[slot] = end
        return inflight

    def _run_pass(self, slot: str, inflight: _Inflight) -> None:
        try:
            self._pass(slot, inflight)
        except Exception as error:  # a failed partial pass must not end the turn
            if not inflight.cancel.cancelled:
                log.warning("transcription pass failed: %s", error)
        finally:
            with self._lock:
                if self._inflight.get(slot) is inflight:
                    del self._inflight[slot]
            inflight.done.set()
        if self.executor is not None:
            self._maybe_pass()

    def _pass(self, slot: str, inflight: _Inflight) -> None:
        with self._lock:
            cut, cut_words = self._cut, self._cut_words
            audio = self._audio[cut : inflight.end].copy()
            prompt = self._prompt(cut_words)
        model = self.final_transcriber if slot == "final" else self.transcriber
        started = _now()
        result, segments, detection = self._transcribe(model, audio, prompt, None, inflight.cancel)
        elapsed = _now() - started
        words = result.text.split()
        delta = None
        with self._lock:
            self.passes += 1
            self.pass_seconds.append(elapsed)
            if cut != self._cut:
                return
            if slot == self._final_slot:
                self._last_pass = PassRecord(cut, inflight.end, words, result, segments, detection)
            if slot == "main" and self.partials is None and not self._finished:
                delta = self._agree(words, inflight.end - cut)
                self._trim(segments, words, inflight.end)
        self._notify(delta)

    # ------------------------------------------------------------------ agreement

    def _agree(self, words: list[str], samples: int) -> str | None:
        """Commit the words two consecutive passes agree on (caller holds the lock).

        Whisper guesses on the first second of a turn ("Howdy" for "Had he", a lower-case
        "unless" that later becomes "Unless") and re-punctuates the last word as more audio
        comes ("not." -> "not"), and a shown word can't be taken back: so nothing is committed
        from a pass over less than ``min_agree_seconds``, and the last word waits for the end.
        """
        previous, self._previous = self._previous, words
        previous_samples, self._previous_samples = self._previous_samples, samples
        if previous is None or previous_samples < self.min_agree:
            return None
        region = self._committed[self._cut_words :]
        agreed = common_prefix(previous, words)
        if self.hold_last_word:
            agreed = min(agreed, len(words) - 1)
        if agreed <= len(region) or words[: len(region)] != region:
            return None
        return self._commit(words[len(region) : agreed])

    def _partial_words(self, hypothesis: str) -> str | None:
        words = hypothesis.split()
        with self._lock:
            previous, self._partial_previous = self._partial_previous, words
            if previous is None or self._finished:
                return None
            agreed = common_prefix(previous, words)
            done = len(self._committed)
            if agreed <= done or words[:done] != self._committed:
                return None
            return self._commit(words[done:agreed])

    def _commit(self, fresh: list[str]) -> str:
        """Append words to the shown text and record their delta (caller holds the lock)."""
        delta = ("" if not self._committed else " ") + _join(fresh)
        self._committed.extend(fresh)
        self._deltas.append(delta)
        return delta

    def _notify(self, delta: str | None) -> None:
        if delta and self.on_delta is not None:
            self.on_delta(delta)

    def _trim(self, segments: Sequence[TimedSegment], words: list[str], end: int) -> None:
        """Drop audio whose committed segments are final once the region grows long."""
        if not segments or end - self._cut < self.trim_after:
            return
        region = self._committed[self._cut_words :]
        region_seconds = (end - self._cut) / self.sample_rate
        count = 0
        keep_end = 0.0
        keep_words = 0
        for segment in segments:
            count += len(segment.text.split())
            if count > len(region) or segment.end > region_seconds - 1.0:
                break
            keep_end, keep_words = segment.end, count
        if keep_words == 0 or words[:keep_words] != region[:keep_words]:
            return
        self._cut += round(keep_end * self.sample_rate)
        self._cut_words += keep_words
        if self._previous is not None:
            self._previous = self._previous[keep_words:]
            self._previous_samples -= round(keep_end * self.sample_rate)
        last = self._last_pass
        if last is not None and self._split:
            self._last_pass = None  # the final model's words need not line up with these
        elif last is not None:
            rest = last.words[keep_words:]
            self._last_pass = PassRecord(
                self._cut, last.end, rest, replace(last.transcript, text=_join(rest)), (), last.detection
            )

    def _prompt(self, cut_words: int) -> str | None:
        before = _join(self._committed[:cut_words][-120:]) if self.context_prompt else ""
        text = " ".join(part for part in (self.prompt or "", before) if part)
        return text or None

    def _transcribe(
        self,
        model: Transcriber,
        audio: FloatAudio,
        prompt: str | None,
        prefix: str | None,
        cancel: CancelToken,
    ) -> tuple[Transcript, Sequence[TimedSegment], LanguageDetection | None]:
        language = self.policy if self.policy is not None else self.language
        return transcribe_in(model, audio, language, prompt=prompt, prefix=prefix, cancel=cancel)

    # ------------------------------------------------------------------ results

    @property
    def deltas(self) -> list[str]:
        """Every delta emitted so far, in order (their concatenation is the shown text)."""
        with self._lock:
            return list(self._deltas)

    @property
    def text(self) -> str:
        """The committed text so far (the concatenation of :attr:`deltas`)."""
        with self._lock:
            return _join(self._committed)

    def latest_text(self) -> str | None:
        """The text of the latest finished pass over the turn (None before one finished)."""
        with self._lock:
            last = self._last_pass
            if last is None or last.cut != self._cut:
                return None
            return _join([*self._committed[: self._cut_words], *last.words])

    def pause_transcript(self, covering: int | None = None) -> tuple[str | None, threading.Event | None]:
        """The turn's text up to its latest pause, for the end-of-turn decision.

        ``(text, None)`` once a pass covers the speech up to sample ``covering`` (default:
        all the voiced audio fed so far); ``(None, done)`` while such a pass runs (``done`` is
        set when it ends); ``(None, None)`` when none will come (too little audio for a pass)."""
        with self._lock:
            until = min(self._speech_end() if covering is None else covering, self._n)
            running = self._inflight.get(self._final_slot)
            last = self._last_pass
            if last is not None and last.end >= until and last.cut == self._cut:
                return _join([*self._committed[: self._cut_words], *last.words]), None
            if running is not None and running.end >= until:
                return None, running.done
            return None, None

    @property
    def trimmed_seconds(self) -> float:
        """Audio at the start of the turn whose text is final and no longer re-decoded."""
        with self._lock:
            return self._cut / self.sample_rate

    @property
    def audio_seconds(self) -> float:
        with self._lock:
            return self._n / self.sample_rate

    def settled_text(self) -> str | None:
        """What :meth:`finish` would return if called now without another pass: the latest
        pass of the final model heard every voiced sample so far (the caller has paused);
        None while speech goes on past it, before such a pass, or once finished."""
        with self._lock:
            last = self._last_pass
            if (
                self._finished
                or last is None
                or last.cut != self._cut
                or last.end < self._speech_end()
                or (self.partials is not None and self._cut != 0)
            ):
                return None
            return _join(self._committed[: self._cut_words] + last.words)

    def take_deltas(self) -> list[str]:
        """Deltas emitted since the previous call (for a runtime that polls)."""
        with self._lock:
            fresh = self._deltas[self._unread :]
            self._unread = len(self._deltas)
            return fresh

    def cancel(self) -> None:
        """Abandon the turn (buffer cleared, session closed): stop passes, no final."""
        with self._lock:
            self._finished = self._cancelled = True
            running = list(self._inflight.values())
        for inflight in running:
            inflight.cancel.cancel()
        self._close_partials()

    def _close_partials(self) -> None:
        """End the streaming decoder once (PocketSphinx returns it to its pool)."""
        if self.partials is None:
            return
        with self._partials_lock:
            if self._partials_done:
                return
            self._partials_done = True
            self.partials.finish()

    def finish(self, cancel: CancelToken | None = None) -> FinalTranscript:
        """The final transcript of everything fed; call once, at end of speech (commit)."""
        started = _now()
        with self._lock:
            if self._finished:
                raise RuntimeError("finish() called twice or after cancel()")
            self._finished = True
            running = dict(self._inflight)
            voiced_end = self._speech_end()
        for slot, inflight in running.items():
            # A pass that started before speech ended can't be the final: stop it (Whisper
            # stops between encoder and decoder) so the final decode doesn't queue behind it
            # on the model's worker. A pass of the final model that heard all the speech is
            # waited for: it is the final.
            if slot != self._final_slot or inflight.end < voiced_end:
                inflight.cancel.cancel()
        final_pass = running.get(self._final_slot)
        if final_pass is not None:
            final_pass.done.wait()
        with self._lock:
            total = self._n
            cut, cut_words = self._cut, self._cut_words
            region = self._committed[cut_words:]
            last = self._last_pass
            covered = (
                last is not None
                and last.cut == cut
                and last.end >= self._speech_end()
                and (self.partials is None or cut == 0)
                and (not self.final_prefix or last.words[: len(region)] == region)
            )
            audio = self._audio[cut:total].copy()
            prompt = self._prompt(cut_words)
        self._close_partials()
        token = cancel or CancelToken()
        detection: LanguageDetection | None = None
        if covered:
            assert last is not None
            final_region = last.words
            transcript = last.transcript
            detection = last.detection
        elif total - cut == 0:
            final_region, transcript = [], Transcript("", self.language, 0.0, 0)
        else:
            forced = self.final_prefix and self._prefix and self.partials is None
            prefix = _join(region) if region and forced else None
            transcript, _, detection = self._transcribe(self.final_transcriber, audio, prompt, prefix, token)
            final_region = transcript.text.split()
        with self._lock:
            words = self._committed[:cut_words] + final_region
            shown = len(self._committed)
            match = len(words) >= shown and all(
                _spoken(a) == _spoken(b) for a, b in zip(words, self._committed, strict=False)
            )
            if match:
                # Same words, maybe re-cased or re-punctuated ("woman" -> "woman,"): keep the
                # forms already shown so the deltas still add up to the transcript.
                words[:shown] = self._committed
            delta = self._commit(words[shown:]) if match and len(words) > shown else ""
            passes = self.passes
        self._notify(delta)
        language = transcript.language or self.language
        text = keep_script(_join(words), language)
        count = getattr(self.final_transcriber, "count_tokens", None)
        tokens = count(text) if callable(count) and text else transcript.output_tokens
        final = Transcript(text, language, total / self.sample_rate, int(tokens))
        return FinalTranscript(final, delta, match, covered, passes, _now() - started, detection)


def transcribe_in(
    model: Transcriber,
    audio: FloatAudio,
    language: str | LanguagePolicy | None,
    *,
    prompt: str | None = None,
    prefix: str | None = None,
    cancel: CancelToken | None = None,
    fallback: bool = True,
) -> tuple[Transcript, Sequence[TimedSegment], LanguageDetection | None]:
    """One transcription in a fixed language or under a session's language policy.

    Models that support a policy (Whisper) choose the language from a detection on this
    audio and return it; others get the policy's language without detection. The text is
    never in a script foreign to the transcript's language. ``fallback=False`` asks a model
    that can (Whisper) not to redo a degenerate short-window decode on its full window.
    """
    extra: dict[str, object] = {}
    if not fallback and getattr(model, "supports_fallback_choice", False):
        extra["fallback"] = False
    fixed = language
    if isinstance(language, LanguagePolicy):
        fixed = language.without_detection
        if getattr(model, "supports_language_policy", False):
            extra["policy"] = language
    if isinstance(model, SegmentTranscriber):
        segment_call: Callable[..., TimedTranscript] = model.transcribe_segments
        timed = segment_call(audio, language=fixed, prompt=prompt, prefix=prefix, cancel=cancel, **extra)
        detection = getattr(timed, "detection", None)
        return _in_script(timed.transcript), tuple(timed.segments), detection
    transcribe: Callable[..., Transcript] = model.transcribe
    if prefix is not None and getattr(model, "supports_prefix", False):
        extra["prefix"] = prefix
    if cancel is not None:
        extra["cancel"] = cancel
    result = transcribe(audio, language=fixed, prompt=prompt, **extra)
    return _in_script(result), (), None


def _in_script(transcript: Transcript) -> Transcript:
    text = keep_script(transcript.text, transcript.language)
    return transcript if text == transcript.text else replace(transcript, text=text)


def _now() -> float:
    return time.perf_counter()
