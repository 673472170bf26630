"""A WebRTC caller built on aiortc, the way a browser talks to ``POST /v1/realtime/calls``:
a microphone track that plays recorded speech at real-time pace (silence otherwise), the
``oai-events`` data channel, and a recorder of the audio the server plays back."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, AudioResampler
from av.frame import Frame
from av.packet import Packet

from openrealtime.transports.media import FramePacer
from openrealtime.transports.webrtc import frame_samples, ice_addresses, peer_configuration
from tests.support import ServerProcess, validate_server_event

RATE = 24000
FRAME = RATE // 50  # 20 ms


class Microphone(MediaStreamTrack):
    """Sends queued 24 kHz speech at real-time pace, silence when nothing is queued, and
    notes when each queued clip's marked sample left."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pending = np.zeros(0, dtype=np.int16)
        self.pacer = FramePacer(time.monotonic)
        self.pts = 0
        self.marks: list[tuple[int, asyncio.Future[float]]] = []

    def play(self, pcm24: np.ndarray, mark_at: int | None = None) -> asyncio.Future[float]:
        """Queue ``pcm24``; the future resolves (monotonic time) when sample ``mark_at`` (default:
        the last one) has been sent."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        offset = len(self.pending) + (len(pcm24) - 1 if mark_at is None else mark_at)
        self.marks.append((offset, future))
        self.pending = np.concatenate([self.pending, pcm24.astype(np.int16)])
        return future

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self.pacer.next_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = self.pending[:FRAME]
        self.pending = self.pending[FRAME:]
        now = time.monotonic()
        kept = []
        for offset, future in self.marks:
            if offset < FRAME and not future.done():
                future.set_result(now)
            elif offset >= FRAME:
                kept.append((offset - FRAME, future))
        self.marks = kept
        out = np.zeros(FRAME, dtype=np.int16)
        out[: len(chunk)] = chunk
        frame = AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += FRAME
        return frame


class BrowserOpusEncoder(Encoder):
    """Opus as a browser sends it when the answer asks for ``usedtx=1``: libopus at 48 kHz
    mono, 32 kb/s, VoIP, with DTX; a frame libopus marks as DTX (two bytes or fewer) is not
    sent, so while the microphone hears nothing a packet leaves every 400 ms and the RTP
    timestamps jump (WebRTC's rule for Opus DTX)."""

    FRAME = 960
    DTX_BYTES = 2

    def __init__(self) -> None:
        from openrealtime.audio.opus import _libopus

        lib = _libopus()
        assert lib is not None, "libopus is needed for a DTX caller"
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_encode.restype = ctypes.c_int32
        lib.opus_encode.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int16),
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int32,
        ]
        lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
        error = ctypes.c_int(0)
        self._lib = lib
        self._state = lib.opus_encoder_create(48000, 1, 2048, ctypes.byref(error))  # OPUS_APPLICATION_VOIP
        assert error.value == 0 and self._state
        assert (
            lib.opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(4002), ctypes.c_int(32000)) == 0
        )
        assert lib.opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(4016), ctypes.c_int(1)) == 0
        self._resampler = AudioResampler(format="s16", layout="mono", rate=48000, frame_size=self.FRAME)
        self._out = ctypes.create_string_buffer(4000)
        self._timestamp = 0
        self.sent = 0
        self.suppressed = 0

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, AudioFrame)
        payloads: list[bytes] = []
        first: int | None = None
        for piece in self._resampler.resample(frame):
            pcm = np.ascontiguousarray(piece.to_ndarray().reshape(-1), dtype=np.int16)
            size = self._lib.opus_encode(
                self._state, pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), self.FRAME, self._out, 4000
            )
            assert size > 0, size
            timestamp, self._timestamp = self._timestamp, self._timestamp + self.FRAME
            if size <= self.DTX_BYTES:
                self.suppressed += 1
                continue
            self.sent += 1
            if first is None:
                first = timestamp
            payloads.append(self._out.raw[:size])
        return payloads, first if first is not None else self._timestamp

    def pack(self, packet: Packet) -> tuple[list[bytes], int]:
        raise NotImplementedError

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            self._lib.opus_encoder_destroy(self._state)
            self._state = None


@dataclass
class Heard:
    """One frame of received audio: arrival (monotonic s), duration (s) and RMS level."""

    at: float
    seconds: float
    rms: float
    samples: np.ndarray | None = None
    """The frame's mono samples at ``rate``."""
    rate: int = 0


