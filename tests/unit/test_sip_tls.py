"""SIP over TLS on loopback, with the real listener and a raw TLS peer: responses and our
in-dialog requests on the caller's connection, a new verified connection to its Contact when
that one is gone, ``sips:`` Contacts, 416 for ``sips:`` over TCP, 488 for plain RTP where SRTP
is required, mutual TLS, and the settings that configure it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import ValidationError

from openrealtime.config import Settings
from openrealtime.transports.sip.call import SipCall
from openrealtime.transports.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    header_params,
    parse_message,
    uri_of,
)
from openrealtime.transports.sip.sdp import MediaSecurity
from openrealtime.transports.sip.server import SipServer
from openrealtime.transports.sip.tls import TlsConfig
from tests.certificates import CertificateAuthority, make_ca

PLAIN_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
SRTP_OFFER = PLAIN_OFFER.replace("RTP/AVP", "RTP/SAVP") + (
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:9DCOPQlsj5Bhuabd7lfOgwmH/ckIIaPmtUFwfT7I\r\n"
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("sip-ca"))


def client_context(ca: CertificateAuthority, certificate: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cafile))
    if certificate is not None:
        leaf = ca.issue(certificate)
        context.load_cert_chain(leaf.certfile, leaf.keyfile)
    return context


@dataclass
class Peer:
    """A caller on one stream connection: sends requests, collects what comes back."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    transport: str
    framer: StreamFramer = field(default_factory=StreamFramer)
    pending: list[SipRequest | SipResponse] = field(default_factory=list)

    @property
    def local(self) -> tuple[str, int]:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return host, port

    def send(self, message: SipRequest | SipResponse) -> None:
        self.writer.write(message.serialize())

    async def receive(self, timeout: float = 5.0) -> SipRequest | SipResponse:
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                self.pending += [parse_message(raw) for raw in self.framer.feed(data)]
        return self.pending.pop(0)

    async def final(self) -> SipResponse:
        while True:
            message = await self.receive()
            if isinstance(message, SipResponse) and message.status >= 200:
                return message

    def close(self) -> None:
        self.writer.close()


def invite(
    uri: str, peer: Peer, offer: str, *, contact: str | None = None, call_id: str = "c1"
) -> SipRequest:
    host, port = peer.local
    request = SipRequest(method="INVITE", uri=uri, body=offer.encode())
    request.add("Via", f"SIP/2.0/{peer.transport} {host}:{port};branch=z9hG4bK-{call_id};rport")
    request.add("Max-Forwards", "70")
    request.add("From", f"<sip:caller@{host}>;tag=from-{call_id}")
    request.add("To", f"<{uri}>")
    request.add("Call-ID", call_id)
    request.add("CSeq", "1 INVITE")
    request.add("Contact", contact or f"<sip:caller@{host}:{port};transport={peer.transport.lower()}>")
    request.add("Content-Type", "application/sdp")
    return request


@contextlib.asynccontextmanager
async def sip_server(
    ca: CertificateAuthority,
    *,
    transports: tuple[str, ...] = ("tcp", "tls"),
    security: MediaSecurity = "either",
    require_client_cert: bool = False,
) -> AsyncIterator[tuple[SipServer, asyncio.Queue[SipCall]]]:
    leaf = ca.issue("openrealtime")
    calls: asyncio.Queue[SipCall] = asyncio.Queue()

    async def incoming(call: SipCall) -> bool:
        await calls.put(call)
        return True

    server = SipServer(
        "127.0.0.1",
        0,
        on_incoming=incoming,
        transports=transports,
        tls=TlsConfig(leaf.certfile, leaf.keyfile, ca.cafile, require_client_cert),
        tls_port=0,
        media_security=security,
    )
    await server.start()
    try:
        yield server, calls
    finally:
        await server.stop()


async def connect(
    server: SipServer, ca: CertificateAuthority, transport: str, certificate: str | None = None
) -> Peer:
    if transport == "TLS":
        context = client_context(ca, certificate)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.tls_port, ssl=context)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    return Peer(reader, writer, transport)


async def ringing(peer: Peer) -> SipResponse:
    while True:
        message = await peer.receive()
        assert isinstance(message, SipResponse)
        if message.status == 180:
            return message


# ------------------------------------------------------------------ tests


