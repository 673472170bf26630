"""The session's own voice, kept out of what it hears.

A client without echo cancellation (a speakerphone, an app on laptop speakers) sends the answer
back into the input, some 50 to 250 ms late and a few dB down. The runtime knows exactly what
it sent, so :class:`EchoGuard` places every piece of output speech on the session's input
clock where the client is expected to play it (from the input clock's present position when it
is sent, after whatever is still queued: clients and the server's own playout play answers in
order), hands it to :class:`~openrealtime.audio.echo.EchoCanceller` as the far end, and cleans
the caller's audio before the VAD, the turn detector and the transcriber hear it. The
canceller's delay estimator finds the true echo path (network, jitter buffer, loudspeaker)
within :data:`MAX_DELAY_MS` of that placement.

The input clock counts the audio the client sent, so it stops while the client sends nothing
(muted while the answer plays, push-to-talk, a test waiting for ``response.done``, a phone's
silence suppression); the client's microphone time goes on. A gap longer than
:data:`PAUSE_MS` is therefore carried into the guard's own clock (the input clock plus every
pause so far): an answer sent during the pause plays from where the pause has reached, and
audio after it lands after the pause, not on top of an answer the client played meanwhile.

While playback could be echoing, a VAD frame's probability reaches the segmenter only when the
canceller's residual looks like a different talker (:meth:`EchoCanceller.gate`), so the
assistant's own voice never fires ``speech_started``, while a real caller still does (measured
in bench/echo_barge_in.py). A barge-in cuts the far end where it happened: the client stops
playing there.

``audio.input.noise_reduction`` chooses how hard to suppress
(:meth:`~openrealtime.audio.echo.EchoSettings.for_noise_reduction`); ``None`` (the default)
still cancels the server's own echo, which removes nothing of the caller. Without libspeexdsp
the guard is off (logged once) and audio passes untouched. Nothing runs while no answer can
be echoing (the learnt echo path is kept for the next one).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from itertools import groupby

import numpy as np

from ..audio.echo import EchoCanceller, EchoSettings, EchoUnavailable, NoiseReduction
from ..audio.resample import PRE_EMPHASIS, AudioFrame
from ..core.events import PcmAudio

log = logging.getLogger("openrealtime.echo")

OUTPUT_RATE = 24_000
MAX_DELAY_MS = 800
"""Longest echo lag behind the placement searched: the client's network, playout buffer and
loudspeaker, plus how late a busy server sees the caller's audio it places answers against."""
PAUSE_MS = 1000.0
"""A gap in the caller's stream (wall time beyond the audio it brought) longer than this is
the client not sending, not network jitter or a busy moment of the server."""
KEEP_OFFSETS_MS = 60_000.0
"""Pauses further back than this on the input clock are forgotten (their audio is long done)."""
_warned = False


