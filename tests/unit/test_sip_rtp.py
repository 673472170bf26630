"""RTP packets, the inbound jitter buffer and RFC 4733 DTMF decoding."""

from __future__ import annotations

import struct

import pytest

from openrealtime.transports.sip.rtp import DtmfDecoder, JitterBuffer, RtpError, RtpPacket, sender_report


def packet(sequence: int, payload: bytes = b"\xff" * 160, pt: int = 0, timestamp: int = 0) -> RtpPacket:
    return RtpPacket(pt, sequence & 0xFFFF, timestamp, 0x1234, payload)


def test_packet_round_trip_and_header_extras() -> None:
    original = RtpPacket(8, 65535, 4294967295, 0xDEADBEEF, b"abc", marker=True)
    assert RtpPacket.parse(original.serialize()) == original
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 0, 7, 160, 1)  # padding, extension, 1 CSRC
    data = (
        header + b"\x00\x00\x00\x02" + b"\xbe\xde\x00\x01" + b"\x11\x22\x33\x44" + b"voice" + b"\x00\x00\x03"
    )
    parsed = RtpPacket.parse(data)
    assert parsed.payload == b"voice" and parsed.sequence == 7 and parsed.ssrc == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00",
        struct.pack("!BBHII", 0x40, 0, 1, 1, 1),  # version 1
        struct.pack("!BBHII", 0x8F, 0, 1, 1, 1),  # 15 CSRCs announced, none present
        struct.pack("!BBHII", 0xA0, 0, 1, 1, 1) + b"\x00",  # padding length 0
        struct.pack("!BBHII", 0x90, 0, 1, 1, 1) + b"\x00\x00",  # truncated extension
    ],
)
def test_malformed_packets_are_refused(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_jitter_buffer_puts_reordered_packets_back_in_order() -> None:
    buffer = JitterBuffer(depth=3)
    out: list[int] = []
    for sequence in (10, 12, 11, 13, 15, 14):
        buffer.push(packet(sequence))
        out += [p.sequence for p in buffer.pop() if p is not None]
    assert out == [10, 11, 12, 13, 14, 15]
    assert buffer.lost == 0


def test_jitter_buffer_skips_a_lost_packet_once_newer_ones_pile_up() -> None:
    buffer = JitterBuffer(depth=3)
    out: list[int | None] = []
    for sequence in (1, 3, 4):
        buffer.push(packet(sequence))
        out += [p.sequence if p else None for p in buffer.pop()]
    assert out == [1]  # still waiting for 2
    buffer.push(packet(5))
    out += [p.sequence if p else None for p in buffer.pop()]
    assert out == [1, None, 3, 4, 5] and buffer.lost == 1
    buffer.push(packet(2))  # too late now
    buffer.push(packet(5))  # duplicate
    assert buffer.pop() == [] and buffer.late == 2


def test_jitter_buffer_follows_sequence_wraparound() -> None:
    buffer = JitterBuffer(depth=2)
    out: list[int] = []
    for sequence in (65534, 0, 65535, 1):
        buffer.push(packet(sequence))
        out += [p.sequence for p in buffer.pop() if p is not None]
    assert out == [65534, 65535, 0, 1]


def dtmf(event: int, timestamp: int, duration: int, end: bool = False) -> RtpPacket:
    payload = bytes([event, (0x80 if end else 0) | 10]) + struct.pack("!H", duration)
    return RtpPacket(101, 0, timestamp, 0x99, payload)


def test_each_key_press_is_reported_once() -> None:
    decoder = DtmfDecoder()
    presses = []
    # "5": start, two updates, three end packets (RFC 4733 §2.5.1.4), all one timestamp
    for update in [dtmf(5, 8000, 160), dtmf(5, 8000, 320), dtmf(5, 8000, 480)] + [
        dtmf(5, 8000, 640, True)
    ] * 3:
        presses.append(decoder.feed(update))
    # "5" again (new timestamp), then "*", "#", "D", and a non-DTMF tone event
    for update in [
        dtmf(5, 9600, 160),
        dtmf(10, 11200, 160),
        dtmf(11, 12800, 160),
        dtmf(15, 14400, 160),
        dtmf(70, 16000, 160),
    ]:
        presses.append(decoder.feed(update))
    assert [p for p in presses if p] == ["5", "5", "*", "#", "D"]
    assert decoder.feed(RtpPacket(101, 0, 1, 1, b"\x01")) is None  # truncated payload


def test_sender_report_shape() -> None:
    report = sender_report(0xABCDEF01, 1234, 50, 8000, now=1_700_000_000.5)
    assert len(report) == 28 and report[1] == 200
    assert struct.unpack("!I", report[4:8])[0] == 0xABCDEF01


@pytest.mark.parametrize("hearing", [True, False])
async def test_time_the_callers_stream_skips_reaches_the_session_as_silence(hearing: bool) -> None:
    """A phone's silence suppression: after quiet frames the packets stop, and the next one's
    timestamp jumps. The skipped time is given as zeros: on the media clock's ticks while the
    session times a pause, else when the next packet arrives; either way the session hears the
    caller's whole timeline."""
    import asyncio
    import socket

    import numpy as np

    from openrealtime.audio.g711 import ulaw_encode
    from openrealtime.transports.sip.rtp import RtpSession

    heard: list[np.ndarray] = []
    session = RtpSession(
        "127.0.0.1",
        on_audio=lambda pcm: heard.append(pcm.copy()),
        on_dtmf=lambda _d: None,
        pull=lambda: np.zeros(480, dtype=np.int16),
        in_real_time=lambda: hearing,
    )
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    session.configure(("127.0.0.1", peer.getsockname()[1]), "PCMU", 0, None)
    await session.start()
    loop = asyncio.get_running_loop()

    async def send(sequence: int, timestamp: int, pcm: np.ndarray) -> None:
        data = RtpPacket(0, sequence, timestamp, 0x77, bytes(ulaw_encode(pcm))).serialize()
        await loop.sock_sendto(peer, data, ("127.0.0.1", session.local_port))

    def samples() -> int:
        return sum(len(chunk) for chunk in heard)

    try:
        tone = (8000 * np.sin(np.arange(160) * 2 * np.pi * 440 / 8000)).astype(np.int16)
        for index in range(10):  # five frames of sound, five quiet ones
            await send(100 + index, 1000 + index * 160, tone if index < 5 else np.zeros(160, np.int16))
        async with asyncio.timeout(5):
            while samples() < 10 * 160 + (5 * 160 if hearing else 0):
                await asyncio.sleep(0.01)
        if not hearing:
            await asyncio.sleep(0.2)  # ticks of the media clock go by
        before = samples()
        await send(110, 1000 + 10 * 160 + 4000, tone)  # 500 ms after the last frame's end
        async with asyncio.timeout(5):
            while samples() < 11 * 160 + 4000:
                await asyncio.sleep(0.01)
        assert samples() == 11 * 160 + 4000  # the whole timeline, nothing twice
        arrival = samples() - before - 160
        assert (arrival < 4000) if hearing else (arrival == 4000)
        assert session.gaps.filled == 4000
    finally:
        await session.close()
        peer.close()
