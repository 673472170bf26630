"""The listening side of a live session: caller audio → VAD → turn detector → transcripts.

Appended audio (24 kHz PCM) is cut into 32 ms frames at 16 kHz and scored by the VAD on the
scheduler's VAD queue; the scores are reported to the runtime (``SpeechProbabilities``), which
gives them to the core, whose segmenter decides turns. While the caller speaks, a
``StreamingTranscription`` re-transcribes the turn in the background, so the final transcript
is ready soon after the end of speech. This module carries out the core's commands and
reports results; it never drives the core itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..audio import formats
from ..audio.resample import AudioFrame, AudioFramer, int16_to_float32, resample
from ..core.commands import (
    InputAppended,
    InputCommitted,
    PredictEndOfTurn,
    SpeechStarted,
    TranscribeHeld,
    TranscribeItem,
)
from ..core.events import (
    CallerLanguageChanged,
    EndOfTurnPredicted,
    HeldSpeechHeard,
    Result,
    SpeechProbabilities,
    VadFrame,
)
from ..engines.asr.language import LanguageDetection, LanguageTracker
from ..engines.asr.streaming import StreamingTranscription, transcribe_in
from ..engines.base import FloatAudio, Transcript, VADStream
from ..engines.registry import EngineSet
from ..engines.turn.backchannel import BACKCHANNEL_PROMPT
from ..engines.turn.completeness import RuleCompleteness
from ..engines.turn.prosody import end_probability, prosody_at_end
from .echo_guard import EchoGuard
from .scheduler import PRIORITY_BACKGROUND, PRIORITY_TURN, Scheduler

log = logging.getLogger("openrealtime.listening")

SPEECH_END_MARGIN_MS = 96
"""The segmenter reports speech ending this much before the VAD released (its lag)."""

PROSODY_SPAN_MS = 3000
"""The prosody at a pause is measured against the last seconds of speech, not the whole turn."""

TEXT_WAIT_SECONDS = 1.5
"""How long the pass that transcribes a pause is waited for before the turn may end without
it (the policy's ``text_wait_ms``)."""
TEXT_LATE_SECONDS = 3.0
"""How much longer a late transcript of a pause still counts."""
TEXT_POLL_SECONDS = 0.02

DIGITAL_SILENCE_DB = -100.0
"""A frame below this power carries less than one 16-bit step: digital silence (a muted
microphone, the time a DTX stream skips). No speech can be in it, so the VAD is not asked about
such frames while the last frame it scored was silence to the turn; they score 0."""
SILENCE_CONTEXT_FRAMES = 8
"""When sound follows frames of digital silence the VAD was not asked about, up to this many
frames of zeros go to it first (its state then is as after a long silence: it is recurrent,
and where it places the onset, so what a turn's audio holds, depends on what it heard)."""

KEEP_SECONDS = 120.0
"""How much 16 kHz caller audio is kept for the turn detector and transcription."""


HELD_AUDIO_WAIT_SECONDS = 0.5
"""How long the pass over held speech waits for the end of its span to arrive (it asks for
~100 ms past the speech's end, which the client sends in real time)."""


class AudioHistory:
    """Recent 16 kHz audio on the session's input clock, sliceable by milliseconds."""

    def __init__(self, sample_rate: int = 16_000) -> None:
        self.rate = sample_rate
        self.chunks: deque[tuple[float, FloatAudio]] = deque()
        self.samples = 0

    def add(self, start_ms: float, audio: FloatAudio) -> None:
        self.chunks.append((start_ms, audio))
        self.samples += len(audio)
        while self.samples > KEEP_SECONDS * self.rate and len(self.chunks) > 1:
            _, old = self.chunks.popleft()
            self.samples -= len(old)

    def slice(self, start_ms: float, end_ms: float) -> FloatAudio:
        pieces = []
        for chunk_start, audio in self.chunks:
            chunk_end = chunk_start + len(audio) * 1000 / self.rate
            if chunk_end <= start_ms or chunk_start >= end_ms:
                continue
            a = max(0, round((start_ms - chunk_start) * self.rate / 1000))
            b = min(len(audio), round((end_ms - chunk_start) * self.rate / 1000))
            pieces.append(audio[a:b])
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


class InputPipeline:
    """Per-session VAD and streaming transcription, driven by the core's commands; what they
    find goes to ``report``."""

    def __init__(self, engines: EngineSet, scheduler: Scheduler, report: Callable[[Result], None]) -> None:
        self.engines = engines
        self.scheduler = scheduler
        self.report = report
        self.queue: asyncio.Queue[InputAppended] = asyncio.Queue()
        self.framer: AudioFramer | None = None
        self.vad_stream: VADStream | None = None
        self.history = AudioHistory()
        self.streaming: StreamingTranscription | None = None
        self.streaming_start_ms = 0.0
        self.turn_streams: dict[str, StreamingTranscription] = {}
        self.reused_pass: dict[str, bool] = {}
        """Per committed item: its final transcript was the pass at the pause (no pass after the
        commit), for the turn timings."""
        self.task: asyncio.Task[None] | None = None
        self.last_frame_end_ms = 0.0
        self._awaited: list[tuple[float, asyncio.Future[None]]] = []
        """Waiters for the caller's audio up to an input time (:meth:`_audio_until`)."""
        self.echo = EchoGuard()
        """The session's own voice, removed before the VAD and the transcriber hear the caller."""
        self.completeness = RuleCompleteness()
        """How finished the pause's transcript reads (free: a rule over its last words)."""
        self.caller_language = LanguageTracker.from_setting(self.engines.asr_language)
        """The caller's language: the client's ``transcription.language`` or the tracked one."""
        self.reported_language: str | None = None
        """The language the core was last told (``CallerLanguageChanged``)."""
        self.vad_heard_silence = True
        """The last frame the VAD scored was silence to the turn (``DIGITAL_SILENCE_DB``)."""
        self.unscored_silence = 0
        """Frames of digital silence since the VAD last scored (``SILENCE_CONTEXT_FRAMES``)."""

    # ------------------------------------------------------------------ commands

    def on_append(self, command: InputAppended) -> None:
        end_ms = command.start_ms + len(command.pcm) * 1000 / formats.INTERNAL_RATE
        self.echo.heard_until(end_ms, time.monotonic() * 1000)
        self.queue.put_nowait(command)
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    def on_speech_started(self, command: SpeechStarted) -> None:
        transcriber = self.engines.transcriber
        mode = self.engines.partials
        if transcriber is None or mode == "none":
            return
        self._drop_streaming()
        partials = None
        sphinx = self.engines.partial_transcriber
        if mode == "pocketsphinx" and sphinx is not None and hasattr(sphinx, "stream"):
            partials = sphinx.stream()
        self.caller_language.set_explicit(command.language)
        self.streaming = StreamingTranscription(
            transcriber,
            partials=partials,
            language=self.caller_language.policy(),
            prompt=command.prompt,
            busy=lambda: not self.scheduler.partials.allows(),
            executor=self.scheduler.asr.executor(PRIORITY_BACKGROUND),
        )
        self.streaming_start_ms = command.audio_start_ms
        already = self.history.slice(command.audio_start_ms, self.last_frame_end_ms)
        if len(already):
            self._feed_streaming(already)

    async def transcribe_held(self, command: TranscribeHeld) -> None:
        """One pass over exactly the held speech (with the backchannel prompt), reported
        whatever it finds: the backchannel verdict waits for it (no words if it fails).

        The prompt makes Whisper loop in the silence after a short word ("Okay. Okay. ...",
        up to its token budget), which it would redo on the full 30 s window (~1.5 s more on
        this kind of machine, and no better on short speech: bench/backchannel.py). The
        short window's decode is kept; the verdict counts a repeated word or phrase once, and
        a loop can only hide words, never turn an interruption into a backchannel.
        """
        text = ""
        transcriber = self.engines.transcriber
        await self._audio_until(command.end_ms)  # the span's last ~100 ms may be on its way
        audio = self.history.slice(command.start_ms, command.end_ms)
        if transcriber is not None and len(audio):
            policy = self.caller_language.policy()

            def decode() -> Transcript:
                return transcribe_in(transcriber, audio, policy, prompt=BACKCHANNEL_PROMPT, fallback=False)[0]

            try:
                text = (await self.scheduler.asr.call(decode, priority=PRIORITY_TURN)).text
            except Exception:
                log.exception("transcribing held speech failed")
        log.debug(
            "held speech %s (%.0f-%.0f ms): %r", command.item_id, command.start_ms, command.end_ms, text
        )
        self.report(HeldSpeechHeard(command.item_id, text, command.end_ms))

    async def _audio_until(self, end_ms: float, limit_s: float = HELD_AUDIO_WAIT_SECONDS) -> None:
        """Wait until the caller's audio up to input time ``end_ms`` is in the history (or
        ``limit_s`` passed: a client that stopped sending)."""
        if self.last_frame_end_ms >= end_ms:
            return
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._awaited.append((end_ms, arrived))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(arrived), limit_s)

    def _wake_awaited(self) -> None:
        waiting = []
        for end_ms, arrived in self._awaited:
            if self.last_frame_end_ms >= end_ms:
                if not arrived.done():
                    arrived.set_result(None)
            else:
                waiting.append((end_ms, arrived))
        self._awaited = waiting

    def on_committed(self, command: InputCommitted) -> None:
        self.echo.turn_over()
        if command.by_vad and self.streaming is not None:
            self.turn_streams[command.item_id] = self.streaming
            self.streaming = None
        else:
            self._drop_streaming()

    def on_cleared(self) -> None:
        self.echo.turn_over()
        self._drop_streaming()

    def _drop_streaming(self) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
            self.streaming = None

    async def predict_end_of_turn(self, command: PredictEndOfTurn) -> None:
        """The evidence at a pause: smart-turn's score and the prosody now, the completeness of
        the pause's transcript now or, while its pass runs, in a second report when it ends."""
        detector = self.engines.turn_detector
        probability: float | None = None  # no detector: no score, the other evidence decides
        if detector is not None:
            audio = self.history.slice(command.audio_start_ms, command.audio_end_ms)
            probability = await self.scheduler.vad.call(
                lambda: detector.end_of_turn_probability(audio), priority=PRIORITY_TURN
            )
        prosody = None
        if command.speech_end_ms is not None:
            since = max(command.audio_start_ms, command.speech_end_ms - PROSODY_SPAN_MS)
            spoken = self.history.slice(since, command.speech_end_ms)
            prosody = end_probability(prosody_at_end(spoken))
        streaming = self.streaming
        covering = None
        if streaming is not None and command.speech_end_ms is not None:
            # the pass must hold every word up to where the VAD heard speech end
            end_ms = command.speech_end_ms + SPEECH_END_MARGIN_MS - self.streaming_start_ms
            covering = max(0, round(end_ms * streaming.sample_rate / 1000))
        text, running = streaming.pause_transcript(covering) if streaming is not None else (None, None)
        completeness = self.completeness.probability(text) if text else None
        log.debug(
            "pause %d: smart-turn %s, prosody %s, text %r (%s)%s",
            command.request_id,
            probability,
            prosody,
            text,
            completeness,
            ", transcript pending" if running is not None else "",
        )
        self.report(
            EndOfTurnPredicted(
                command.request_id,
                probability,
                text=completeness,
                prosody=prosody,
                text_pending=running is not None,
            )
        )
        if running is None or streaming is None:
            return
        late = False
        waited = 0.0
        while running is not None and waited < TEXT_WAIT_SECONDS + TEXT_LATE_SECONDS:
            budget = TEXT_WAIT_SECONDS - waited if not late else TEXT_LATE_SECONDS
            if not await _wait_for(running, budget):
                if late:
                    return
                # late: the turn may end on the other evidence now; the text still counts
                late = True
                self.report(EndOfTurnPredicted(command.request_id, None, text_pending=False))
            waited += budget  # a bound, not a measurement: passes that were replaced count whole
            text, running = streaming.pause_transcript(covering)  # a cancelled pass is redone
        completeness = self.completeness.probability(text) if text else None
        log.debug("pause %d: text %r (%s)", command.request_id, text, completeness)
        self.report(EndOfTurnPredicted(command.request_id, None, text=completeness, text_pending=False))

    async def transcribe(self, command: TranscribeItem) -> tuple[Transcript, float, list[str]]:
        """The item's final transcript: finish its streaming pass, or transcribe the audio."""
        transcriber = self.engines.transcriber
        assert transcriber is not None
        streaming = self.turn_streams.pop(command.item_id, None)
        seconds = len(command.pcm) / formats.INTERNAL_RATE
        if streaming is not None:
            # not on the ASR queue: finish may wait for a pass that queue is running
            final = await asyncio.to_thread(streaming.finish)
            self.reused_pass[command.item_id] = final.reused
            _log_final(command.item_id, final.transcript, final.detection, reused=final.reused)
            self._observe(final.detection)
            deltas = streaming.deltas if final.deltas_match else [final.transcript.text]
            return final.transcript, seconds, [d for d in deltas if d]
        audio16 = resample(int16_to_float32(command.pcm), formats.INTERNAL_RATE, transcriber.sample_rate)
        self.caller_language.set_explicit(command.language)
        policy = self.caller_language.policy()
        result, _, detection = await self.scheduler.asr.call(
            lambda: transcribe_in(transcriber, audio16, policy, prompt=command.prompt),
            priority=PRIORITY_TURN,
        )
        _log_final(command.item_id, result, detection, reused=False)
        self._observe(detection)
        return result, seconds, [result.text.strip()] if result.text.strip() else []

    def _observe(self, detection: LanguageDetection | None) -> None:
        before = self.caller_language.language
        if self.caller_language.observe(detection) is not None:
            log.info("caller's language: %s -> %s", before, self.caller_language.language)
        language = self.caller_language.language
        if language != self.reported_language:  # before the transcript, so its answer follows
            self.reported_language = language
            self.report(CallerLanguageChanged(language))

    # ------------------------------------------------------------------ audio loop

    def _feed_streaming(self, audio: FloatAudio) -> None:
        """Cheap: appends audio; passes run on the ASR queue at background priority."""
        if self.streaming is not None:
            with contextlib.suppress(RuntimeError):  # fed after finish/cancel: turn is over
                self.streaming.feed(audio)

    async def _run(self) -> None:
        vad = self.engines.vad
        while True:
            command = await self.queue.get()
            try:
                frames = self._frames(command)
                if not frames:
                    continue
                frames = self.echo.clean(frames)
                audio = np.concatenate([f.samples for f in frames])
                self.history.add(frames[0].start_ms, audio)
                self.last_frame_end_ms = frames[-1].end_ms
                if self._awaited:
                    self._wake_awaited()
                if self.streaming is not None:
                    self._feed_streaming(audio)
                if vad is None or not command.turn_detection:
                    continue
                if self.vad_heard_silence and all(f.level_db < DIGITAL_SILENCE_DB for f in frames):
                    probabilities = [0.0] * len(frames)
                    self.unscored_silence = min(SILENCE_CONTEXT_FRAMES, self.unscored_silence + len(frames))
                else:
                    if self.vad_stream is None:
                        self.vad_stream = vad.new_stream()
                    context = [np.zeros_like(frames[0].samples)] * self.unscored_silence
                    scored = await self.scheduler.vad_batches(vad).score(
                        self.vad_stream, [*context, *(f.samples for f in frames)]
                    )
                    probabilities = scored[len(context) :]
                    self.unscored_silence = 0
                    self.vad_heard_silence = probabilities[-1] < command.silence_below
                gated = [self.echo.gate(p, f.end_ms) for p, f in zip(probabilities, frames, strict=True)]
                self.report(
                    SpeechProbabilities(
                        tuple(
                            VadFrame(
                                p,
                                f.start_ms,
                                f.end_ms,
                                f.level_db,
                                assistant_audible=self.echo.audible(f.start_ms),
                            )
                            for p, f in zip(gated, frames, strict=True)
                        )
                    )
                )
                self._mark_speech(gated, frames, command.silence_below)
            except Exception:
                log.exception("input audio processing failed")

    def _mark_speech(self, gated: list[float], frames: list[AudioFrame], silence_below: float) -> None:
        """Tell the turn's streaming transcription where the VAD heard speech (as the turn
        detection judges it), so its pass at the pause starts at the pause."""
        streaming = self.streaming  # after the report: a turn that just started has one
        if streaming is None:
            return
        for probability, frame in zip(gated, frames, strict=True):
            end = round((frame.end_ms - self.streaming_start_ms) * streaming.sample_rate / 1000)
            if end > 0:
                streaming.mark_speech(end, probability >= silence_below)

    def _frames(self, command: InputAppended) -> list[AudioFrame]:
        if self.framer is None:
            rate = self.engines.vad.sample_rate if self.engines.vad is not None else 16_000
            size = self.engines.vad.frame_samples if self.engines.vad is not None else 512
            self.framer = AudioFramer(formats.INTERNAL_RATE, rate, size, origin_ms=command.start_ms)
        return self.framer.push(command.pcm) if len(command.pcm) else []

    async def aclose(self) -> None:
        self._drop_streaming()
        for streaming in self.turn_streams.values():
            streaming.cancel()
        self.turn_streams.clear()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.echo.close()
        close = getattr(self.vad_stream, "close", None)
        if close is not None:
            close()