class EchoGuard:
    """One session's echo canceller, far end and talker gate (not thread-safe: the session's
    event loop calls it)."""

    def __init__(self, sample_rate: int = 16_000) -> None:
        self.sample_rate = sample_rate
        self.mode: NoiseReduction = None
        self.canceller: EchoCanceller | None = None
        self.clock_ms = 0.0
        """The input clock's present position: the end of the caller audio received so far."""
        self.play_end_ms = 0.0
        """Where the output placed so far ends on the guard's clock (:meth:`at`)."""
        self.played_any = False
        self.offsets: list[tuple[float, float]] = [(0.0, 0.0)]
        """``(input_ms, offset_ms)``: from input time ``input_ms`` on, the guard's clock runs
        ``offset_ms`` ahead of the input clock (the pauses before it)."""
        self.arrived_at_ms: float | None = None
        """Wall time (ms) the last caller audio arrived."""
        self.caller_holds_turn = False
        """The caller barged in and their turn goes on (:meth:`barged_in`): the gate is open."""

    def configure(self, mode: NoiseReduction) -> None:
        """Follow ``audio.input.noise_reduction``; a change starts a fresh canceller."""
        if mode == self.mode:
            return
        self.mode = mode
        if self.canceller is not None:
            self.canceller.close()
            self.canceller = None

    def heard_until(self, end_ms: float, now_ms: float | None = None) -> None:
        """Caller audio up to ``end_ms`` on the input clock has arrived (at wall time
        ``now_ms``, when known: a long gap before it is a pause of the client's stream)."""
        if now_ms is not None and self.arrived_at_ms is not None and end_ms > self.clock_ms:
            pause = now_ms - self.arrived_at_ms - (end_ms - self.clock_ms)
            if pause > PAUSE_MS:
                offset = self.offsets[-1][1] + pause
                log.debug("input paused for %.0f ms before %.0f ms", pause, self.clock_ms)
                self.offsets.append((self.clock_ms, offset))
                while len(self.offsets) > 1 and self.offsets[1][0] < self.clock_ms - KEEP_OFFSETS_MS:
                    self.offsets.pop(0)  # audio that old is never cleaned again
        if now_ms is not None:
            self.arrived_at_ms = now_ms
        self.clock_ms = max(self.clock_ms, end_ms)

    def at(self, input_ms: float, end: bool = False) -> float:
        """Input time ``input_ms`` on the guard's clock (``end``: the end of audio before it,
        which a pause right there does not move)."""
        for since, offset in reversed(self.offsets):  # few: pauses of the last minute
            if input_ms > since - 1e-6 and not (end and input_ms < since + 1e-6):
                return input_ms + offset
        return input_ms

    def present_ms(self, now_ms: float | None = None) -> float:
        """The client's present on the guard's clock: the end of the audio received, or
        further on while its stream has been paused."""
        present = self.at(self.clock_ms, end=True)
        if now_ms is not None and self.arrived_at_ms is not None:
            idle = now_ms - self.arrived_at_ms
            if idle > PAUSE_MS:
                present += idle
        return present

    def played(self, pcm: PcmAudio, now_ms: float | None = None) -> None:
        """Output speech (24 kHz) handed to the client or the playout, in order."""
        if not len(pcm):
            return
        at_ms = max(self.present_ms(now_ms), self.play_end_ms)
        if at_ms > self.play_end_ms:
            log.debug("output placed at %.0f ms, %.0f ms after the last", at_ms, at_ms - self.play_end_ms)
        self.play_end_ms = at_ms + len(pcm) * 1000 / OUTPUT_RATE
        self.played_any = True
        canceller = self._ensure()
        if canceller is not None:
            canceller.play(pcm, OUTPUT_RATE, at_ms=at_ms)

    def stopped(self, now_ms: float | None = None) -> None:
        """Playback was cut now (barge-in, cleared): the rest of the answer will not be heard."""
        present = self.present_ms(now_ms)
        if self.play_end_ms > present:
            self.play_end_ms = present
            if self.canceller is not None:
                self.canceller.cut(present)

    def audible(self, start_ms: float) -> bool:
        """Whether output placed so far can still be echoing at input time ``start_ms``."""
        if not self.played_any:
            return False
        tail_ms = self.canceller.settings.tail_ms if self.canceller is not None else EchoSettings().tail_ms
        return self.at(start_ms) < self.play_end_ms + MAX_DELAY_MS + tail_ms

    def clean(self, frames: list[AudioFrame]) -> list[AudioFrame]:
        """The frames with the echo of the output removed (unchanged before any output)."""
        if len(self.offsets) > 1:
            # frames on both sides of a pause are two runs of audio on the guard's clock
            runs = [list(run) for _, run in groupby(frames, key=lambda f: self.at(f.start_ms) - f.start_ms)]
            if len(runs) > 1:
                return [f for run in runs for f in self._clean_run(run)]
        return self._clean_run(frames)

    def _clean_run(self, frames: list[AudioFrame]) -> list[AudioFrame]:
        canceller = self.canceller
        if canceller is None or not frames or not self.audible(frames[0].start_ms):
            if canceller is not None:
                canceller.end_run()
            return frames  # no answer can be echoing: nothing to do (the learnt path is kept)
        audio = np.concatenate([f.samples for f in frames])
        if audio.size % canceller.frame_samples:
            return frames
        cleaned = canceller.process(audio, self.at(frames[0].start_ms))
        out = []
        offset = 0
        for frame in frames:
            samples = cleaned[offset : offset + frame.samples.size]
            offset += frame.samples.size
            out.append(AudioFrame(samples, frame.start_ms, frame.end_ms, _level_db(samples)))
        return out

    def barged_in(self, now_ms: float | None = None) -> None:
        """The caller's speech started a turn over the output, which the client stops playing
        (:meth:`stopped`). Until :meth:`turn_over`, the turn is the caller's: the gate keeps
        echo from *starting* a turn, and the echo still arriving of what played before the
        cut (up to the longest lag and the room's tail) must not gate the caller's own words
        to silence and end their turn in the middle (a client that plays nothing back never
        rules a lag out while the caller talks, and a caller quieter than the answer fails the
        level check in their softer syllables)."""
        self.stopped(now_ms)
        self.caller_holds_turn = True

    def turn_over(self) -> None:
        """The caller's turn was committed or cleared: onsets are gated again."""
        self.caller_holds_turn = False

    def gate(self, probability: float, end_ms: float) -> float:
        """The frame's speech probability, or 0 while only the session's own voice is heard
        (unchanged while a caller who barged in holds the turn)."""
        if self.canceller is None or self.caller_holds_turn:
            return probability
        return self.canceller.gate(probability, self.at(end_ms, end=True))

    def close(self) -> None:
        if self.canceller is not None:
            self.canceller.close()
            self.canceller = None

    def _ensure(self) -> EchoCanceller | None:
        global _warned
        if self.canceller is None:
            try:
                settings = replace(EchoSettings.for_noise_reduction(self.mode), max_delay_ms=MAX_DELAY_MS)
                self.canceller = EchoCanceller(self.sample_rate, settings)
            except EchoUnavailable as error:
                if not _warned:
                    _warned = True
                    log.warning("echo cancellation is off: %s", error)
                return None
        return self.canceller


def _level_db(samples: np.ndarray) -> float:
    """The pre-emphasised level the framer gives a frame (see AudioFrame.level_db)."""
    x = samples.astype(np.float64)
    emphasised = np.empty_like(x)
    emphasised[0] = x[0]
    emphasised[1:] = x[1:] - PRE_EMPHASIS * x[:-1]
    return 10.0 * math.log10(float(np.mean(emphasised * emphasised)) + 1e-12)
