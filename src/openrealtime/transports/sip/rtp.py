"""RTP and RTCP for one phone call (RFC 3550, RFC 4733).

Inbound: packets go through a small jitter buffer that puts them back in order and skips
what was lost, G.711 is decoded to 8 kHz pcm16, and RFC 4733 telephone-events become DTMF
digits (reported once per key press, however often the sender repeats the packets).
Outbound: one 20 ms G.711 packet per tick of the shared media clock from the call's ``Playout``, so
the caller hears silence between turns and a barge-in flush takes effect on the next packet.
With SRTP (``use_srtp``) every packet is protected on the way out and authenticated on the way
in; a packet that fails is dropped before anything (not even the symmetric-RTP latch) sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...audio import formats
from ...audio.g711 import alaw_decode, ulaw_decode
from ..media import MediaClock, PayloadEncoder, PcmAudio, RateConverter, StreamGaps, quiet
from .srtp import SdesKeys, SrtpError, SrtpSession

log = logging.getLogger("openrealtime.sip.rtp")

RTP_VERSION = 2
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
DTMF_KEYS = "0123456789*#ABCD"
MEDIA_TIMEOUT_S = 30.0
"""A caller whose RTP stopped this long ago is gone (network loss without a BYE)."""
_NTP_EPOCH = 2208988800


class RtpError(ValueError):
    """Not an RTP packet we can use."""


@dataclass
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RtpError("too short")
        first, second, sequence, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
        if first >> 6 != RTP_VERSION:
            raise RtpError("not RTP version 2")
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension
            if len(data) < offset + 4:
                raise RtpError("truncated extension")
            (words,) = struct.unpack("!H", data[offset + 2 : offset + 4])
            offset += 4 + 4 * words
        end = len(data)
        if first & 0x20:  # padding
            if end == 0 or data[-1] == 0 or data[-1] > end - offset:
                raise RtpError("bad padding")
            end -= data[-1]
        if offset > end:
            raise RtpError("truncated header")
        return cls(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:end]), bool(second & 0x80))

    def serialize(self) -> bytes:
        header = struct.pack(
            "!BBHII",
            RTP_VERSION << 6,
            (0x80 if self.marker else 0) | (self.payload_type & 0x7F),
            self.sequence & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc,
        )
        return header + self.payload


class JitterBuffer:
    """Reorders packets by (extended) sequence number and gives them out in order.

    A missing packet is waited for until ``depth`` newer packets have arrived, then skipped
    (reported as ``None`` so the caller can fill the gap with silence). Packets older than
    what was already given out, and duplicates, are dropped.
    """

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self._packets: dict[int, RtpPacket] = {}
        self._next: int | None = None  # extended sequence number expected next
        self._highest = -1
        self.lost = 0
        self.late = 0

    def _extend(self, sequence: int) -> int:
        if self._highest < 0:
            return sequence
        base = self._highest & ~0xFFFF
        candidates = (base - 0x10000 + sequence, base + sequence, base + 0x10000 + sequence)
        return min(candidates, key=lambda value: abs(value - self._highest))

    def push(self, packet: RtpPacket) -> None:
        extended = self._extend(packet.sequence)
        if self._next is None:
            self._next = extended
        if extended < self._next or extended in self._packets:
            self.late += 1
            return
        if extended - self._next > 1000:  # the sender restarted its numbering: start over
            self._packets.clear()
            self._next = extended
        self._packets[extended] = packet
        self._highest = max(self._highest, extended)

    def pop(self) -> list[RtpPacket | None]:
        """Packets now due, in order; ``None`` stands for one lost packet."""
        out: list[RtpPacket | None] = []
        while self._next is not None and self._packets:
            packet = self._packets.pop(self._next, None)
            if packet is not None:
                out.append(packet)
            elif self._highest - self._next >= self.depth:
                out.append(None)
                self.lost += 1
            else:
                break
            self._next += 1
        return out


class DtmfDecoder:
    """RFC 4733 telephone-events → key presses, each reported once (on its first packet)."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, int]] = set()
        self._order: list[tuple[int, int]] = []

    def feed(self, packet: RtpPacket) -> str | None:
        if len(packet.payload) < 4:
            return None
        event = packet.payload[0]
        if event >= len(DTMF_KEYS):
            return None  # not a DTMF key (e.g. a tone event)
        key = (packet.ssrc, packet.timestamp)
        if key in self._seen:
            return None
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > 64:
            self._seen.discard(self._order.pop(0))
        return DTMF_KEYS[event]


def sender_report(ssrc: int, rtp_timestamp: int, packets: int, octets: int, now: float) -> bytes:
    """An RTCP sender report (RFC 3550 §6.4.1) without report blocks."""
    ntp = now + _NTP_EPOCH
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(
        "!BBHIIIIII",
        0x80,
        200,
        6,
        ssrc,
        seconds & 0xFFFFFFFF,
        fraction,
        rtp_timestamp & 0xFFFFFFFF,
        packets,
        octets,
    )


def _decoder(codec: str) -> Callable[[bytes], PcmAudio]:
    return ulaw_decode if codec == "PCMU" else alaw_decode


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_packet(data, (addr[0], addr[1]))


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on an even port and the next one (RTP, RTCP)."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, port + 1))
            except OSError:
                rtcp.close()
            else:
                return rtp, rtcp
        rtp.close()
    raise OSError("no free RTP port pair")


