"""SDES ``a=crypto`` lines (RFC 4568) and SRTP/SRTCP protection through libsrtp, both ways,
plus an ``RtpSession`` keyed with SRTP exchanging real packets on loopback."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import numpy as np
import pytest

from openrealtime.audio.g711 import ulaw_encode
from openrealtime.transports.sip.rtp import RtpPacket, RtpSession, sender_report
from openrealtime.transports.sip.srtp import (
    KEY_SALT_BYTES,
    CryptoAttribute,
    SdesKeys,
    SrtpError,
    SrtpSession,
    choose_crypto,
)

BARESIP_LINE = "1 AES_CM_128_HMAC_SHA1_80 inline:9DCOPQlsj5Bhuabd7lfOgwmH/ckIIaPmtUFwfT7I"


def inline(key: bytes) -> str:
    return base64.b64encode(key).decode()


def caller_side(ours: SdesKeys) -> SdesKeys:
    """The same exchange seen from the caller: its key is what we receive with."""
    return SdesKeys(ours.suite, ours.tag, remote_key=ours.local_key, local_key=ours.remote_key)


def rtp(sequence: int, payload: bytes = b"\x01" * 160, ssrc: int = 0x1234) -> bytes:
    return RtpPacket(0, sequence, sequence * 160, ssrc, payload).serialize()


# ------------------------------------------------------------------ a=crypto lines


def test_a_baresip_crypto_line_parses_and_prints_back() -> None:
    attribute = CryptoAttribute.parse(BARESIP_LINE)
    assert attribute.tag == 1 and attribute.suite == "AES_CM_128_HMAC_SHA1_80"
    assert len(attribute.key) == KEY_SALT_BYTES
    assert attribute.value() == BARESIP_LINE


@pytest.mark.parametrize(
    "extra",
    ["|2^31", "|1048576", " WSH=64", " KDR=0"],
)
def test_lifetimes_and_harmless_session_parameters_are_accepted(extra: str) -> None:
    key = os.urandom(KEY_SALT_BYTES)
    attribute = CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 inline:{inline(key)}{extra}")
    assert (attribute.tag, attribute.suite, attribute.key) == (7, "AES_CM_128_HMAC_SHA1_32", key)


KEY = inline(bytes(range(KEY_SALT_BYTES)))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}", "unsupported crypto suite"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{KEY}", "unsupported crypto suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4", "MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}", "MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=24", "KDR"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY}", "inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!", "base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{inline(os.urandom(16))}", "16 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|forever", "lifetime"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY}", "malformed"),
        ("1 AES_CM_128_HMAC_SHA1_80", "malformed"),
    ],
)
def test_lines_we_cannot_honour_are_refused(line: str, problem: str) -> None:
    with pytest.raises(SrtpError, match=problem):
        CryptoAttribute.parse(line)


def test_the_first_usable_line_in_the_offerers_order_wins() -> None:
    lines = [
        f"1 AEAD_AES_256_GCM inline:{KEY}",
        f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}",
        f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}",
    ]
    chosen, problems = choose_crypto(lines)
    assert chosen is not None and (chosen.tag, chosen.suite) == (2, "AES_CM_128_HMAC_SHA1_32")
    assert problems == ["unsupported crypto suite AEAD_AES_256_GCM"]
    assert choose_crypto(lines[:1])[0] is None


def test_our_answer_keeps_tag_and_suite_with_a_fresh_key_of_our_own() -> None:
    offered = CryptoAttribute.parse(BARESIP_LINE)
    first, second = SdesKeys.answer(offered), SdesKeys.answer(offered)
    assert first.remote_key == offered.key
    assert len(first.local_key) == KEY_SALT_BYTES and first.local_key not in (offered.key, second.local_key)
    answered = CryptoAttribute.parse(first.answer_attribute().value())
    assert (answered.tag, answered.suite, answered.key) == (1, offered.suite, first.local_key)
    assert inline(first.local_key) not in repr(first) and inline(first.remote_key) not in repr(first)


# ------------------------------------------------------------------ SRTP / SRTCP


@pytest.mark.parametrize(
    ("suite", "tag_bytes"), [("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)]
)
def test_srtp_round_trips_both_ways(suite: str, tag_bytes: int) -> None:
    offered = CryptoAttribute(1, suite, os.urandom(KEY_SALT_BYTES))
    ours = SdesKeys.answer(offered)
    server, caller = SrtpSession(ours), SrtpSession(caller_side(ours))
    for sequence in range(1, 6):
        plain = rtp(sequence)
        protected = caller.protect(plain)
        assert len(protected) == len(plain) + tag_bytes
        assert protected[12:-tag_bytes] != plain[12:]  # the payload is encrypted
        assert server.unprotect(protected) == plain
        answer = rtp(sequence, b"\x02" * 160, ssrc=0x5678)
        assert caller.unprotect(server.protect(answer)) == answer
    report = sender_report(0x5678, 800, 5, 800, 1_700_000_000.0)
    srtcp = server.protect_rtcp(report)
    assert len(srtcp) == len(report) + 4 + 10  # E-flag/index word and an 80-bit tag (both suites)
    assert caller.unprotect_rtcp(srtcp) == report


def test_forged_replayed_and_wrongly_keyed_packets_are_refused() -> None:
    ours = SdesKeys.answer(CryptoAttribute.parse(BARESIP_LINE))
    server, caller = SrtpSession(ours), SrtpSession(caller_side(ours))
    good = caller.protect(rtp(1))
    assert server.unprotect(good) == rtp(1)
    with pytest.raises(SrtpError):
        server.unprotect(good)  # replayed
    tampered = bytearray(caller.protect(rtp(2)))
    tampered[20] ^= 0x01
    with pytest.raises(SrtpError):
        server.unprotect(bytes(tampered))
    stranger = SrtpSession(SdesKeys(ours.suite, 1, os.urandom(30), os.urandom(30)))
    with pytest.raises(SrtpError):
        server.unprotect(stranger.protect(rtp(3)))
    with pytest.raises(SrtpError):
        server.unprotect(rtp(4))  # plain RTP is not SRTP
    with pytest.raises(SrtpError):
        server.unprotect(b"\x80")
    assert server.rejected == 5
    assert server.unprotect(caller.protect(rtp(5))) == rtp(5)  # and the stream goes on


# ------------------------------------------------------------------ an SRTP call's media


async def test_an_srtp_rtp_session_decodes_protected_audio_and_protects_what_it_sends() -> None:
    ours = SdesKeys.answer(CryptoAttribute.parse(BARESIP_LINE))
    caller = SrtpSession(caller_side(ours))
    heard: list[np.ndarray] = []
    got_audio = asyncio.Event()

    def on_audio(pcm: np.ndarray) -> None:
        heard.append(pcm)
        got_audio.set()

    session = RtpSession(
        "127.0.0.1", on_audio=on_audio, on_dtmf=lambda _d: None, pull=lambda: np.zeros(480, dtype=np.int16)
    )
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    session.configure(("127.0.0.1", peer.getsockname()[1]), "PCMU", 0, None)
    session.use_srtp(ours)
    await session.start()
    loop = asyncio.get_running_loop()
    try:
        tone = (8000 * np.sin(np.arange(160 * 6) * 2 * np.pi * 440 / 8000)).astype(np.int16)
        # an unauthenticated packet from elsewhere must neither play nor steal the media
        intruder.sendto(
            RtpPacket(0, 1, 0, 0x99, bytes(ulaw_encode(tone[:160]))).serialize(),
            ("127.0.0.1", session.local_port),
        )
        for index in range(6):
            packet = RtpPacket(
                0, 100 + index, index * 160, 0x4242, bytes(ulaw_encode(tone[index * 160 : (index + 1) * 160]))
            )
            await loop.sock_sendto(
                peer, caller.protect(packet.serialize()), ("127.0.0.1", session.local_port)
            )
        await asyncio.wait_for(got_audio.wait(), 5)
        async with asyncio.timeout(5):
            while sum(len(chunk) for chunk in heard) < 160 * 4:
                await asyncio.sleep(0.01)
        decoded = np.concatenate(heard)
        assert session.srtp is not None and session.srtp.rejected == 1
        assert np.corrcoef(decoded[:640].astype(float), tone[:640].astype(float))[0, 1] > 0.99
        assert session.remote == ("127.0.0.1", peer.getsockname()[1])

        data, _ = await asyncio.wait_for(loop.sock_recvfrom(peer, 2048), 5)  # the paced outbound stream
        assert len(data) == 12 + 160 + 10
        sent = RtpPacket.parse(caller.unprotect(data))
        assert sent.ssrc == session.ssrc and sent.payload_type == 0 and len(sent.payload) == 160
        assert data[12:172] != sent.payload  # ciphertext on the wire
    finally:
        await session.close()
        peer.close()
        intruder.close()
