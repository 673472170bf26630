"""Audio at the edge of the media transports (WebRTC, SIP): real-time pacing of outgoing
frames, rate conversion to the codec's rate, and caller audio to the session's 24 kHz PCM.

What is played and when it was heard is the runtime's (runtime/playback.py): a transport
pulls 20 ms frames from its session at the pace ``FramePacer`` sets and sends them; SIP calls
all send on one ``MediaClock`` tick per event loop. Nothing here does network I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ..audio import formats
from ..audio.g711 import alaw_encode, ulaw_encode
from ..audio.opus import OpusFrameEncoder
from ..audio.resample import (
    DEFAULT_QUALITY,
    Quality,
    StreamingResampler,
    downmix_to_float32,
    float32_to_int16,
)

PcmAudio = npt.NDArray[np.int16]

log = logging.getLogger("openrealtime.media")

FRAME_MS = 20


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

    def due_at(self, frame: int) -> float:
        """When frame number ``frame`` (from the first, 0) is due on the clock."""
        origin = self._origin if self._origin is not None else self.clock()
        return origin + frame * self.frame_s

    def frames_due(self) -> int:
        """Frames whose time has come that ``next_delay`` has not handed out yet."""
        if self._origin is None:
            return 0
        return max(0, math.floor((self.clock() - self._origin) / self.frame_s) + 1 - self.frames)


class MediaClock:
    """One real-time 20 ms tick for the outgoing media of every call on an event loop.

    Each call's sender runs on the shared tick instead of sleeping on a timer of its own, so
    the loop wakes once per frame for all calls rather than once per frame per call. A sender
    that raises is logged and dropped (it would have ended its own loop the same way).
    """

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()

    def __init__(self, clock: Callable[[], float] = time.monotonic, frame_ms: int = FRAME_MS) -> None:
        self.clock = clock
        self.frame_ms = frame_ms
        self._senders: dict[int, Callable[[], None]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def shared(cls) -> MediaClock:
        """The clock of the running event loop."""
        loop = asyncio.get_running_loop()
        clock = cls._per_loop.get(loop)
        if clock is None:
            clock = cls._per_loop[loop] = cls()
        return clock

    def add(self, send: Callable[[], None]) -> Callable[[], None]:
        """Call ``send`` once per frame from the next tick on; returns what removes it."""
        key = self._next_id
        self._next_id += 1
        self._senders[key] = send
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="media-clock")

        def remove() -> None:
            self._senders.pop(key, None)

        return remove

    async def _run(self) -> None:
        pacer = FramePacer(self.clock, self.frame_ms)
        while self._senders:
            delay = pacer.next_delay()
            if delay > 0:
                await asyncio.sleep(delay)
            for key, send in list(self._senders.items()):
                try:
                    send()
                except Exception:
                    log.exception("media sender failed; it stops")
                    self._senders.pop(key, None)
        self._task = None


def _quality(in_rate: int, out_rate: int) -> Quality:
    """``LQ`` between 24 and 48 kHz: flat to ~11 kHz (all of speech) and ~1 ms of resampler
    delay instead of ~30 ms with ``HQ``; ``HQ`` elsewhere (its roll-off matters at 8 kHz)."""
    return "LQ" if {in_rate, out_rate} == {formats.INTERNAL_RATE, 48000} else DEFAULT_QUALITY


class RateConverter:
    """Mono int16 at one rate → another, in exact ``frame`` sized pieces.

    Resampler latency is absorbed by a small FIFO. The converter starts as if two seconds of
    silence had already gone through it, so the FIFO holds all the lead the resampler's
    bursts will ever need and never runs dry mid-stream (a dry FIFO would insert a gap into
    speech). Once the resampler and the FIFO hold nothing but silence, a silent input frame
    gives ``silence`` without resampling: the output is the same, sample for sample, because
    the resampler is linear and time-invariant and every frame is a whole number of periods
    of the rate ratio.
    """

    WARMUP_FRAMES = 100
    """Silent frames run through at start; the FIFO's lead settles well within them."""
    SETTLE_FRAMES = 10
    """Silent input frames after which nothing of the last sound is left in the resampler."""

    def __init__(self, in_rate: int, out_rate: int, frame_ms: int = FRAME_MS) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.in_samples = in_rate * frame_ms // 1000
        self.frame_samples = out_rate * frame_ms // 1000
        self.silence: PcmAudio = np.zeros(self.frame_samples, dtype=np.int16)
        """The frame a silent input gives on the fast path (shared: never written to)."""
        self.silence.flags.writeable = False
        self._resampler = (
            StreamingResampler(in_rate, out_rate, np.int16, _quality(in_rate, out_rate))
            if in_rate != out_rate
            else None
        )
        self._fifo = np.zeros(0, dtype=np.int16)
        self._quiet_frames = 0
        if self._resampler is not None:
            quiet = np.zeros(self.in_samples, dtype=np.int16)
            for _ in range(self.WARMUP_FRAMES):
                self._resample(quiet)

    def convert(self, pcm: PcmAudio) -> PcmAudio:
        """One frame at ``out_rate`` for one frame of input."""
        if self._resampler is None:
            return pcm
        if pcm.any():
            self._quiet_frames = 0
        elif self._quiet_frames >= self.SETTLE_FRAMES and len(pcm) == self.in_samples:
            return self.silence
        else:
            self._quiet_frames += 1
        out = self._resample(pcm)
        if self._quiet_frames >= self.SETTLE_FRAMES and self._fifo.any():
            self._quiet_frames = 0  # still ringing out: keep resampling
        return out

    def _resample(self, pcm: PcmAudio) -> PcmAudio:
        assert self._resampler is not None
        released = self._resampler.process(pcm)
        fifo = np.concatenate([self._fifo, released]) if len(released) else self._fifo
        if len(fifo) < self.frame_samples:
            fifo = np.concatenate([np.zeros(self.frame_samples - len(fifo), dtype=np.int16), fifo])
        out, self._fifo = fifo[: self.frame_samples], fifo[self.frame_samples :]
        return out


