"""The WebRTC transport (aiortc): one peer connection per call.

Caller audio arrives as RTP (Opus, or G.711 when the client forces it) and goes to the
session as 24 kHz PCM; the answer asks a browser for Opus DTX (a packet every 400 ms while its
microphone hears nothing), and the time its stream skips reaches the session as silence; the
assistant's voice leaves as RTP at real-time pace, pulled frame by
frame from the session's playback (runtime/playback.py, which also reports
``output_audio_buffer.*`` and truncates interrupted answers), so no
``response.output_audio.delta`` goes to the client. JSON events flow over the ``oai-events``
data channel and every attached sideband WebSocket (transports/calls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import logging
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from av import AudioFrame, Packet

from ..audio import formats
from ..audio.opus import OpusFrameDecoder
from ..protocol.shape import GA_SHAPE, EventShape
from ..runtime.port import ClientOutput, SessionClient
from ..runtime.session_runtime import SessionRuntime
from .calls import CallSession, EventSink
from .media import FRAME_MS, FramePacer, PayloadEncoder, PcmAudio, RateConverter, StreamGaps, quiet
from .wire import EventWire, Frame

log = logging.getLogger("openrealtime.webrtc")

FRAME_S = FRAME_MS / 1000
IDLE_LOOK_S = 0.1
"""While a quiet caller's stream pauses (DTX) and the session is not timing a pause, how often
it is asked whether it has started to (the VAD may get there after the last packet)."""

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


DTX_KEEPALIVE_FRAMES = 20
"""While Opus silence is settled, one packet in this many is sent (400 ms, libopus's DTX)."""
DTX_HANGOVER_FRAMES = 10
"""Settled silent packets sent in full before that (200 ms, libopus's DTX hangover)."""


class PlayoutTrack(MediaStreamTrack):
    """The assistant's voice: one 20 ms packet per ``recv`` at real-time pace, silence when
    nothing is queued. The track encodes it itself (``PayloadEncoder``), so aiortc only packs
    it: no encoder thread hop per packet, and settled silence costs no encoding at all.

    Once Opus silence has settled and ``DTX_HANGOVER_FRAMES`` more of it have gone out (which
    also flushes the sound's tail out of a receiver's jitter buffer), the track sends only one
    packet every ``DTX_KEEPALIVE_FRAMES``, as Opus's discontinuous transmission does: the
    frames keep being pulled at real-time pace (playback's clock), the RTP timestamps jump
    over the frames not sent and the sequence numbers stay contiguous, which receivers take
    as DTX (comfort silence, not loss). An idle call so sends 2.5 packets a second, not 50.

    While the track sends DTX and ``idle`` says nothing waits to play (pulling would give
    silence and change nothing), it does not pull the frames between keepalives at all: it
    sleeps until the next keepalive is due or until ``wake`` (audio was queued) and counts
    the frames whose time passed meanwhile as not sent. The first frame of an answer leaves
    at the same frame boundary as when every frame was pulled, and an idle call's sender
    wakes 2.5 times a second instead of 50."""

    kind = "audio"

    def __init__(
        self,
        pull: Callable[[], PcmAudio],
        clock: Callable[[], float] = time.monotonic,
        idle: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self.pull = pull
        self.idle = idle
        self.pacer = FramePacer(clock)
        self.use_codec("audio/opus")
        self._pts = 0
        self._settled = 0
        self._unsent = 0
        self._wakeup: asyncio.Future[None] | None = None
        self.skipped = 0
        """Frames of settled silence not sent (DTX)."""
        self.dozed = 0
        """Of those, frames not even pulled (nothing waited to play)."""

    def use_codec(self, mime_type: str) -> None:
        """Send in the negotiated codec, at its own rate."""
        mime = mime_type.lower() if mime_type.lower() in CODEC_RATES else "audio/opus"
        self.rate = CODEC_RATES[mime]
        self._converter = RateConverter(formats.INTERNAL_RATE, self.rate)
        self._encoder = PayloadEncoder(mime, self._converter.silence)
        self._time_base = fractions.Fraction(1, self.rate)
        self._frame_length = self.rate * FRAME_MS // 1000

    def wake(self) -> None:
        """Audio to play was queued: stop sleeping through the DTX gap."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def recv(self) -> Packet[Any]:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if (
                self._settled > DTX_HANGOVER_FRAMES
                and self._unsent < DTX_KEEPALIVE_FRAMES - 1
                and self.idle()
            ):
                await self._doze()
                continue
            delay = self.pacer.next_delay()
            if delay > 0:
                await asyncio.sleep(delay)
            out = self._converter.convert(self.pull())
            payload = self._encoder.encode(out)
            pts = self._pts
            self._pts += len(out)
            self._settled = self._settled + 1 if self._encoder.settled_silence else 0
            if self._settled > DTX_HANGOVER_FRAMES and self._unsent < DTX_KEEPALIVE_FRAMES - 1:
                self._unsent += 1
                self.skipped += 1
                continue
            self._unsent = 0
            packet = Packet(payload)
            packet.pts = pts
            packet.time_base = self._time_base
            return packet

    async def _doze(self) -> None:
        """Sleep until the next keepalive is due or ``wake``; the frames whose time came
        meanwhile are silence not sent."""
        ahead = DTX_KEEPALIVE_FRAMES - 1 - self._unsent
        wait = self.pacer.due_at(self.pacer.frames + ahead) - self.pacer.clock()
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._wakeup = loop.create_future()
            timer = loop.call_later(wait, self.wake)
            try:
                await self._wakeup
            finally:
                timer.cancel()
                self._wakeup = None
        passed = min(ahead, self.pacer.frames_due())
        self.pacer.frames += passed
        self._pts += passed * self._frame_length
        self._unsent += passed
        self.skipped += passed
        self.dozed += passed


def _lower_receive_delay(receiver: RTCRtpReceiver) -> None:
    """aiortc holds 4 frames (80 ms) of inbound audio to absorb jitter before playback. The
    server never plays the caller's audio, it only listens, so one frame (the least that tells
    a frame is complete) is enough: end of speech reaches the VAD 60 ms sooner."""
    attribute = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, attribute, None), JitterBuffer):
        setattr(receiver, attribute, JitterBuffer(capacity=16, prefetch=1))


class _MonoOpusDecoder(OpusDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.codec.layout = "mono"


class _PcmDecoder:
    """A decoder giving ``(samples, rate, channels)`` pieces for one RTP frame: libopus
    straight to the session's 24 kHz mono when it loads (``audio/opus.py``), else aiortc's
    decoders through PyAV (Opus at 48 kHz mono, G.711 at 8 kHz)."""

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        opus = codec.mimeType.lower() == "audio/opus"
        self._opus = (
            OpusFrameDecoder(formats.INTERNAL_RATE) if opus and OpusFrameDecoder.available() else None
        )
        self._frames: Decoder | None = None
        if self._opus is None:
            self._frames = _MonoOpusDecoder() if opus else get_decoder(codec)

    def decode(self, encoded: JitterFrame) -> list[tuple[PcmAudio, int, int]]:
        """Raises ``ValueError`` or ``av.FFmpegError`` for a frame that does not decode."""
        if self._opus is not None:
            return [(self._opus.decode(encoded.data), self._opus.rate, 1)]
        assert self._frames is not None
        pieces = []
        for frame in self._frames.decode(encoded):
            if isinstance(frame, AudioFrame):
                samples, channels = frame_samples(frame)
                pieces.append((samples, frame.sample_rate, channels))
        return pieces


class _InlineDecoding:
    """Takes the place of an audio receiver's decoder queue: each complete frame is decoded on
    the event loop (tens of microseconds for 20 ms of Opus) and its samples handed straight to
    ``deliver``, instead of crossing to aiortc's decoder thread and back and then waking a
    reader task (two thread hand-offs and two task steps per packet). Opus is decoded straight
    to the session's 24 kHz mono (``_PcmDecoder``).

    A microphone that sends digital silence (muted, or a quiet line gated to zero) sends the
    same packet over and over. Once that packet has decoded to zeros ``SETTLE_FRAMES`` times
    in a row, the decoder's state no longer changes with it, so it is delivered as those
    zeros without decoding; any other packet is decoded as before.

    Time the stream skips (Opus DTX, a lost packet) is delivered as silence (``StreamGaps``):
    before the next frame when it arrives, and in real time after quiet frames while
    ``in_real_time`` says the caller's time counts (``SessionPort.input_in_real_time``), so a
    turn's end does not wait for the next DTX packet. The end of the stream still goes through the thread, which then ends the track as before.

    Quiet frames (no speech onset can be in them) are handed over ``HOLD_FRAMES`` at a time
    while ``idle`` says the session is idle (nothing heard, played or being answered): one pass
    of the session's per-chunk work (input buffer, VAD framing and its thread hop) per 100 ms
    instead of per packet. A frame with sound, the session leaving idle, a gap, the look timer
    or the call's end hands over what is held first, so nothing is lost or reordered; and no
    answer is placed on an input clock that lags by what is held."""

    SETTLE_FRAMES = 5
    HOLD_FRAMES = 5

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        thread_queue: queue.Queue[Any],
        deliver: Callable[[PcmAudio, int, int], None],
        in_real_time: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        idle: Callable[[], bool] = lambda: False,
    ) -> None:
        self.receiver = receiver
        self.thread_queue = thread_queue
        self.deliver = deliver
        self.in_real_time = in_real_time
        self.idle = idle
        self.clock = clock
        self._codec_name = ""
        self._decoder: _PcmDecoder | None = None
        self._gaps: StreamGaps | None = None
        self._rate = 0
        """The rate of the decoded samples (silence for gaps is delivered at it)."""
        self._zeros = np.zeros(0, dtype=np.int16)
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._silent_payload = b""
        self._silence: tuple[PcmAudio, int] | None = None
        self._same_silence = 0
        self._held: list[tuple[PcmAudio, int, int]] = []
        """Quiet frames not yet handed over (``HOLD_FRAMES``)."""
        self.skipped = 0
        """Packets of settled digital silence delivered without decoding."""

    def get(self) -> Any:
        """Where aiortc's decoder thread waits: it is given only the end of the stream."""
        return self.thread_queue.get()

    def put(self, task: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if task is None or self.receiver._track is None:
            self.thread_queue.put(task)
            return
        codec, encoded = task
        if codec.name != self._codec_name or self._decoder is None:
            self._decoder = _PcmDecoder(codec)
            self._gaps = StreamGaps(codec.clockRate)
            self._codec_name = codec.name
            self._silent_payload, self._silence, self._same_silence = b"", None, 0
        payload = encoded.data
        if (
            self._silence is not None
            and self._same_silence >= self.SETTLE_FRAMES
            and payload == self._silent_payload
        ):
            self.skipped += 1
            self._frame(encoded.timestamp, [(self._silence[0], self._silence[1], 1)], quiet=True)
            return
        try:
            pieces = self._decoder.decode(encoded)
        except (ValueError, av.FFmpegError):
            log.debug("undecodable %s frame", codec.name, exc_info=True)
            return
        if not pieces:
            return
        for samples, rate, channels in pieces:
            self._note_silence(payload, samples, rate, channels, len(pieces))
        self._frame(encoded.timestamp, pieces, quiet=all(quiet(samples) for samples, _, _ in pieces))

    def stop(self) -> None:
        """The call ended: what is held is handed over; no more silence in real time."""
        self._release()
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def skipped_seconds(self) -> float:
        """Time the caller's stream skipped (DTX, lost packets), given to the session as silence."""
        gaps = self._gaps
        return gaps.filled / gaps.clock_rate if gaps is not None else 0.0

    def _frame(self, timestamp: int, pieces: list[tuple[PcmAudio, int, int]], *, quiet: bool) -> None:
        """Deliver a decoded frame, after the silence for any time the stream skipped."""
        gaps = self._gaps
        assert gaps is not None
        rate = pieces[0][1]
        self._rate = rate
        frames = sum(len(samples) // max(1, channels) for samples, _, channels in pieces)
        skipped = gaps.arrived(timestamp, frames * gaps.clock_rate // rate, self.clock(), quiet=quiet)
        if skipped:
            self._deliver_silence(skipped)
        if quiet and len(self._held) + len(pieces) < self.HOLD_FRAMES and self.idle():
            self._held.extend(pieces)
        else:
            self._held.extend(pieces)
            self._release()
        self._arm(quiet)

    def _release(self) -> None:
        """Hand over the held frames, joined where they share a rate and layout."""
        held, self._held = self._held, []
        while held:
            _, rate, channels = held[0]
            run = 1
            while run < len(held) and held[run][1:] == (rate, channels):
                run += 1
            chunk = held[0][0] if run == 1 else np.concatenate([samples for samples, _, _ in held[:run]])
            self.deliver(chunk, rate, channels)
            held = held[run:]

    def _arm(self, quiet: bool) -> None:
        """After a quiet frame, look for a gap once the next frame is ``lag_s`` late (a timer
        that fires only when no packet came meanwhile); after sound, not at all."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if quiet and not self._stopped:
            gaps = self._gaps
            assert gaps is not None
            self._timer = asyncio.get_running_loop().call_later(FRAME_S + gaps.lag_s, self._fill_now)

    def _fill_now(self) -> None:
        """While the stream is quiet: silence in real time, every frame, as long as the input's
        time counts; otherwise only a look every ``IDLE_LOOK_S`` whether it has started to (an
        idle call is not given silence between its DTX packets, which bring it when they
        arrive)."""
        self._timer = None
        self._release()
        gaps = self._gaps
        if self._stopped or gaps is None or self.receiver._track is None or not gaps.quiet:
            return
        delay = IDLE_LOOK_S
        if self.in_real_time():
            due = gaps.due(self.clock())
            if due:
                self._deliver_silence(due)
            delay = FRAME_S
        self._timer = asyncio.get_running_loop().call_later(delay, self._fill_now)

    def _deliver_silence(self, rtp_units: int) -> None:
        gaps = self._gaps
        assert gaps is not None
        length = rtp_units * self._rate // gaps.clock_rate
        if length <= 0:
            return
        if len(self._zeros) != length:
            self._zeros = np.zeros(length, dtype=np.int16)
            self._zeros.flags.writeable = False
        self._release()
        self.deliver(self._zeros, self._rate, 1)

    def _note_silence(self, payload: bytes, samples: PcmAudio, rate: int, channels: int, count: int) -> None:
        if count != 1 or channels != 1 or samples.any():
            self._same_silence = 0
            return
        if (
            payload == self._silent_payload
            and self._silence is not None
            and len(self._silence[0]) == len(samples)
        ):
            self._same_silence += 1
            return
        zeros = np.zeros(len(samples), dtype=np.int16)
        zeros.flags.writeable = False
        self._silent_payload, self._silence, self._same_silence = payload, (zeros, rate), 1


def _decode_inline(
    receiver: RTCRtpReceiver,
    deliver: Callable[[PcmAudio, int, int], None],
    in_real_time: Callable[[], bool] = lambda: False,
    idle: Callable[[], bool] = lambda: False,
) -> _InlineDecoding | None:
    attribute = "_RTCRtpReceiver__decoder_queue"
    original = getattr(receiver, attribute, None)
    if not isinstance(original, queue.Queue):
        return None
    decoding = _InlineDecoding(receiver, original, deliver, in_real_time, idle=idle)
    setattr(receiver, attribute, decoding)
    _receive_directly(receiver, decoding)
    return decoding


def _ask_for_dtx(transceiver: Any) -> None:
    """``usedtx=1`` on Opus in the answer: a browser then sends a packet every 400 ms while its
    microphone hears nothing instead of one every 20 ms (RFC 7587; Chrome and Firefox honour
    it). The gaps are filled with silence on arrival (``StreamGaps``)."""
    for codec in getattr(transceiver, "_codecs", []):
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters["usedtx"] = 1


def _receive_directly(receiver: RTCRtpReceiver, decoding: _InlineDecoding) -> None:
    """Audio packets of a known codec go straight to the decoder as they arrive.

    An audio RTP packet is a whole frame, so the jitter buffer only ever held each packet
    until the next one arrived (20 ms, to see that the frame had ended); the server listens
    and plays nothing of the caller back, so it needs no buffer to play out from. The
    statistics aiortc keeps for its RTCP receiver reports are kept as before; a packet that
    arrives after a later one (reordered or duplicated) is dropped, as the buffer would have
    dropped it once past. Anything else (an unknown payload type, RTX, a stopped receiver)
    takes aiortc's own path."""
    handle = receiver._handle_rtp_packet
    codecs: dict[int, RTCRtpCodecParameters] | None = getattr(receiver, "_RTCRtpReceiver__codecs", None)
    streams: dict[int, StreamStatistics] | None = getattr(receiver, "_RTCRtpReceiver__remote_streams", None)
    if codecs is None or streams is None:
        return
    newest: dict[int, int] = {}

    async def handle_directly(packet: RtpPacket, arrival_time_ms: int) -> None:
        codec = codecs.get(packet.payload_type)
        if codec is None or not receiver._enabled or codec.mimeType.lower() not in CODEC_RATES:
            await handle(packet, arrival_time_ms)
            return
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        last = newest.get(packet.ssrc)
        if last is not None and not 0 < uint16_add(packet.sequence_number, -last) < 0x8000:
            return  # older than a packet already decoded
        newest[packet.ssrc] = packet.sequence_number
        if packet.payload:
            decoding.put((codec, JitterFrame(packet.payload, packet.timestamp)))

    receiver._handle_rtp_packet = handle_directly  # type: ignore[method-assign]


def frame_samples(frame: AudioFrame) -> tuple[PcmAudio, int]:
    """Interleaved int16 samples of a decoded frame and its channel count."""
    channels = len(frame.layout.channels)
    if frame.format.name == "s16":  # packed int16, what aiortc's decoders give: no copy
        plane = memoryview(frame.planes[0])
        return np.frombuffer(plane, dtype=np.int16, count=frame.samples * channels), channels
    array = frame.to_ndarray()
    if frame.format.is_planar:
        array = array.T
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == np.int16:
        return flat.astype(np.int16, copy=False), channels
    scaled = np.asarray(flat, dtype=np.float32) * 32768.0  # float sample formats
    return np.clip(scaled, -32768, 32767).astype(np.int16), channels


# ---------------------------------------------------------------- the call


class _DataChannelSink:
    """The ``oai-events`` data channel as an event sink of the call."""

    def __init__(self, channel: RTCDataChannel, wire: EventWire) -> None:
        self.channel = channel
        self.wire = wire

    def send(self, output: ClientOutput) -> None:
        if self.channel.readyState != "open":
            return
        for frame in self.wire.encode(output):
            try:
                self.channel.send(frame)
            except Exception:  # a channel closing under us: teardown follows
                log.debug("data channel send failed", exc_info=True)
                return

    async def close(self, code: int, reason: str) -> None:
        return None  # closed with the peer connection

    def all_out(self) -> bool:
        """Every message sent on the channel has been transmitted to the peer. aiortc's SCTP
        holds messages back (``bufferedAmount``, then its outbound queue) while its congestion
        window waits for the peer's acknowledgements, on a loaded peer for hundreds of ms."""
        if self.channel.readyState != "open":
            return True  # nothing more will go out: the audio need not wait
        if self.channel.bufferedAmount:
            return False
        return not getattr(self.channel.transport, "_outbound_queue", ())


RuntimeFactory = Callable[[SessionClient], SessionRuntime]
"""Builds the call's session runtime around the ``SessionClient`` its output goes to."""


class WebRTCCall:
    """One live WebRTC call: the peer connection, its session and sidebands."""

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
        self.session = CallSession(self._on_session_close)
        self.runtime = make_runtime(self.session)
        self.session.port = self.runtime
        self.on_ended = on_ended
        self.ice_hosts = ice_hosts
        self.track = PlayoutTrack(self.session.pull, clock, idle=lambda: self.session.playout_idle)
        self.session.wake_playout = self.track.wake
        self.channel: RTCDataChannel | None = None
        self.closed = False
        self.ended = asyncio.Event()
        self._channel_wire = EventWire(lambda: self.session.input_format, shape=shape)
        self._has_data_channel = False
        self._decoding: _InlineDecoding | None = None

    @property
    def started(self) -> bool:
        return self.session.accepting

    @property
    def input_format(self) -> str:
        return self.session.input_format

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
                self._decoding = _decode_inline(
                    audio[0].receiver,
                    self._caller_audio,
                    lambda: self.session.input_in_real_time,
                    idle=lambda: self.session.idle,
                )
                _ask_for_dtx(audio[0])
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        codecs = getattr(audio[0], "_codecs", []) if audio else []
        if codecs:
            self.track.use_codec(codecs[0].mimeType)
        self.session.spawn(self._connect_deadline(), "webrtc-connect-deadline")
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
            self.session.spawn(self.close(), "webrtc-close")

    # ---- session start and events

    def _start_session(self) -> None:
        if not self.closed:
            self.session.start()  # session.created

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label not in EVENTS_CHANNELS or self.channel is not None:
            return
        self.channel = channel
        sink = _DataChannelSink(channel, self._channel_wire)
        self.session.sinks.append(sink)
        self.session.events_out = sink.all_out  # answer audio never overtakes its started event
        channel.on("message", lambda frame: self.session.receive_frame(frame, self._channel_wire))
        channel.on("close", lambda: self.session.spawn(self.close(), "webrtc-close"))
        self._start_session()

    def receive_frame(self, frame: Frame, wire: EventWire) -> None:
        """A client event from a sideband socket."""
        if not self.closed:
            self.session.receive_frame(frame, wire)

    async def _on_session_close(self) -> None:
        """The session ended itself (fatal error, expiry): end the call after the last events."""
        channel = self.channel
        deadline = time.monotonic() + 1.0
        while channel is not None and channel.bufferedAmount and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.close()

    # ---- inbound audio

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.session.spawn(self._read_audio(track), "webrtc-audio-in")

    def _caller_audio(self, samples: PcmAudio, rate: int, channels: int) -> None:
        """Decoded caller audio (``_InlineDecoding``)."""
        if not self.closed:
            self.session.caller_audio(samples, rate, channels)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        """Frames that reach the track itself (when inline decoding could not be set up), and
        the track's end."""
        while not self.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, AudioFrame):
                samples, channels = frame_samples(frame)
                self.session.caller_audio(samples, frame.sample_rate, channels)

    # ---- sidebands and teardown

    async def attach(self, sink: EventSink) -> None:
        await self.session.attach(sink)

    def detach(self, sink: EventSink) -> None:
        self.session.detach(sink)

    async def close(self) -> None:
        """End the call: session, peer connection, sidebands, registry entry. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.on_ended(self)
        self.session.cancel_tasks()
        try:
            if self.started:
                await self.session.end_session()
        finally:
            self.track.stop()
            if self._decoding is not None:
                self._decoding.stop()
                log.info(
                    "call %s: the caller's stream skipped %.1f s (DTX, loss), heard as silence",
                    self.call_id,
                    self._decoding.skipped_seconds,
                )
            with contextlib.suppress(Exception):
                await self.pc.close()
            await self.session.close_sinks()
            self.ended.set()