class RtpSession:
    """The media of one call: a UDP port pair, inbound decoding and paced outbound audio."""

    def __init__(
        self,
        host: str,
        *,
        on_audio: Callable[[PcmAudio], None],
        on_dtmf: Callable[[str], None],
        pull: Callable[[], PcmAudio],
        jitter_depth: int = 3,
        on_media_timeout: Callable[[], None] = lambda: None,
        media_timeout_s: float = MEDIA_TIMEOUT_S,
        in_real_time: Callable[[], bool] = lambda: False,
    ) -> None:
        self.host = host
        self.on_audio = on_audio
        self.on_dtmf = on_dtmf
        self.pull = pull
        """The next 20 ms of the assistant's voice at 24 kHz (the session's playback)."""
        self.on_media_timeout = on_media_timeout
        self.media_timeout_s = media_timeout_s
        self._last_packet = time.monotonic()
        self.jitter = JitterBuffer(jitter_depth)
        self.gaps = StreamGaps(8000)
        """Time the caller's stream skips (a lost packet, a phone's silence suppression) is given
        as silence: when the next packet arrives, and on the media clock's ticks after quiet
        audio while the caller's time counts (``in_real_time``)."""
        self.in_real_time = in_real_time
        self.dtmf = DtmfDecoder()
        self.ssrc = secrets.randbits(32)
        self._rtp_sock, self._rtcp_sock = _bind_pair(host)
        self.local_port = self._rtp_sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.codec = "PCMU"
        self.payload_type = 0
        self.dtmf_payload_type: int | None = None
        self.sending = True
        self._latched = False
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_sending: Callable[[], None] = lambda: None
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self.packets_received = 0
        self.srtp: SrtpSession | None = None
        self.closed = False

    def configure(self, remote: tuple[str, int], codec: str, payload_type: int, dtmf_pt: int | None) -> None:
        self.remote = remote
        self.codec, self.payload_type, self.dtmf_payload_type = codec, payload_type, dtmf_pt

    def use_srtp(self, keys: SdesKeys | None) -> None:
        """Protect the media with the SDES keys the offer/answer agreed (None: plain RTP)."""
        self.srtp = SrtpSession(keys) if keys is not None else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rtp, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self._on_rtp), sock=self._rtp_sock)
        rtcp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(lambda *_: None), sock=self._rtcp_sock
        )
        self._transports = [rtp, rtcp]
        self._stop_sending = MediaClock.shared().add(self._sender())
        self._tasks = [asyncio.create_task(self._rtcp_loop(), name="sip-rtcp")]

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 2 and 72 <= data[1] & 0x7F <= 76:
            return  # RTCP on the RTP port (rtcp-mux): nothing we need from it
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpError:
                return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        if not self._latched and self.remote is not None:
            self.remote = addr  # symmetric RTP: answer where the caller really sends from
            self._latched = True
        self.packets_received += 1
        self._last_packet = time.monotonic()
        if packet.payload_type == self.dtmf_payload_type:
            digit = self.dtmf.feed(packet)
            if digit is not None:
                self.on_dtmf(digit)
            return
        if packet.payload_type != self.payload_type:
            return
        self.jitter.push(packet)
        decode = _decoder(self.codec)
        now = time.monotonic()
        for due in self.jitter.pop():
            if due is None:
                continue  # lost: the next packet's timestamp brings its time as silence
            pcm = np.asarray(decode(due.payload), dtype=np.int16)
            skipped = self.gaps.arrived(due.timestamp, len(pcm), now, quiet=quiet(pcm))
            if skipped:
                self.on_audio(np.zeros(skipped, np.int16))
            self.on_audio(pcm)

    def _sender(self) -> Callable[[], None]:
        """Sends the next 20 ms packet on each tick of the shared media clock."""
        converter = RateConverter(formats.INTERNAL_RATE, 8000)
        encoder = PayloadEncoder(self.codec, converter.silence)
        first = True

        def send() -> None:
            nonlocal first
            if self.gaps.quiet and self.in_real_time():
                skipped = self.gaps.due(time.monotonic())
                if skipped:
                    self.on_audio(np.zeros(skipped, np.int16))
            payload = encoder.encode(converter.convert(self.pull()))
            self._timestamp = (self._timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
            self._sequence = (self._sequence + 1) & 0xFFFF
            if not self.sending or self.remote is None or not self._transports:
                return
            packet = RtpPacket(self.payload_type, self._sequence, self._timestamp, self.ssrc, payload, first)
            first = False
            data = packet.serialize()
            self._transports[0].sendto(self.srtp.protect(data) if self.srtp else data, self.remote)
            self.packets_sent += 1
            self.octets_sent += len(payload)

        return send

    async def _rtcp_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(5.0)
            if time.monotonic() - self._last_packet > self.media_timeout_s:
                log.info("no RTP from %s for %.0f s", self.remote, self.media_timeout_s)
                self.on_media_timeout()
                return
            if self.remote is not None and len(self._transports) > 1:
                report = sender_report(
                    self.ssrc, self._timestamp, self.packets_sent, self.octets_sent, time.time()
                )
                if self.srtp is not None:
                    report = self.srtp.protect_rtcp(report)
                self._transports[1].sendto(report, (self.remote[0], self.remote[1] + 1))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_sending()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for transport in self._transports:
            transport.close()
        if not self._transports:
            self._rtp_sock.close()
            self._rtcp_sock.close()
