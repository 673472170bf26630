"""Server-side playback for the media transports (WebRTC and SIP alike).

On WebSocket the client plays the audio and tells the server what was heard. On WebRTC and
SIP the server owns playback: a response's speech waits in a ``Playout`` and leaves it one
20 ms frame at a time, pulled by the transport at real-time pace, so the server knows exactly
how much of each answer the caller heard. ``MediaPlayback`` turns that into
``output_audio_buffer.started`` / ``.stopped`` / ``.cleared`` and, when queued audio is
dropped (barge-in, or the client's ``output_audio_buffer.clear``), into an ``OutputCleared``
result for the core, which stops the answer if it still runs and truncates it to the played
position. This is the only copy of that logic; the transports only pace and send frames.

Under ``semantic_vad`` the answer also *pauses* while speech of the caller awaits its verdict
(core/backchannels.py): ``MediaPlayback.hold`` stops the frames at once, so the caller hears
the assistant fall silent as soon as the VAD confirms their speech, not a second later when
the speech is known to be a bid for the turn. A backchannel releases it and the answer goes
on from the word it stopped at; an interruption clears it as any barge-in does.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..audio import formats
from ..core.events import CancelReason, OutputAudio, OutputCleared
from ..protocol import server_events as se

PcmAudio = npt.NDArray[np.int16]

FRAME_MS = 20
MAX_HOLD_FRAMES = 150
"""A hold whose verdict has not come after this many frames (3 s) plays on: the answer is
never left silent on a verdict that is late (a transcription pass on a very busy machine)."""


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
        self.last_played: list[tuple[str, str, PcmAudio]] = []
        """What the last ``pull`` took of each item: (response id, item id, audio)."""

    @property
    def queued_samples(self) -> int:
        return sum(segment.queued for segment in self._segments)

    @property
    def busy(self) -> bool:
        """A response is playing or has audio waiting to play."""
        return self.current is not None or any(segment.queued for segment in self._segments)

    @property
    def idle(self) -> bool:
        """Nothing is queued or playing: ``pull`` gives silence and changes nothing."""
        return self.current is None and not self._segments

    def queued_audio(self) -> PcmAudio:
        """Everything queued, in the order it will play."""
        chunks = [chunk for segment in self._segments for chunk in segment.chunks]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

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

    def pull(self, start: bool = True) -> tuple[PcmAudio, list[PlaybackEvent]]:
        """The next frame to play, and what started or stopped playing with it. With ``start``
        False no response begins in this frame: the frame ends where one would (silence after)."""
        frame = np.zeros(self.frame_samples, dtype=np.int16)
        filled = 0
        events: list[PlaybackEvent] = []
        self.last_played = []
        while filled < self.frame_samples:
            self._drain_finished(events)
            if not self._segments:
                break
            head = self._segments[0]
            if not head.queued:
                break  # underrun: the response is still being synthesized
            if head.response_id != self.current:
                if not start:
                    break
                self.current = head.response_id
                self._started.add(head.response_id)
                events.append(PlaybackStarted(head.response_id))
            taken = head.take(self.frame_samples - filled)
            frame[filled : filled + len(taken)] = taken
            self.last_played.append((head.response_id, head.item_id, taken))
            filled += len(taken)
            self._played[head.item_id] = self._played.get(head.item_id, 0) + len(taken)
        self._drain_finished(events)
        return frame, events

    def begin(self) -> PlaybackStarted | None:
        """Start the response whose audio is next, if one is waiting, without playing any of it:
        the next ``pull`` plays it (``pull(start=False)`` too). Called after a ``pull``, which
        has dropped what finished before it."""
        head = self._segments[0] if self._segments else None
        if head is None or not head.queued or head.response_id == self.current:
            return None
        self.current = head.response_id
        self._started.add(head.response_id)
        return PlaybackStarted(head.response_id)

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


class MediaPlayback:
    """The playback of one media session: what the runtime routes its speech into, and what
    the transport pulls frames from."""

    def __init__(
        self,
        publish: Callable[[se.ServerEvent], None],
        interrupts: Callable[[], bool],
        played: Callable[[str, str, PcmAudio], None] | None = None,
    ) -> None:
        self.playout = Playout()
        self.played = played
        """Told what of each answer each frame carried (the recording of what was heard)."""
        self.publish = publish
        """Sends an ``output_audio_buffer.*`` event (through the runtime, so observers see it)."""
        self.interrupts = interrupts
        """Whether speech of the caller interrupts the assistant (``interrupt_response``)."""
        self._announced = False
        """A response was reported started; its audio waits until the event is out."""
        self.holding = False
        """Frames are held back (silence goes out): the caller's speech awaits its verdict."""
        self._held_frames = 0
        self.on_release: Callable[[PcmAudio], None] | None = None
        """Told the audio still queued when a hold ends (it plays from now on)."""
        self.on_queued: Callable[[], None] | None = None
        """Told when audio is queued or a hold begins: a transport that stopped pulling frames
        while ``idle`` pulls again."""

    @property
    def idle(self) -> bool:
        """``pull`` gives silence and changes nothing until ``on_queued`` is told otherwise."""
        return not self.holding and not self._announced and self.playout.idle

    def hold(self) -> None:
        """Pause the answer where it is (nothing queued is dropped)."""
        self.holding = True
        self._held_frames = 0
        self._queued()

    def release(self) -> None:
        """Play on from where the answer was paused."""
        if not self.holding:
            return
        self.holding = False
        if self.on_release is not None:
            self.on_release(self.playout.queued_audio())

    def audio(self, out: OutputAudio) -> None:
        self.playout.push(out.response_id, out.item_id, out.pcm)
        self._queued()

    def _queued(self) -> None:
        if self.on_queued is not None:
            self.on_queued()

    def pull(self, events_out: Callable[[], bool] | None = None) -> PcmAudio:
        """The next frame to send (silence when nothing is queued).

        ``events_out`` says whether every event published so far has left for the client.
        With it, a response is started in a frame of its own and its audio is held until its
        ``output_audio_buffer.started`` is out: on WebRTC the events (data channel) and the
        audio (RTP) travel apart, and the data channel can hold events back for a while (its
        congestion window waits for the peer's acknowledgements), so audio pulled at once
        could reach the peer before the event that announces it.
        """
        if self.holding:
            self._held_frames += 1
            if self._held_frames <= MAX_HOLD_FRAMES:
                return np.zeros(self.playout.frame_samples, dtype=np.int16)
            self.release()
        if events_out is None:
            frame, events = self.playout.pull()
        elif self._announced and not events_out():
            return np.zeros(self.playout.frame_samples, dtype=np.int16)
        else:
            self._announced = False
            frame, events = self.playout.pull(start=False)
            started = self.playout.begin()
            if started is not None:
                events.append(started)
                self._announced = True
        if self.played is not None:
            for response_id, item_id, pcm in self.playout.last_played:
                self.played(response_id, item_id, pcm)
        self._report(events)
        return frame

    def finish(self, response_id: str) -> None:
        """Audio the runtime queued itself (the disclosure) is complete."""
        self._report(self.playout.finish(response_id))

    def after_event(self, event: se.ServerEvent) -> OutputCleared | None:
        """Follow the session's events: barge-in clears what is queued (the cleared event goes
        out right after ``speech_started``; the truncation it asks for is the caller's to
        give the core once the current batch of events is out), ``response.done`` lets the
        response stop once its audio has played."""
        if isinstance(event, se.InputAudioBufferSpeechStarted) and self.interrupts():
            return self.clear("turn_detected")
        if isinstance(event, se.ResponseDone):
            self._report(self.playout.finish(str(event.response.get("id") or "")))
        return None

    def clear(self, reason: CancelReason) -> OutputCleared | None:
        """Drop the queued audio (the next frame is silence); what was playing is reported."""
        cleared = self.playout.clear()
        if cleared is None:
            return None
        self.publish(se.OutputAudioBufferCleared(response_id=cleared.response_id))
        return OutputCleared(cleared.response_id, cleared.item_id, cleared.played_ms, reason)

    def _report(self, events: list[PlaybackEvent]) -> None:
        for event in events:
            if isinstance(event, PlaybackStarted):
                self.publish(se.OutputAudioBufferStarted(response_id=event.response_id))
            else:
                self.publish(se.OutputAudioBufferStopped(response_id=event.response_id))