async def test_a_sips_call_gets_a_sips_contact_and_everything_rides_its_connection(
    ca: CertificateAuthority,
) -> None:
    async with sip_server(ca) as (server, calls):
        peer = await connect(server, ca, "TLS")
        uri = f"sips:agent@127.0.0.1:{server.tls_port}"
        peer.send(invite(uri, peer, SRTP_OFFER, contact=f"<sips:caller@{peer.local[0]}:{peer.local[1]}>"))
        ring = await ringing(peer)
        assert ring.get("Contact") == f"<sips:openrealtime@127.0.0.1:{server.tls_port}>"
        call = await asyncio.wait_for(calls.get(), 5)
        assert call.negotiated.media_security == "srtp"

        server.final_response(call, 200, body=b"v=0\r\n")
        ok = await peer.final()
        assert ok.status == 200 and ok.get("Contact") == ring.get("Contact")

        bye = asyncio.ensure_future(server.request(call, "BYE"))
        request = await peer.receive()
        assert isinstance(request, SipRequest) and request.method == "BYE"
        assert request.uri == f"sips:caller@{peer.local[0]}:{peer.local[1]}"
        via = request.get("Via") or ""
        assert via.startswith(f"SIP/2.0/TLS 127.0.0.1:{server.tls_port};")
        assert request.get("Contact") == ring.get("Contact")
        peer.send(build_response(request, 200))
        answer = await asyncio.wait_for(bye, 5)
        assert answer is not None and answer.status == 200
        peer.close()


async def test_a_sip_uri_over_tls_gets_transport_tls(ca: CertificateAuthority) -> None:
    async with sip_server(ca) as (server, calls):
        peer = await connect(server, ca, "TLS")
        peer.send(invite(f"sip:agent@127.0.0.1:{server.tls_port};transport=tls", peer, PLAIN_OFFER))
        ring = await ringing(peer)
        assert ring.get("Contact") == f"<sip:openrealtime@127.0.0.1:{server.tls_port};transport=tls>"
        call = await asyncio.wait_for(calls.get(), 5)
        assert call.negotiated.media_security == "rtp"  # "either": plain RTP still allowed
        peer.close()


async def test_a_closed_connection_is_replaced_by_a_verified_one_to_the_contact(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """The caller's TLS listener (its Contact) gets our BYE on a new connection; one whose
    certificate our CAs do not vouch for gets nothing."""
    phone = ca.issue("phone")
    impostor = make_ca(tmp_path / "other-ca").issue("impostor")
    received: asyncio.Queue[tuple[SipRequest, asyncio.StreamWriter]] = asyncio.Queue()

    async def contact_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                for raw in framer.feed(data):
                    message = parse_message(raw)
                    if isinstance(message, SipRequest):
                        await received.put((message, writer))

    for certificate, delivered in ((phone, True), (impostor, False)):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate.certfile, certificate.keyfile)
        listener = await asyncio.start_server(contact_listener, "127.0.0.1", 0, ssl=context)
        contact_port = listener.sockets[0].getsockname()[1]
        try:
            async with sip_server(ca) as (server, calls):
                peer = await connect(server, ca, "TLS")
                contact = f"<sip:caller@127.0.0.1:{contact_port};transport=tls>"
                peer.send(invite(f"sip:agent@127.0.0.1:{server.tls_port}", peer, SRTP_OFFER, contact=contact))
                await ringing(peer)
                call = await asyncio.wait_for(calls.get(), 5)
                server.final_response(call, 200, body=b"v=0\r\n")
                assert (await peer.final()).status == 200
                peer.close()
                await peer.writer.wait_closed()
                async with asyncio.timeout(5):  # the server notices the connection is gone
                    while not server._origins[call.call_id].writer.is_closing():  # type: ignore[union-attr]
                        await asyncio.sleep(0.01)
                bye = asyncio.ensure_future(server.request(call, "BYE"))
                if delivered:
                    request, writer = await asyncio.wait_for(received.get(), 5)
                    assert request.method == "BYE" and request.uri == uri_of(contact)
                    assert (request.get("Via") or "").startswith("SIP/2.0/TLS ")
                    writer.write(build_response(request, 200).serialize())
                    answer = await asyncio.wait_for(bye, 5)
                    assert answer is not None and answer.status == 200
                else:
                    assert await asyncio.wait_for(bye, 10) is None
                    assert received.empty()
        finally:
            listener.close()


