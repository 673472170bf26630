"""The WebRTC transport (aiortc): one peer connection per call.

Caller audio arrives as RTP (Opus, or G.711 when the client forces it) and is fed to the
session as input audio; the assistant's audio leaves as RTP at real-time pace from a server
side ``Playout``, so no ``response.output_audio.delta`` goes to the client. JSON events flow
over the ``oai-events`` data channel and every attached sideband WebSocket. The server
tracks playback: ``output_audio_buffer.started`` / ``.stopped`` / ``.cleared``, and on
barge-in it truncates the interrupted answer at the played position itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import fractions
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Literal, Protocol

import aioice.ice
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from ..audio import formats
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.shape import GA_SHAPE, EventShape
from ..runtime.session_runtime import SessionRuntime
from .media import (
    FramePacer,
    InboundAudio,
    PcmAudio,
    PlaybackCleared,
    PlaybackEvent,
    PlaybackStarted,
    Playout,
    RateConverter,
)

log = logging.getLogger("openrealtime.webrtc")

EVENTS_CHANNEL = "oai-events"
EVENTS_CHANNELS = frozenset({EVENTS_CHANNEL, "realtime-channel"})
"""Labels the events data channel comes with: OpenAI's, and the one Azure's samples use."""
CONNECT_TIMEOUT_S = 30.0
"""A call whose peer has not connected and started the session within this time is ended."""
CODEC_RATES = {"audio/opus": 48000, "audio/pcmu": 8000, "audio/pcma": 8000}

# ---------------------------------------------------------------- ICE host candidates

_ice_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "openrealtime_ice_addresses", default=None
)
_all_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _ice_addresses.get()
    return list(chosen) if chosen is not None else _all_host_addresses(use_ipv4, use_ipv6)


# aioice always skips loopback and offers every interface; a server bound to 127.0.0.1 must
# offer 127.0.0.1 only. The override is scoped by a context variable (see ``ice_addresses``).
aioice.ice.get_host_addresses = _host_addresses


def addresses_for_bind(host: str) -> tuple[str, ...] | None:
    """ICE host addresses for a server bound to ``host``: loopback stays loopback, a wildcard
    bind offers every interface (None), a specific address offers just that address."""
    if host in ("", "0.0.0.0", "::"):
        return None
    if host in ("localhost", "127.0.0.1"):
        return ("127.0.0.1",)
    return (host,)


@contextlib.contextmanager
def ice_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Gather host candidates only on ``addresses`` (None: all interfaces) in this context."""
    token = _ice_addresses.set(tuple(addresses) if addresses is not None else None)
    try:
        yield
    finally:
        _ice_addresses.reset(token)


def peer_configuration() -> RTCConfiguration:
    """No STUN/TURN: host candidates only, gathered before the answer is returned."""
    return RTCConfiguration(iceServers=[])


# ---------------------------------------------------------------- media tracks


