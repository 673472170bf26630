"""SIP message parsing and serializing (RFC 3261 §7), and the listener's answers to
malformed requests over a real loopback UDP socket."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrealtime.transports.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    header_params,
    host_port,
    missing_mandatory,
    parse_message,
    uri_of,
)
from openrealtime.transports.sip.server import SipServer

INVITE = (
    b"INVITE sip:test@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKproxy\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Alice" <sip:alice@127.0.0.1>;tag=1928301774\r\n'
    b"t: <sip:test@127.0.0.1>\r\n"
    b"i: a84b4c76e66710@pc33\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Subject: a folded\r\n"
    b"  header\r\n"
    b"Contact: <sip:alice@127.0.0.1:5070>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_parse_request_expands_compact_headers_and_folding() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE" and message.uri == "sip:test@127.0.0.1"
    assert message.call_id == "a84b4c76e66710@pc33"
    assert message.cseq == (314159, "INVITE")
    assert len(message.get_all("Via")) == 2
    assert message.get("Subject") == "a folded header"
    assert message.body == b"v=0\n"
    assert header_params(message.get("From") or "")["tag"] == "1928301774"
    assert uri_of(message.get("From") or "") == "sip:alice@127.0.0.1"
    assert host_port("sip:alice@127.0.0.1:5070;transport=udp") == ("127.0.0.1", 5070)
    assert host_port("sip:[::1]:5062") == ("::1", 5062)


def test_serialize_round_trips_and_fixes_content_length() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    message.body = b"longer body"
    again = parse_message(message.serialize())
    assert isinstance(again, SipRequest)
    assert again.body == b"longer body" and again.get("Content-Length") == "11"
    assert again.headers[:3] == message.headers[:3]


def test_response_copies_the_dialog_headers_and_adds_a_to_tag() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    response = build_response(request, 180, to_tag="abc", headers=[("Contact", "<sip:x@y>")])
    parsed = parse_message(response.serialize())
    assert isinstance(parsed, SipResponse)
    assert parsed.status == 180 and parsed.reason == "Ringing"
    assert parsed.get_all("Via") == request.get_all("Via")
    assert parsed.get("To") == "<sip:test@127.0.0.1>;tag=abc"
    trying = build_response(request, 100, to_tag="abc")
    assert trying.get("To") == "<sip:test@127.0.0.1>"  # 100 Trying never carries a tag


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",  # header without colon
        b"INVITE sip:x SIP/3.0\r\n\r\n",
        b"INVITE  SIP/2.0\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nshort",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: ten\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n continuation first\r\n\r\n",
        b"\xff\xfe INVITE\r\n\r\n",
        b"no end of headers",
        b"A" * 70000,
    ],
)
def test_malformed_messages_raise_parse_errors(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        message = parse_message(data)
        if isinstance(message, SipRequest):
            missing_mandatory(message)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(INVITE)), max_size=8))
def test_stream_framer_reassembles_any_split(cuts: list[int]) -> None:
    stream = b"\r\n" + INVITE + INVITE
    points = sorted(set(cuts))
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    framer = StreamFramer()
    messages = [m for piece in pieces for m in framer.feed(piece)]
    assert messages == [INVITE, INVITE]


# ------------------------------------------------------------------ the listener, over real UDP


class _Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


@contextlib.asynccontextmanager
async def listener(**options: object) -> AsyncIterator[tuple[SipServer, asyncio.DatagramTransport, _Peer]]:
    server = SipServer("127.0.0.1", 0, **options)  # type: ignore[arg-type]
    await server.start()
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(_Peer, remote_addr=("127.0.0.1", server.port))
    try:
        yield server, transport, peer
    finally:
        transport.close()
        await server.stop()


def options_request(branch: str, extra: str = "") -> bytes:
    return (
        f"OPTIONS sip:test@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{branch}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:test@127.0.0.1>\r\n"
        f"Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


async def reply(peer: _Peer) -> SipResponse:
    message = parse_message(await asyncio.wait_for(peer.received.get(), 5))
    assert isinstance(message, SipResponse)
    return message


async def test_malformed_requests_get_400_and_the_listener_keeps_working() -> None:
    async with listener() as (_, transport, peer):
        bad_length = options_request("b1").replace(b"Content-Length: 0", b"Content-Length: 50")
        transport.sendto(bad_length)
        assert (await reply(peer)).status == 400
        no_cseq = re.sub(rb"CSeq: [^\r]*\r\n", b"", options_request("b2"))
        transport.sendto(no_cseq)
        response = await reply(peer)
        assert response.status == 400 and "CSeq" in response.reason
        wrong_method = options_request("b3").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        transport.sendto(wrong_method)
        assert (await reply(peer)).status == 400
        for garbage in (b"\x00\x01\x02", b"hello\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
            transport.sendto(garbage)  # nothing to answer to: dropped
        transport.sendto(options_request("ok"))
        ok = await reply(peer)
        assert ok.status == 200 and "INVITE" in (ok.get("Allow") or "")
        transport.sendto(
            b"FROB sip:x SIP/2.0\r\n"
            + options_request("b4").split(b"\r\n", 1)[1].replace(b"1 OPTIONS", b"1 FROB")
        )
        assert (await reply(peer)).status == 501


async def test_unknown_dialogs_get_481() -> None:
    async with listener() as (_, transport, peer):
        bye = (
            options_request("c1")
            .replace(b"OPTIONS", b"BYE")
            .replace(b"To: <sip:test@127.0.0.1>", b"To: <sip:test@127.0.0.1>;tag=zz")
        )
        transport.sendto(bye)
        assert (await reply(peer)).status == 481


async def test_offer_without_g711_is_refused_with_488() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
    invite = (
        options_request("d1").replace(b"OPTIONS", b"INVITE").replace(b"Content-Length: 0\r\n", b"")
        .replace(b"\r\n\r\n", f"\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}".encode())
    )  # fmt: skip
    async with listener() as (_, transport, peer):
        transport.sendto(invite)
        assert (await reply(peer)).status == 100
        refused = await reply(peer)
        assert refused.status == 488 and "PCMU" in (refused.get("Warning") or "")
        transport.sendto(invite)  # a retransmission gets the same final answer again
        assert (await reply(peer)).status == 488


async def test_digest_authentication_and_allowlist() -> None:
    async with listener(digest_user="trunk", digest_password="s3cret") as (_, transport, peer):
        transport.sendto(options_request("e1"))
        challenge = await reply(peer)
        assert challenge.status == 401
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.get("WWW-Authenticate") or ""))
        ha1 = hashlib.md5(f"trunk:{params['realm']}:s3cret".encode()).hexdigest()
        ha2 = hashlib.md5(b"OPTIONS:sip:test@127.0.0.1").hexdigest()
        answer = hashlib.md5(f"{ha1}:{params['nonce']}:00000001:abc:auth:{ha2}".encode()).hexdigest()
        header = (
            f'Authorization: Digest username="trunk", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="sip:test@127.0.0.1", response="{answer}", qop=auth, nc=00000001, cnonce="abc"\r\n'
        )
        transport.sendto(options_request("e2", header))
        assert (await reply(peer)).status == 200
        transport.sendto(options_request("e3", header.replace(answer, "0" * 32)))
        assert (await reply(peer)).status == 401
    async with listener(allowed_sources=["10.0.0.0/8"]) as (_, transport, peer):
        transport.sendto(options_request("f1"))  # loopback is not on this trunk allowlist
        assert (await reply(peer)).status == 403
    async with listener(allowed_sources=["127.0.0.0/8"]) as (_, transport, peer):
        transport.sendto(options_request("f2"))
        assert (await reply(peer)).status == 200