class InboundAudio:
    """Caller audio from a media transport (any rate, mono or interleaved channels) → 24 kHz
    mono PCM, continuous across packets; empty while the resampler holds the audio back.

    Digital silence (a muted microphone) is not resampled once the resampler holds nothing
    else (``SETTLE_FRAMES`` silent packets): each silent packet gives its length of zeros at
    24 kHz. What the resampler still holds is zeros and comes out when sound returns, so the
    stream is the same, sample for sample; only how it is cut into pieces differs."""

    SETTLE_FRAMES = 10

    def __init__(self) -> None:
        self._rate = 0
        self._resampler: StreamingResampler | None = None
        self._quiet_frames = 0
        self._zeros = _EMPTY

    def convert(self, samples: PcmAudio, rate: int, channels: int) -> PcmAudio:
        if rate != self._rate:
            self._rate = rate
            self._quiet_frames = 0
            self._resampler = (
                StreamingResampler(
                    rate, formats.INTERNAL_RATE, np.float32, _quality(rate, formats.INTERNAL_RATE)
                )
                if rate != formats.INTERNAL_RATE
                else None
            )
        if self._resampler is None:
            if channels <= 1:
                return np.asarray(samples, dtype=np.int16)
            return float32_to_int16(downmix_to_float32(samples, channels))
        if samples.any():
            self._quiet_frames = 0
        else:
            frames = len(samples) // max(1, channels)
            if self._quiet_frames >= self.SETTLE_FRAMES and (frames * formats.INTERNAL_RATE) % rate == 0:
                return self._silence(frames * formats.INTERNAL_RATE // rate)
            self._quiet_frames += 1
        out = self._resampler.process(downmix_to_float32(samples, channels))
        return float32_to_int16(out) if len(out) else _EMPTY

    def _silence(self, length: int) -> PcmAudio:
        if len(self._zeros) != length:
            self._zeros = np.zeros(length, dtype=np.int16)
            self._zeros.flags.writeable = False
        return self._zeros


MAX_GAP_FILL_MS = 1000
"""A gap longer than this found when the next packet arrives is the stream paused (a track
removed, a call on hold), not quiet: it is not filled then (the echo guard sees a pause)."""
QUIET_PEAK = 1000
"""A frame whose peak stays below this (about -30 dBFS) may be followed by DTX: the sender only
stops sending once its own voice detection has heard no speech for a while."""


def quiet(pcm: PcmAudio) -> bool:
    """Whether a decoded frame's peak stays below ``QUIET_PEAK`` (``StreamGaps``' ``quiet``)."""
    return not len(pcm) or max(int(pcm.max()), -int(pcm.min())) < QUIET_PEAK


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value >= 0x80000000 else value


class StreamGaps:
    """Keeps the session's input clock on the caller's media clock where the stream skips time.

    A caller that uses Opus DTX (browsers do when the answer's SDP says ``usedtx=1``) sends a
    packet every 400 ms while quiet instead of every 20 ms, and the RTP timestamp of the next
    packet jumps; a lost packet or a phone's silence suppression skips time the same way. The
    session counts time by the audio it is given (the VAD's silence before ``speech_stopped``,
    the echo guard's placement of answers), so each skipped stretch is given as silence:

    * :meth:`arrived`: the silence due before a frame (the skipped RTP time), given when the
      frame arrives;
    * :meth:`due`: the silence due *now*, while the stream has gone quiet and no packet has
      come for ``lag_ms`` beyond the next frame's time: a turn's end must not wait for the next
      DTX packet (transports ask only while the caller's time counts,
      ``SessionPort.input_in_real_time``, so an idle DTX call is not woken every 20 ms). A
      packet that arrives for time already filled is still given whole (nothing the caller
      said is dropped): the input clock then runs that much ahead until the next gap.

    Times are in RTP units of ``clock_rate`` (timestamps wrap at 2**32); sans-I/O, the caller
    passes its clock.
    """

    def __init__(self, clock_rate: int, *, lag_ms: float = 40.0) -> None:
        self.clock_rate = clock_rate
        self.lag_s = lag_ms / 1000
        self.frame = clock_rate * FRAME_MS // 1000
        self.max_gap = clock_rate * MAX_GAP_FILL_MS // 1000
        self.position: int | None = None
        """RTP time up to which audio or silence went to the session."""
        self._last_end = 0
        self._last_arrival = 0.0
        self.quiet = False
        """The last frame was quiet: a gap after it may be DTX."""
        self.filled = 0
        """RTP units of silence given in all (for tests and logs)."""

    def arrived(self, timestamp: int, duration: int, now: float, *, quiet: bool) -> int:
        """A frame of ``duration`` RTP units at ``timestamp`` arrived at ``now`` (seconds):
        the RTP units of silence to give before it."""
        fill = 0
        if self.position is None:
            self.position = timestamp
        gap = _signed32(timestamp - self.position)
        if 0 < gap <= self.max_gap:
            fill = gap
        elif gap > self.max_gap or gap < -self.max_gap:
            self.position = timestamp  # a pause, or a new timeline: start again from here
        self.position = (self.position + fill + duration) & 0xFFFFFFFF
        self._last_end = (timestamp + duration) & 0xFFFFFFFF
        self._last_arrival = now
        self.quiet = quiet
        self.filled += fill
        return fill

    def due(self, now: float) -> int:
        """RTP units of silence to give now (whole frames; 0 while packets keep coming or after
        a frame with sound). Asked for while the caller's time counts, it goes on however long
        the stream stays away: a phone's silence suppression may send nothing until the next
        word, and the turn's end must not wait for it."""
        if self.position is None or not self.quiet:
            return 0
        elapsed = now - self._last_arrival - self.lag_s
        if elapsed <= 0:
            return 0
        expected = (self._last_end + int(elapsed * self.clock_rate)) & 0xFFFFFFFF
        fill = _signed32(expected - self.position) // self.frame * self.frame
        if fill <= 0:
            return 0
        self.position = (self.position + fill) & 0xFFFFFFFF
        self.filled += fill
        return fill


class PayloadEncoder:
    """Frames at the codec's rate → RTP payloads: G.711 (``PCMU``/``PCMA``) or Opus.

    ``silence`` is the converter's shared silent frame: for G.711 it is encoded once; Opus
    settles on its own silent packet (``audio/opus.py``).
    """

    def __init__(self, codec: str, silence: PcmAudio) -> None:
        name = codec.lower().removeprefix("audio/")
        self.silence = silence
        self._opus = OpusFrameEncoder() if name == "opus" else None
        self._g711 = alaw_encode if name == "pcma" else ulaw_encode
        self._silent_payload = bytes(self._g711(silence))

    @property
    def settled_silence(self) -> bool:
        """The last Opus frame was settled silence: a packet the receiver may do without
        (Opus DTX). G.711 has no such notion here and always says False."""
        return self._opus is not None and self._opus.settled

    def encode(self, frame: PcmAudio) -> bytes:
        if self._opus is not None:
            return self._opus.encode(frame)
        if frame is self.silence:
            return self._silent_payload
        return bytes(self._g711(frame))


_EMPTY: PcmAudio = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False