class PlayoutTrack(MediaStreamTrack):
    """The assistant's voice: one 20 ms frame per ``recv`` at real-time pace, silence when
    the playout buffer is empty."""

    kind = "audio"

    def __init__(
        self,
        playout: Playout,
        on_events: Callable[[list[PlaybackEvent]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.playout = playout
        self.on_events = on_events
        self.pacer = FramePacer(clock)
        self.rate = CODEC_RATES["audio/opus"]
        self._converter = RateConverter(playout.rate, self.rate)
        self._pts = 0

    def use_codec(self, mime_type: str) -> None:
        """Send at the negotiated codec's own rate (no second resampling in the encoder)."""
        rate = CODEC_RATES.get(mime_type.lower(), CODEC_RATES["audio/opus"])
        if rate != self.rate:
            self.rate = rate
            self._converter = RateConverter(self.playout.rate, rate)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self.pacer.next_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm, events = self.playout.pull()
        if events:
            self.on_events(events)
        out = self._converter.convert(pcm)
        frame = AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += len(out)
        return frame


def _lower_receive_delay(receiver: RTCRtpReceiver) -> None:
    """aiortc holds 4 frames (80 ms) of inbound audio to absorb jitter before playback. The
    server never plays the caller's audio, it only listens, so one frame (the least that tells
    a frame is complete) is enough: end of speech reaches the VAD 60 ms sooner."""
    attribute = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, attribute, None), JitterBuffer):
        setattr(receiver, attribute, JitterBuffer(capacity=16, prefetch=1))


def frame_samples(frame: AudioFrame) -> tuple[PcmAudio, int]:
    """Interleaved int16 samples of a decoded frame and its channel count."""
    channels = len(frame.layout.channels)
    array = frame.to_ndarray()
    if frame.format.is_planar:
        array = array.T
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == np.int16:
        return flat.astype(np.int16, copy=False), channels
    scaled = np.asarray(flat, dtype=np.float32) * 32768.0  # float sample formats
    return np.clip(scaled, -32768, 32767).astype(np.int16), channels


# ---------------------------------------------------------------- the call


class EventSink(Protocol):
    """Something else that receives the call's server events (a sideband WebSocket)."""

    def send(self, event: se.ServerEvent) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


RuntimeFactory = Callable[
    [Callable[[se.ServerEvent], None], Callable[[int, str], Awaitable[None]]], SessionRuntime
]


class WebRTCCall:
    """One live WebRTC call: the peer connection, its session runtime, playout and sidebands."""

    def __init__(
        self,
        call_id: str,
        key_id: str,
        make_runtime: RuntimeFactory,
        *,
        on_ended: Callable[[WebRTCCall], None] = lambda _call: None,
        ice_hosts: Sequence[str] | None = ("127.0.0.1",),
        clock: Callable[[], float] = time.monotonic,
        shape: EventShape = GA_SHAPE,
    ) -> None:
        self.call_id = call_id
        self.shape = shape
        """What the data channel speaks (``protocol.shape``); sidebands always get GA events."""
        self.key_id = key_id
        self.pc = RTCPeerConnection(peer_configuration())
        self.runtime = make_runtime(self._on_session_event, self._on_session_close)
        self.on_ended = on_ended
        self.ice_hosts = ice_hosts
        self.playout = Playout()
        self.track = PlayoutTrack(self.playout, self._on_playback, clock)
        self.channel: RTCDataChannel | None = None
        self.sinks: list[EventSink] = []
        self.started = False
        self.closed = False
        self.ended = asyncio.Event()
        self._decoders: dict[str, formats.StreamDecoder] = {}
        self._last_audio_item: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffer_full_reported = False
        self._has_data_channel = False

    # ---- signalling

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return our answer with all ICE candidates in it.
        Raises ``ValueError`` for an offer that is not usable SDP."""
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        self._has_data_channel = "m=application" in offer_sdp
        with ice_addresses(self.ice_hosts):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if audio:
                pc.addTrack(self.track)
                _lower_receive_delay(audio[0].receiver)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        codecs = getattr(audio[0], "_codecs", []) if audio else []
        if codecs:
            self.track.use_codec(codecs[0].mimeType)
        self._spawn(self._connect_deadline(), "webrtc-connect-deadline")
        return pc.localDescription.sdp

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if self.pc.connectionState != "connected" or not self.started:
            log.info("call %s: peer did not connect (or open 'oai-events') in time", self.call_id)
            await self.close()

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._has_data_channel:
            self._start_session()
        elif state in ("failed", "closed"):
            self._spawn(self.close(), "webrtc-close")

    # ---- session start and events

    def _start_session(self) -> None:
        if self.started or self.closed:
            return
        self.started = True
        self.runtime.start()  # session.created

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label not in EVENTS_CHANNELS or self.channel is not None:
            return
        self.channel = channel
        channel.on("message", self._on_channel_frame)
        channel.on("close", lambda: self._spawn(self.close(), "webrtc-close"))
        self._start_session()

    def _on_channel_frame(self, frame: str | bytes) -> None:
        """A client event from the data channel, in the channel's shape."""
        if self.closed or not self.started:
            return
        self.shape.receive(frame, self.on_client_frame, self.runtime.fail)

    def on_client_frame(self, frame: str | bytes) -> None:
        """A client event (GA) from the data channel or a sideband socket."""
        if self.closed or not self.started:
            return
        if self._is_output_clear(frame):
            self.runtime.observers.client_event(self.runtime.info, "output_audio_buffer.clear")
            self._clear_output(by_client=True)
            return
        self.runtime.on_frame(frame)

    @staticmethod
    def _is_output_clear(frame: str | bytes) -> bool:
        """``output_audio_buffer.clear`` is the transport's to handle (it owns playback); a
        malformed one goes to the session, which reports the problem."""
        if b"output_audio_buffer.clear" not in (frame.encode() if isinstance(frame, str) else frame):
            return False
        try:
            return isinstance(ce.parse_client_event(frame), ce.OutputAudioBufferClear)
        except RealtimeError:
            return False

    def _publish(self, event: se.ServerEvent) -> None:
        """Send one event to the data channel and every sideband."""
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            try:
                for frame in self.shape.send(event):
                    channel.send(frame)
            except Exception:  # a channel closing under us: teardown follows
                log.debug("data channel send failed", exc_info=True)
        for sink in list(self.sinks):
            sink.send(event)

    def _publish_own(self, event: se.ServerEvent) -> None:
        """An event the transport itself produced (playback tracking)."""
        self.runtime.observers.server_event(self.runtime.info, event)
        self._publish(event)

    def _on_session_event(self, event: se.ServerEvent) -> None:
        """Every event of the session, in order: audio goes to playout, the rest to clients."""
        if isinstance(event, se.ResponseOutputAudioDelta):
            self._queue_audio(event)
            return
        self._publish(event)
        if isinstance(event, se.InputAudioBufferSpeechStarted) and self._interrupts():
            self._clear_output(by_client=False)
        elif isinstance(event, se.ResponseDone):
            rid = str(event.response.get("id") or "")
            decoder = self._decoders.pop(rid, None)
            if decoder is not None:
                item = self._last_audio_item.pop(rid, None)
                tail = decoder.flush()
                if item is not None and len(tail):
                    self.playout.push(rid, item, tail)
            self._on_playback(list(self.playout.finish(rid)))

    def _queue_audio(self, event: se.ResponseOutputAudioDelta) -> None:
        rid = event.response_id
        decoder = self._decoders.get(rid)
        if decoder is None:
            live = self.runtime.core.responses.get(rid)
            fmt = live.output_format if live is not None else self._output_format()
            decoder = self._decoders[rid] = formats.StreamDecoder(fmt)
        self._last_audio_item[rid] = event.item_id
        pcm = decoder.decode(base64.b64decode(event.delta))
        self.playout.push(rid, event.item_id, pcm)

    def _output_format(self) -> str:
        session = self.runtime.core.session
        audio = getattr(session.audio, "output", None)
        return str(audio.format.type) if audio is not None else "audio/pcm"

    def _interrupts(self) -> bool:
        detection = self.runtime.core.session.audio.input.turn_detection
        return detection is not None and bool(getattr(detection, "interrupt_response", False))

    def _on_playback(self, events: list[PlaybackEvent]) -> None:
        for event in events:
            if isinstance(event, PlaybackStarted):
                self._publish_own(se.OutputAudioBufferStarted(response_id=event.response_id))
            else:
                self._publish_own(se.OutputAudioBufferStopped(response_id=event.response_id))

    def _clear_output(self, *, by_client: bool) -> None:
        """Drop queued audio, report ``output_audio_buffer.cleared`` and truncate the answer
        to what was played. On barge-in this runs inside the session's event flush, so the
        truncation waits until that batch (the cancelled response's tail) has gone out."""
        cleared = self.playout.clear()
        if cleared is None:
            return
        self._decoders.pop(cleared.response_id, None)
        self._last_audio_item.pop(cleared.response_id, None)
        self._publish_own(se.OutputAudioBufferCleared(response_id=cleared.response_id))
        if by_client:
            self._truncate(cleared, "client_cancelled")
        else:
            asyncio.get_running_loop().call_soon(self._truncate, cleared, "turn_detected")

    def _truncate(
        self, cleared: PlaybackCleared, reason: Literal["client_cancelled", "turn_detected"]
    ) -> None:
        if self.closed:
            return
        core = self.runtime.core
        if cleared.response_id in core.responses:  # still generating: stop it first
            core.cancel_response(cleared.response_id, reason)
            self.runtime.flush()
        track = core.conversation.audio.get((cleared.item_id, 0))
        if track is None or cleared.item_id not in core.conversation or track.duration_ms == 0:
            return  # out-of-band answers are not in the conversation
        core.handle_event(
            ce.ConversationItemTruncate(
                type="conversation.item.truncate",
                item_id=cleared.item_id,
                content_index=0,
                audio_end_ms=min(cleared.played_ms, track.duration_ms),
            )
        )
        self.runtime.flush()

    async def _on_session_close(self, code: int, reason: str) -> None:
        """The session ended itself (fatal error, expiry): end the call after the last events."""
        channel = self.channel
        deadline = time.monotonic() + 1.0
        while channel is not None and channel.bufferedAmount and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._spawn(self.close(), "webrtc-close")

    # ---- inbound audio

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_audio(track), "webrtc-audio-in")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        inbound = InboundAudio()
        while not self.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not self.started or not isinstance(frame, AudioFrame):
                continue
            core = self.runtime.core
            samples, channels = frame_samples(frame)
            data = inbound.convert(samples, frame.sample_rate, channels, core.input_format)
            if core.append_media_audio(data):
                self._buffer_full_reported = False
            elif not self._buffer_full_reported:
                self._buffer_full_reported = True
                core.error(
                    RealtimeError(
                        "input_audio_buffer_full",
                        "The input audio buffer is full; commit or clear it to keep listening.",
                    )
                )
            self.runtime.flush()

    # ---- sidebands and teardown

    async def attach(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def detach(self, sink: EventSink) -> None:
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """End the call: session, peer connection, sidebands, registry entry. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.on_ended(self)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        try:
            if self.started:
                await self.runtime.aclose()
        finally:
            self.track.stop()
            with contextlib.suppress(Exception):
                await self.pc.close()
            for sink in list(self.sinks):
                with contextlib.suppress(Exception):
                    await sink.close(1000, "call ended")
            self.sinks.clear()
            self.ended.set()
