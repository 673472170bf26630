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
* otherwise the final pass decodes only the audio after the last committed segment (long
  turns), with the committed text as prompt and, where the engine supports it, forced as the
  transcript's prefix, so the final text extends what the user already saw.

The final transcript is authoritative (it goes into the conversation item and to the model).
When it does not start with the text already sent as deltas (possible only with an engine that
can't take a prefix, or with separate partial and final engines), no correcting delta can be
sent: the remaining delta is empty and :attr:`FinalTranscript.deltas_match` is ``False``;
clients replace the delta text with the completed transcript, as OpenAI's do.
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
    finish spent (end-of-speech-to-final latency as seen by the caller).
    """

    transcript: Transcript
    delta: str
    deltas_match: bool
    reused: bool
    passes: int
    wait_seconds: float


@dataclass
class PassRecord:
    """What one pass over ``[cut, end)`` produced (kept to reuse it as the final)."""

    cut: int
    end: int
    words: list[str]
    transcript: Transcript
    segments: Sequence[TimedSegment] = ()


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


class StreamingTranscription:
    """Incremental transcription of one user turn; a plain thread-safe class, no event loop.

    ``feed`` appends audio and may run a pass: inline on the calling thread when ``executor``
    is ``None`` (deterministic; audio simply queues upstream while it runs), or on
    ``executor`` without blocking. ``busy`` lets the runtime's scheduler veto periodic passes
    when the CPU is needed elsewhere (the end-of-speech pass is never vetoed). ``partials``
    switches deltas to a true streaming decoder (PocketSphinx) and keeps ``transcriber`` for
    the end-of-speech and final passes only.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partials: IncrementalDecoder | None = None,
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
        context_prompt: bool = True,
    ) -> None:
        self.transcriber = transcriber
        self.sample_rate = transcriber.sample_rate
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
        self._segments = isinstance(transcriber, SegmentTranscriber)
        self._prefix = bool(getattr(transcriber, "supports_prefix", False))

        self._lock = threading.Lock()
        self._audio = np.zeros(self.sample_rate * 8, dtype=np.float32)
        self._n = 0
        self._rms: list[float] = []
        self._peak = 0.0
        self._voiced_end = 0  # sample just after the last voiced frame
        self._cut = 0  # audio before this sample is final and no longer decoded
        self._cut_words = 0  # committed words that belong to audio before the cut
        self._committed: list[str] = []  # every word sent as a delta, in order
        self._previous: list[str] | None = None  # last hypothesis of the region after the cut
        self._partial_previous: list[str] | None = None
        self._last_pass: PassRecord | None = None
        self._last_pass_end = 0
        self._inflight: _Inflight | None = None
        self._deltas: list[str] = []
        self._unread = 0
        self._finished = False
        self.passes = 0
        self.pass_seconds: list[float] = []

    # ------------------------------------------------------------------ feeding

    def feed(self, audio: FloatAudio) -> None:
        """Append audio of the turn (16 kHz float32); may start a pass."""
        chunk = np.asarray(audio, dtype=np.float32).reshape(-1)
        if chunk.size == 0:
            return
        with self._lock:
            if self._finished:
                raise RuntimeError("feed() after finish()")
            self._append(chunk)
        if self.partials is not None:
            hypothesis = self.partials.feed(chunk)
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

    def _maybe_pass(self) -> None:
        """Start a pass when the end of speech is near or enough new speech has arrived."""
        with self._lock:
            if self._finished or self._inflight is not None:
                return
            end = self._n
            new_speech = self._voiced_end > self._last_pass_end
            if not new_speech or end - self._cut < self.min_pass:
                return
            quiet_tail = end - self._voiced_end >= self.silence
            periodic = self.partials is None and end - self._last_pass_end >= self.interval
            if not (quiet_tail or periodic):
                return
            if not quiet_tail and self.busy is not None and self.busy():
                return
            inflight = _Inflight(None, end)
            self._inflight = inflight
            self._last_pass_end = end
        if self.executor is None:
            self._run_pass(inflight)
        else:
            inflight.future = self.executor.submit(self._run_pass, inflight)

    def _run_pass(self, inflight: _Inflight) -> None:
        try:
            with self._lock:
                cut, cut_words = self._cut, self._cut_words
                audio = self._audio[cut : inflight.end].copy()
                prompt = self._prompt(cut_words)
            started = _now()
            try:
                result, segments = self._transcribe(audio, prompt, None, inflight.cancel)
            except Exception as error:  # a failed partial pass must not end the turn
                if not inflight.cancel.cancelled:
                    log.warning("partial transcription pass failed: %s", error)
                return
            elapsed = _now() - started
            words = result.text.split()
            with self._lock:
                self.passes += 1
                self.pass_seconds.append(elapsed)
                if cut != self._cut:
                    return
                self._last_pass = PassRecord(cut, inflight.end, words, result, segments)
                delta = self._agree(words) if self.partials is None else None
                self._trim(segments, words, inflight.end)
            self._notify(delta)
        finally:
            with self._lock:
                if self._inflight is inflight:
                    self._inflight = None
            inflight.done.set()
        if self.executor is not None:
            self._maybe_pass()

    # ------------------------------------------------------------------ agreement

    def _agree(self, words: list[str]) -> str | None:
        """Commit the words two consecutive passes agree on (caller holds the lock)."""
        previous, self._previous = self._previous, words
        if previous is None:
            return None
        region = self._committed[self._cut_words :]
        agreed = common_prefix(previous, words)
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
        last = self._last_pass
        if last is not None:
            rest = last.words[keep_words:]
            self._last_pass = PassRecord(
                self._cut, last.end, rest, replace(last.transcript, text=_join(rest))
            )

    def _prompt(self, cut_words: int) -> str | None:
        before = _join(self._committed[:cut_words][-120:]) if self.context_prompt else ""
        text = " ".join(part for part in (self.prompt or "", before) if part)
        return text or None

    def _transcribe(
        self, audio: FloatAudio, prompt: str | None, prefix: str | None, cancel: CancelToken
    ) -> tuple[Transcript, Sequence[TimedSegment]]:
        if self._segments:
            assert isinstance(self.transcriber, SegmentTranscriber)
            timed = self.transcriber.transcribe_segments(
                audio, language=self.language, prompt=prompt, prefix=prefix, cancel=cancel
            )
            return timed.transcript, tuple(timed.segments)
        if prefix is not None and self._prefix:
            transcribe: Callable[..., Transcript] = self.transcriber.transcribe
            return transcribe(audio, language=self.language, prompt=prompt, prefix=prefix, cancel=cancel), ()
        return self.transcriber.transcribe(audio, language=self.language, prompt=prompt, cancel=cancel), ()

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

    @property
    def audio_seconds(self) -> float:
        with self._lock:
            return self._n / self.sample_rate

    def take_deltas(self) -> list[str]:
        """Deltas emitted since the previous call (for a runtime that polls)."""
        with self._lock:
            fresh = self._deltas[self._unread :]
            self._unread = len(self._deltas)
            return fresh

    def cancel(self) -> None:
        """Abandon the turn (buffer cleared, session closed): stop passes, no final."""
        with self._lock:
            self._finished = True
            inflight = self._inflight
        if inflight is not None:
            inflight.cancel.cancel()

    def finish(self, cancel: CancelToken | None = None) -> FinalTranscript:
        """The final transcript of everything fed; call once, at end of speech (commit)."""
        started = _now()
        with self._lock:
            if self._finished:
                raise RuntimeError("finish() called twice or after cancel()")
            self._finished = True
            inflight = self._inflight
        if inflight is not None:
            # CTranslate2 serialises calls on one worker, so a second decode would only queue
            # behind this one: waiting is never slower, and its result may be the final.
            inflight.done.wait()
        with self._lock:
            total = self._n
            cut, cut_words = self._cut, self._cut_words
            region = self._committed[cut_words:]
            last = self._last_pass
            covered = (
                last is not None
                and last.cut == cut
                and last.end >= self._voiced_end
                and (self.partials is None or cut == 0)
                and (not self.final_prefix or last.words[: len(region)] == region)
            )
            audio = self._audio[cut:total].copy()
            prompt = self._prompt(cut_words)
        if self.partials is not None:
            self.partials.finish()
        token = cancel or CancelToken()
        if covered:
            assert last is not None
            final_region = last.words
            transcript = last.transcript
        elif total - cut == 0:
            final_region, transcript = [], Transcript("", self.language, 0.0, 0)
        else:
            forced = self.final_prefix and self._prefix and self.partials is None
            prefix = _join(region) if region and forced else None
            transcript, _ = self._transcribe(audio, prompt, prefix, token)
            final_region = transcript.text.split()
        with self._lock:
            words = self._committed[:cut_words] + final_region
            shown = len(self._committed)
            match = words[:shown] == self._committed
            delta = self._commit(words[shown:]) if match and len(words) > shown else ""
            passes = self.passes
        self._notify(delta)
        text = _join(words)
        count = getattr(self.transcriber, "count_tokens", None)
        tokens = count(text) if callable(count) and text else transcript.output_tokens
        final = Transcript(text, transcript.language or self.language, total / self.sample_rate, int(tokens))
        return FinalTranscript(final, delta, match, covered, passes, _now() - started)


def _now() -> float:
    return time.perf_counter()
