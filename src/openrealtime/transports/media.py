"""Server-side playout of assistant audio for media transports (WebRTC, SIP).

On WebSocket the client plays the audio and tells the server what was heard. On WebRTC and
SIP the server owns playback: audio waits in a ``Playout`` buffer and leaves it one frame
at a time at real-time pace, so the server knows exactly how much of each answer the caller
has heard. That drives ``output_audio_buffer.started`` / ``.stopped`` / ``.cleared`` and the
truncation of an interrupted answer at the played position. Nothing here does I/O or reads
a clock of its own; the transport pulls frames and passes a clock to ``FramePacer``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..audio import formats
from ..audio.g711 import alaw_encode, ulaw_encode
from ..audio.resample import DEFAULT_QUALITY, Quality, StreamingResampler

PcmAudio = npt.NDArray[np.int16]

FRAME_MS = 20
_G711 = {"audio/pcmu": ulaw_encode, "audio/pcma": alaw_encode}


@dataclass(frozen=True)
class PlaybackStarted:
    """The first sample of a response's audio left the buffer."""

    response_id: str


@dataclass(frozen=True)
class PlaybackStopped:
    """A finished response's audio has fully left the buffer."""

    response_id: str


@dataclass(frozen=True)
class PlaybackCleared:
    """Queued audio was dropped; ``played_ms`` of ``item_id`` had been played by then."""

    response_id: str
    item_id: str
    played_ms: int


PlaybackEvent = PlaybackStarted | PlaybackStopped


@dataclass
class _Segment:
    """The queued audio of one output item."""

    response_id: str
    item_id: str
    chunks: deque[PcmAudio] = field(default_factory=deque)
    queued: int = 0

    def take(self, n: int) -> PcmAudio:
        parts: list[PcmAudio] = []
        while n > 0 and self.chunks:
            head = self.chunks[0]
            if len(head) <= n:
                parts.append(self.chunks.popleft())
                n -= len(head)
            else:
                parts.append(head[:n])
                self.chunks[0] = head[n:]
                n = 0
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        self.queued -= len(out)
        return out


class Playout:
    """Assistant audio (mono int16 at ``rate``) waiting to be played, in arrival order.

    ``push`` adds audio of an output item; ``finish`` says a response will add no more;
    ``pull`` hands out exactly one frame (silence where nothing is queued) and reports when a
    response starts and stops playing; ``clear`` drops everything queued (barge-in).
    """

    def __init__(self, rate: int = formats.INTERNAL_RATE, frame_ms: int = FRAME_MS) -> None:
        self.rate = rate
        self.frame_samples = rate * frame_ms // 1000
        self._segments: deque[_Segment] = deque()
        self._started: set[str] = set()
        self._finished: set[str] = set()
        self._dropped: set[str] = set()
        self._played: dict[str, int] = {}  # item_id -> samples played
        self.current: str | None = None  # response playing (started, not stopped or cleared)

    @property
    def queued_samples(self) -> int:
        return sum(segment.queued for segment in self._segments)

    @property
    def busy(self) -> bool:
        """A response is playing or has audio waiting to play."""
        return self.current is not None or any(segment.queued for segment in self._segments)

    def played_ms(self, item_id: str) -> int:
        return self._played.get(item_id, 0) * 1000 // self.rate

    def push(self, response_id: str, item_id: str, pcm: PcmAudio) -> None:
        if response_id in self._dropped or response_id in self._finished or not len(pcm):
            return
        tail = self._segments[-1] if self._segments else None
        if tail is None or tail.item_id != item_id:
            tail = _Segment(response_id, item_id)
            self._segments.append(tail)
        tail.chunks.append(np.asarray(pcm, dtype=np.int16))
        tail.queued += len(pcm)

    def finish(self, response_id: str) -> list[PlaybackEvent]:
        """The response is done: it stops once its queued audio has played (maybe now)."""
        self._finished.add(response_id)
        events: list[PlaybackEvent] = []
        self._drain_finished(events)
        return events

    def pull(self) -> tuple[PcmAudio, list[PlaybackEvent]]:
        """The next frame to play, and what started or stopped playing with it."""
        frame = np.zeros(self.frame_samples, dtype=np.int16)
        filled = 0
        events: list[PlaybackEvent] = []
        while filled < self.frame_samples:
            self._drain_finished(events)
            if not self._segments:
                break
            head = self._segments[0]
            if not head.queued:
                break  # underrun: the response is still being synthesized
            if head.response_id != self.current:
                self.current = head.response_id
                self._started.add(head.response_id)
                events.append(PlaybackStarted(head.response_id))
            taken = head.take(self.frame_samples - filled)
            frame[filled : filled + len(taken)] = taken
            filled += len(taken)
            self._played[head.item_id] = self._played.get(head.item_id, 0) + len(taken)
        self._drain_finished(events)
        return frame, events

    def clear(self) -> PlaybackCleared | None:
        """Drop all queued audio; what was playing (or about to) is reported, not stopped."""
        target = self._segments[0] if self._segments else None
        response_id = self.current or (target.response_id if target else None)
        item_id = target.item_id if target and target.response_id == response_id else None
        if item_id is None and response_id is not None:
            item_id = next((i for i in reversed(self._played) if self._played[i]), None)
        for segment in self._segments:
            self._dropped.add(segment.response_id)
        if response_id is not None:
            self._dropped.add(response_id)
        self._segments.clear()
        self.current = None
        if response_id is None or item_id is None:
            return None
        return PlaybackCleared(response_id, item_id, self.played_ms(item_id))

    def _drain_finished(self, events: list[PlaybackEvent]) -> None:
        """Pop emptied segments that can get no more audio; report responses that stopped."""
        while self._segments and not self._segments[0].queued:
            head = self._segments[0]
            later_same = any(s.response_id == head.response_id for s in list(self._segments)[1:])
            if head.response_id not in self._finished and not later_same:
                return
            self._segments.popleft()
            if not any(s.response_id == head.response_id for s in self._segments):
                self._stop(head.response_id, events)
        current = self.current
        if current in self._finished and not any(s.response_id == current for s in self._segments):
            assert current is not None
            self._stop(current, events)

    def _stop(self, response_id: str, events: list[PlaybackEvent]) -> None:
        if response_id in self._started and response_id not in self._dropped:
            events.append(PlaybackStopped(response_id))
            self._dropped.add(response_id)  # reported once
        if self.current == response_id:
            self.current = None