async def test_plain_rtp_is_refused_with_488_where_srtp_is_required(ca: CertificateAuthority) -> None:
    async with sip_server(ca, transports=("tls",), security="srtp") as (server, calls):
        assert server._udp is None and server._tcp is None
        peer = await connect(server, ca, "TLS")
        peer.send(invite(f"sip:agent@127.0.0.1:{server.tls_port};transport=tls", peer, PLAIN_OFFER))
        refused = await peer.final()
        assert refused.status == 488 and "SRTP is required" in (refused.get("Warning") or "")
        peer.send(
            invite(f"sip:agent@127.0.0.1:{server.tls_port};transport=tls", peer, SRTP_OFFER, call_id="c2")
        )
        await ringing(peer)
        assert (await asyncio.wait_for(calls.get(), 5)).negotiated.media_security == "srtp"
        assert calls.empty()
        peer.close()


async def test_a_sips_uri_over_plain_tcp_gets_416(ca: CertificateAuthority) -> None:
    async with sip_server(ca) as (server, calls):
        peer = await connect(server, ca, "TCP")
        peer.send(invite(f"sips:agent@127.0.0.1:{server.port}", peer, SRTP_OFFER))
        refused = await peer.final()
        assert (refused.status, refused.reason) == (416, "Unsupported URI Scheme")
        assert header_params(refused.get("To") or "").get("tag")
        assert calls.empty()
        peer.close()


async def test_mutual_tls_admits_only_callers_with_a_certificate_from_our_ca(
    ca: CertificateAuthority,
) -> None:
    async with sip_server(ca, transports=("tls",), require_client_cert=True) as (server, calls):
        anonymous = await connect(server, ca, "TLS")
        anonymous.send(invite(f"sip:agent@127.0.0.1:{server.tls_port};transport=tls", anonymous, SRTP_OFFER))
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await anonymous.receive()  # TLS 1.3: the refusal arrives after the handshake
        anonymous.close()
        trunk = await connect(server, ca, "TLS", certificate="trunk")
        trunk.send(invite(f"sip:agent@127.0.0.1:{server.tls_port};transport=tls", trunk, SRTP_OFFER))
        await ringing(trunk)
        assert not calls.empty()
        trunk.close()


# ------------------------------------------------------------------ settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in list(os.environ):
        if name.startswith("OPENREALTIME_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_sip_listeners_follow_the_certificate_and_the_transport_list(
    clean_env: pytest.MonkeyPatch, ca: CertificateAuthority
) -> None:
    assert Settings().sip_listeners == ["udp", "tcp"] and Settings().sip_media_security == "either"
    leaf = ca.issue("settings")
    clean_env.setenv("OPENREALTIME_SIP_TLS_CERTFILE", str(leaf.combined))
    assert Settings().sip_listeners == ["udp", "tcp", "tls"]
    clean_env.setenv("OPENREALTIME_SIP_TRANSPORTS", "TLS")
    clean_env.setenv("OPENREALTIME_SIP_MEDIA_SECURITY", "srtp")
    settings = Settings()
    assert settings.sip_listeners == ["tls"] and settings.sip_media_security == "srtp"
    clean_env.delenv("OPENREALTIME_SIP_TLS_CERTFILE")
    with pytest.raises(ValidationError, match="sip_tls_certfile"):
        Settings()
    clean_env.setenv("OPENREALTIME_SIP_TRANSPORTS", "udp,sctp")
    with pytest.raises(ValidationError):
        Settings()
    clean_env.setenv("OPENREALTIME_SIP_TRANSPORTS", "udp")
    clean_env.setenv("OPENREALTIME_SIP_MEDIA_SECURITY", "zrtp")
    with pytest.raises(ValidationError):
        Settings()


def test_unusable_certificate_files_fail_with_a_clear_error(tmp_path: Path, ca: CertificateAuthority) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate")
    for config in (
        TlsConfig(tmp_path / "missing.pem"),
        TlsConfig(tmp_path / "garbage.pem"),
        TlsConfig(ca.issue("x").combined, cafile=tmp_path / "missing-ca.pem", require_client_cert=True),
    ):
        with pytest.raises(ValueError, match="cannot load the SIP TLS"):
            SipServer(transports=("tls",), tls=config)
    with pytest.raises(ValueError, match="needs a certificate"):
        SipServer(transports=("udp", "tls"))
    with pytest.raises(ValueError, match="transports"):
        SipServer(transports=("sctp",))