async def _wait_for(event: threading.Event, seconds: float) -> bool:
    """Wait for a worker thread's event without holding a thread of the loop's pool."""
    for _ in range(max(1, round(seconds / TEXT_POLL_SECONDS))):
        if event.is_set():
            return True
        await asyncio.sleep(TEXT_POLL_SECONDS)
    return event.is_set()


def usage_for(seconds: float, text_tokens: int) -> dict[str, Any]:
    """Transcription usage in the ``tokens`` shape (agents-js requires the details)."""
    audio_tokens = max(1, int(seconds * 10)) if seconds > 0 else 0
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": text_tokens,
        "total_tokens": audio_tokens + text_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
    }


def _log_final(
    item_id: str, transcript: Transcript, detection: LanguageDetection | None, *, reused: bool
) -> None:
    """What a final transcript was decoded in and why (no words: transcripts are the caller's)."""
    if detection is None:
        heard = "no detection"
    else:
        heard = f"detected {detection.language} p={detection.probability:.2f} on {detection.speech_seconds:.1f} s of speech"
    log.info(
        "transcript of %s: %.1f s of audio, %d words in %s (%s)%s",
        item_id,
        transcript.input_audio_seconds,
        len(transcript.text.split()),
        transcript.language,
        heard,
        ", the pass at the pause" if reused else "",
    )