@dataclass
class Caller:
    """One call from the client side. ``events`` holds every validated server event with its
    arrival time; ``heard`` every received audio frame."""

    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(peer_configuration()))
    mic: Microphone = field(default_factory=Microphone)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    call_id: str = ""
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    validate: Callable[[str | bytes], dict[str, Any]] = validate_server_event
    """How each data-channel message is checked (the beta shape's union for beta calls)."""
    dtx: bool = False
    """Send Opus DTX, as a browser does, when the server's answer asks for it (``usedtx=1``)."""
    encoder: BrowserOpusEncoder | None = None

    async def connect(
        self,
        server: ServerProcess,
        *,
        session: dict[str, Any] | None = None,
        key: str | None = None,
        codec: str | None = None,
        path: str = "/v1/realtime/calls",
        label: str = "oai-events",
        verify: Any = True,
    ) -> str:
        """Offer audio + the events channel (``label``); multipart with ``session`` when given,
        else raw SDP authenticated with ``key`` (an ``ek_`` key), to ``path`` (query included).
        Returns the call id."""
        offer = await self.offer(codec, label)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, verify=verify) as http:
            if session is not None:
                response = await http.post(
                    path,
                    headers={"Authorization": f"Bearer {key or server.api_key}"},
                    files={
                        "sdp": (None, offer, "application/sdp"),
                        "session": (None, json.dumps(session), "application/json"),
                    },
                )
            else:
                response = await http.post(
                    path,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
                    content=offer,
                )
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith("application/sdp")
        return await self.accept(response.text, response.headers["location"])

    async def offer(self, codec: str | None = None, label: str = "oai-events") -> str:
        """The SDP offer: one microphone track and the events channel (``oai-events``, or
        Azure's ``realtime-channel``), host candidates on loopback gathered in full (no trickle)."""
        self.channel = self.pc.createDataChannel(label)
        self.channel.on("message", self._on_message)
        transceiver = self.pc.addTransceiver(self.mic, direction="sendrecv")
        self.sender = transceiver.sender
        if codec is not None:
            caps = RTCRtpSender.getCapabilities("audio")
            transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == codec])
        self.pc.on("track", self._on_track)
        with ice_addresses(("127.0.0.1",)):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str, location: str) -> str:
        """Apply the server's answer; the call id is the last segment of ``Location``."""
        self.call_id = location.rsplit("/", 1)[-1]
        assert location.endswith(f"/realtime/calls/{self.call_id}") and self.call_id.startswith("rtc_")
        if self.dtx and "usedtx=1" in answer:
            self.encoder = BrowserOpusEncoder()
            self.sender._RTCRtpSender__encoder = self.encoder  # used from the first frame on
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return self.call_id

    def _on_message(self, message: str | bytes) -> None:
        event = self.validate(message)
        self.events.append((time.monotonic(), event))
        self.inbox.put_nowait(event)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.ensure_future(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            samples, channels = frame_samples(frame)
            level = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
            mono = samples.reshape(-1, channels)[:, 0] if channels > 1 else samples
            self.heard.append(
                Heard(time.monotonic(), frame.samples / frame.sample_rate, level, mono, frame.sample_rate)
            )

    async def answer_playing(
        self, server: ServerProcess, session: dict[str, Any], question: np.ndarray, seconds: float = 1.5
    ) -> dict[str, Any]:
        """Call with ``session``, say ``question`` (24 kHz pcm16) and return the answer's
        ``output_audio_buffer.started`` once ``seconds`` of it were heard."""
        await self.connect(server, session=session)
        await self.until("session.created", timeout=60)
        self.mic.play(question)
        started = (await self.until("output_audio_buffer.started", timeout=120))[-1]
        while self.audio_between(self.time_of(started), 1e12) < seconds:
            await asyncio.sleep(0.05)
        return started

    async def until(self, kind: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Events up to and including the next one of type ``kind``."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            event = await asyncio.wait_for(self.inbox.get(), max(0.01, deadline - time.monotonic()))
            out.append(event)
            if event["type"] == kind:
                return out

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    def time_of(self, event: dict[str, Any]) -> float:
        return next(at for at, e in self.events if e is event)

    def audio_between(self, start: float, end: float, threshold: float = 100.0) -> float:
        """Seconds of non-silent audio received between two instants."""
        return sum(h.seconds for h in self.heard if start <= h.at <= end and h.rms > threshold)

    def pcm_between(self, start: float, end: float, rate: int = RATE) -> np.ndarray:
        """The audio received between two instants, resampled to ``rate``."""
        from openrealtime.audio.resample import resample

        frames = [h for h in self.heard if start <= h.at <= end and h.samples is not None]
        if not frames:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate([h.samples for h in frames if h.samples is not None]).astype(np.int16)
        return resample(pcm, frames[0].rate, rate) if frames[0].rate != rate else pcm

    def first_sound_after(self, start: float, threshold: float = 100.0) -> float | None:
        return next((h.at for h in self.heard if h.at >= start and h.rms > threshold), None)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()