class FramePacer:
    """Real-time pacing of fixed-length frames against ``clock`` (seconds).

    ``next_delay`` says how long to wait before the next frame is due. A sender that fell
    more than ``max_lag_ms`` behind (a stalled event loop) resynchronises instead of bursting.
    """

    def __init__(self, clock: Callable[[], float], frame_ms: int = FRAME_MS, max_lag_ms: int = 200) -> None:
        self.clock = clock
        self.frame_s = frame_ms / 1000
        self.max_lag_s = max_lag_ms / 1000
        self._origin: float | None = None
        self.frames = 0

    def next_delay(self) -> float:
        now = self.clock()
        if self._origin is None:
            self._origin = now
        due = self._origin + self.frames * self.frame_s
        if now - due > self.max_lag_s:
            self._origin = now - self.frames * self.frame_s
            due = now
        self.frames += 1
        return max(0.0, due - now)


def _quality(in_rate: int, out_rate: int) -> Quality:
    """``LQ`` between 24 and 48 kHz: flat to ~11 kHz (all of speech) and ~1 ms of resampler
    delay instead of ~30 ms with ``HQ``; ``HQ`` elsewhere (its roll-off matters at 8 kHz)."""
    return "LQ" if {in_rate, out_rate} == {formats.INTERNAL_RATE, 48000} else DEFAULT_QUALITY


class RateConverter:
    """Mono int16 at one rate → another, in exact ``frame`` sized pieces (resampler latency is
    absorbed by a small FIFO that starts with silence)."""

    def __init__(self, in_rate: int, out_rate: int, frame_ms: int = FRAME_MS) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.frame_samples = out_rate * frame_ms // 1000
        self._resampler = (
            StreamingResampler(in_rate, out_rate, np.int16, _quality(in_rate, out_rate))
            if in_rate != out_rate
            else None
        )
        self._fifo = np.zeros(0, dtype=np.int16)

    def convert(self, pcm: PcmAudio) -> PcmAudio:
        """One frame at ``out_rate`` for one frame of input."""
        if self._resampler is None:
            return pcm
        self._fifo = np.concatenate([self._fifo, np.asarray(self._resampler.process(pcm), dtype=np.int16)])
        if len(self._fifo) < self.frame_samples:
            pad = np.zeros(self.frame_samples - len(self._fifo), dtype=np.int16)
            self._fifo = np.concatenate([pad, self._fifo])
        out, self._fifo = self._fifo[: self.frame_samples], self._fifo[self.frame_samples :]
        return out


class InboundAudio:
    """Caller audio from a media transport (any rate, mono or interleaved channels) → the
    session's input format, continuous across packets."""

    def __init__(self) -> None:
        self._rate = 0
        self._resampler: StreamingResampler | None = None
        self._format = ""
        self._encoder: formats.StreamEncoder | None = None

    def convert(self, samples: PcmAudio, rate: int, channels: int, input_format: str) -> bytes:
        mono = samples if channels <= 1 else _downmix(samples, channels)
        if input_format in _G711 and rate == formats.sample_rate(input_format):
            return bytes(_G711[input_format](mono))  # telephone audio into a G.711 session
        if rate != self._rate:
            self._rate = rate
            self._resampler = (
                StreamingResampler(
                    rate, formats.INTERNAL_RATE, np.int16, _quality(rate, formats.INTERNAL_RATE)
                )
                if rate != formats.INTERNAL_RATE
                else None
            )
        pcm24 = mono if self._resampler is None else np.asarray(self._resampler.process(mono), np.int16)
        if input_format != self._format:
            self._format = input_format
            self._encoder = formats.StreamEncoder(input_format)
        assert self._encoder is not None
        return self._encoder.encode(pcm24)


def _downmix(samples: PcmAudio, channels: int) -> PcmAudio:
    usable = len(samples) // channels * channels
    frames = samples[:usable].reshape(-1, channels).astype(np.int32)
    mixed: PcmAudio = (frames.sum(axis=1) // channels).astype(np.int16)
    return mixed
