"""The SIP user agent server: UDP, TCP and TLS listeners, request dispatch, trunk admission.

It answers INVITE (100 Trying, 180 Ringing, then the app decides), ACK, BYE, CANCEL,
OPTIONS, NOTIFY and INFO, and sends BYE and REFER in dialog. Callers are admitted by
source address (an allowlist of addresses/networks for trunks) or by digest
authentication (RFC 2617 MD5 with ``qop=auth``); with neither configured only loopback
callers get in. Malformed messages never raise: requests get ``400`` when they can still
be answered, everything else is dropped.

Over TCP and TLS, responses and our in-dialog requests go back over the caller's
connection; if it has closed, requests open a new connection to the caller's Contact (or the
first Record-Route hop). A call that arrived over TLS keeps to TLS: our Via says ``TLS`` and
our Contact is a ``sips:`` URI when the dialog is a SIPS one (RFC 3261 §12.1.1), else
``sip:…;transport=tls``. A ``sips:`` INVITE over UDP or TCP gets ``416``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ...protocol.ids import new_id
from .call import SipCall
from .dialog import Dialog
from .message import (
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    branch_of,
    build_response,
    host_port,
    missing_mandatory,
    new_tag,
    parse_message,
    tag_of,
    uri_of,
)
from .sdp import MediaSecurity, NegotiationError, negotiate
from .tls import DEFAULT_TLS_PORT, HANDSHAKE_TIMEOUT_S, TlsConfig
from .transaction import (
    AckWaiter,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    transaction_key,
)

log = logging.getLogger("openrealtime.sip")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, INFO"
CALL_ID_PREFIX = "rtc_"
NONCE_LIFETIME_S = 300
USER_AGENT = "openrealtime"
TRANSPORTS = ("udp", "tcp", "tls")
CONNECT_TIMEOUT_S = 5.0
"""Opening a new TCP/TLS connection to a caller (its old one closed) gives up after this."""


@dataclass(frozen=True)
class Origin:
    """Where a message came from, and how to answer it."""

    transport: str  # "UDP" | "TCP" | "TLS"
    address: tuple[str, int]
    writer: asyncio.StreamWriter | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.on_datagram(data, Origin("UDP", (addr[0], addr[1])))


class SipServer:
    """Listens for calls and runs their signalling; ``on_incoming`` tells the app (webhook)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5060,
        *,
        allowed_sources: Sequence[str] = (),
        digest_user: str | None = None,
        digest_password: str | None = None,
        ring_timeout_s: float = 30.0,
        on_incoming: Callable[[SipCall], Awaitable[bool]] | None = None,
        on_ended: Callable[[SipCall], None] = lambda _call: None,
        realm: str = "openrealtime",
        transports: Sequence[str] = ("udp", "tcp"),
        tls: TlsConfig | None = None,
        tls_port: int = DEFAULT_TLS_PORT,
        media_security: MediaSecurity = "either",
    ) -> None:
        unknown = sorted(set(transports) - set(TRANSPORTS))
        if unknown or not transports:
            raise ValueError(f"SIP transports must be some of {', '.join(TRANSPORTS)}, not {unknown}")
        if "tls" in transports and tls is None:
            raise ValueError("SIP over TLS needs a certificate (sip_tls_certfile)")
        self.transports = tuple(transports)
        self.tls = tls
        self.tls_port = tls_port
        self.media_security: MediaSecurity = media_security
        self._server_ssl = tls.server_context() if tls is not None and "tls" in transports else None
        self._client_ssl = tls.client_context() if tls is not None and "tls" in transports else None
        self.host = host
        self.port = port
        self.media_host = "127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host
        self.networks = [ipaddress.ip_network(source, strict=False) for source in allowed_sources]
        self.digest_user = digest_user
        self.digest_password = digest_password
        self.ring_timeout_s = ring_timeout_s
        self.on_incoming = on_incoming
        self.on_ended = on_ended
        self.realm = realm
        self.calls: dict[str, SipCall] = {}  # by rtc_ call id
        self._by_dialog: dict[str, SipCall] = {}  # by SIP Call-ID
        self._origins: dict[str, Origin] = {}  # rtc_ call id → where the INVITE came from
        self._invites: dict[str, InviteServerTransaction] = {}  # rtc_ call id → its INVITE txn
        self._acks: dict[str, AckWaiter] = {}
        self._server_txns: dict[
            tuple[str, str, str], InviteServerTransaction | NonInviteServerTransaction
        ] = {}
        self._client_txns: dict[str, NonInviteClientTransaction] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tls: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._nonce_key = secrets.token_bytes(32)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if "udp" in self.transports:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
            self._udp = transport
            self.port = transport.get_extra_info("sockname")[1]
        if "tcp" in self.transports:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
            self.port = self._tcp.sockets[0].getsockname()[1]
        if "tls" in self.transports:
            self._tls = await asyncio.start_server(
                self._serve_tls,
                self.host,
                self.tls_port,
                ssl=self._server_ssl,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )
            self.tls_port = self._tls.sockets[0].getsockname()[1]
        plain = [name.upper() for name in self.transports if name != "tls"]
        log.info(
            "SIP listening on %s: %s%s; media: %s",
            self.host,
            f"{self.port} ({', '.join(plain)})" if plain else "",
            f"{', ' if plain else ''}{self.tls_port} (TLS)" if self._tls is not None else "",
            self.media_security,
        )

    async def stop(self) -> None:
        await asyncio.gather(*(call.close() for call in list(self.calls.values())), return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        if self._tls is not None:
            self._tls.close()
        writers = list(self._connections)
        for writer in writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(TimeoutError):  # let each connection's reader see its end
            await asyncio.wait_for(
                asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True), 2.0
            )
        await asyncio.sleep(0)

    # ---------------------------------------------------------------- transports

    def on_datagram(self, data: bytes, origin: Origin) -> None:
        if data.strip() == b"":
            return  # keep-alive
        self._on_message(data, origin)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self._read_stream(reader, Origin("TCP", (peer[0], peer[1]), writer))

    async def _serve_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self._read_stream(reader, Origin("TLS", (peer[0], peer[1]), writer))

    async def _read_stream(self, reader: asyncio.StreamReader, origin: Origin) -> None:
        """Messages off one TCP or TLS connection (one we accepted or opened), until it ends."""
        writer = origin.writer
        assert writer is not None
        framer = StreamFramer()
        self._connections.add(writer)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                try:
                    messages = framer.feed(data)
                except SipParseError:
                    return  # a stream we cannot frame any more: drop the connection
                for message in messages:
                    self._on_message(message, origin)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _connect(self, call: SipCall, transport: str) -> Origin | None:
        """A new connection to the caller for our in-dialog requests (RFC 3261 §12.2.1.1: the
        first Route of the dialog's route set, else its remote target), read like any other."""
        dialog = call.dialog
        uri = uri_of(dialog.route_set[0]) if dialog.route_set else dialog.remote_target
        secure = transport == "TLS"
        target = host_port(uri, DEFAULT_TLS_PORT if secure else 5060)
        if target is None:
            return None
        host, port = target
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=self._client_ssl if secure else None,
                    server_hostname=host if secure else None,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if secure else None,
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.warning("call %s: cannot reach %s:%d over %s: %s", call.call_id, host, port, transport, exc)
            return None
        peer = writer.get_extra_info("peername")
        origin = Origin(transport, (peer[0], peer[1]), writer)
        self._spawn(self._read_stream(reader, origin), "sip-connection")
        return origin

    def _send(self, origin: Origin, data: bytes) -> None:
        if origin.writer is not None:
            if not origin.writer.is_closing():
                origin.writer.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, origin.address)

    def _sender(self, origin: Origin) -> Callable[[bytes], None]:
        return lambda data: self._send(origin, data)

    def _call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, fn)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- dispatch

    def _on_message(self, data: bytes, origin: Origin) -> None:
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._answer_unparsable(data, origin, str(exc))
            return
        try:
            if isinstance(message, SipResponse):
                self._on_response(message)
            else:
                self._on_request(message, origin)
        except Exception:  # a bug must not take the listener down
            log.exception("SIP message handling failed")

    def _answer_unparsable(self, data: bytes, origin: Origin, problem: str) -> None:
        """400 for a request we can still address (it has the headers a response copies)."""
        log.debug("unparsable SIP message from %s: %s", origin.address, problem)
        text = data.decode("utf-8", errors="replace")
        if text.startswith("SIP/"):
            return
        headers: list[tuple[str, str]] = []
        for line in text.replace("\r\n", "\n").split("\n")[1:]:
            if not line.strip():
                break
            match = re.match(r"^\s*([A-Za-z-]+)\s*:\s*(.*)$", line)
            if match:
                with contextlib.suppress(SipParseError):
                    request = SipRequest()
                    request.add(match.group(1), match.group(2).strip())
                    headers += request.headers
        stub = SipRequest(headers=headers, method="UNKNOWN", uri="sip:invalid")
        if any(stub.get(name) is None for name in ("Via", "From", "To", "Call-ID", "CSeq")):
            return
        reason = "Bad Request (" + re.sub(r"[^\x20-\x7e]", "?", problem)[:80] + ")"
        self._send(origin, build_response(stub, 400, reason).serialize())

    def _on_response(self, response: SipResponse) -> None:
        vias = response.get_all("Via")
        if not vias:
            return
        txn = self._client_txns.get(branch_of(vias[0]))
        if txn is not None:
            txn.on_response(response)

    def _on_request(self, request: SipRequest, origin: Origin) -> None:
        problem = missing_mandatory(request)
        if problem is not None:
            if request.method != "ACK" and request.get("Via") and problem != "Via":
                self._send(origin, build_response(request, 400, f"Missing or bad {problem}").serialize())
            return
        if request.method == "ACK":
            self._on_ack(request)
            return
        existing = self._server_txns.get(transaction_key(request))
        if existing is not None:
            existing.on_request(request)  # a retransmission
            return
        if request.method == "CANCEL":
            self._on_cancel(request, origin)
            return
        if request.method == "INVITE":
            if self._admitted(request, origin, None):
                self._on_invite(request, origin)
            return
        txn = self._non_invite_txn(request, origin)
        if not self._admitted(request, origin, txn):
            return
        handlers = {
            "BYE": self._on_bye,
            "OPTIONS": self._on_options,
            "NOTIFY": self._on_notify,
            "INFO": self._on_info,
        }
        handler = handlers.get(request.method)
        if handler is not None:
            handler(request, txn)
        else:
            known = request.method in (
                "REFER",
                "SUBSCRIBE",
                "MESSAGE",
                "UPDATE",
                "PRACK",
                "PUBLISH",
                "REGISTER",
            )
            txn.respond(build_response(request, 405 if known else 501, headers=[("Allow", ALLOW)]))

    def _forget_server_txn(self, txn: InviteServerTransaction | NonInviteServerTransaction) -> None:
        if self._server_txns.get(txn.key) is txn:
            del self._server_txns[txn.key]

    def _forget_client_txn(self, txn: NonInviteClientTransaction) -> None:
        self._client_txns.pop(txn.branch, None)

    def _non_invite_txn(self, request: SipRequest, origin: Origin) -> NonInviteServerTransaction:
        txn = NonInviteServerTransaction(
            request,
            self._sender(origin),
            self._call_later,
            reliable=origin.reliable,
            on_terminated=self._forget_server_txn,
        )
        self._server_txns[txn.key] = txn
        return txn

    # ---------------------------------------------------------------- admission

    def _admitted(self, request: SipRequest, origin: Origin, txn: NonInviteServerTransaction | None) -> bool:
        """Trunk allowlist, else digest; with neither configured, loopback callers only."""
        if request.method in ("BYE", "NOTIFY", "INFO") and self._dialog_call(request) is not None:
            return True  # in-dialog requests of an admitted call
        address = ipaddress.ip_address(origin.address[0])
        if any(address in network for network in self.networks):
            return True
        if self.digest_user and self.digest_password:
            if self._digest_ok(request):
                return True
            self._respond_outside(request, origin, txn, 401, [("WWW-Authenticate", self._challenge())])
            return False
        if not self.networks and address.is_loopback:
            return True
        self._respond_outside(request, origin, txn, 403, [])
        return False

    def _respond_outside(
        self,
        request: SipRequest,
        origin: Origin,
        txn: NonInviteServerTransaction | None,
        status: int,
        headers: list[tuple[str, str]],
    ) -> None:
        response = build_response(request, status, to_tag=new_tag(), headers=headers)
        if txn is not None:
            txn.respond(response)
            return
        invite_txn = self._invite_txn(request, origin)
        invite_txn.respond(response)

    def _challenge(self) -> str:
        stamp = str(int(time.time()))
        mac = hmac.new(self._nonce_key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f'Digest realm="{self.realm}", nonce="{stamp}.{mac}", algorithm=MD5, qop="auth"'

    def _digest_ok(self, request: SipRequest) -> bool:
        header = request.get("Authorization") or ""
        if not header.lower().startswith("digest "):
            return False
        params = dict(re.findall(r'(\w+)\s*=\s*"?([^",]*)"?', header[7:]))
        nonce = params.get("nonce", "")
        stamp, _, mac = nonce.partition(".")
        expected_mac = hmac.new(self._nonce_key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not stamp.isdigit() or not hmac.compare_digest(mac, expected_mac):
            return False
        if time.time() - int(stamp) > NONCE_LIFETIME_S:
            return False
        assert self.digest_user is not None and self.digest_password is not None
        if not hmac.compare_digest(params.get("username", ""), self.digest_user):
            return False
        if params.get("realm") != self.realm:
            return False
        ha1 = _md5(f"{self.digest_user}:{self.realm}:{self.digest_password}")
        ha2 = _md5(f"{request.method}:{params.get('uri', '')}")
        if params.get("qop") == "auth":
            expected = _md5(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}")
        else:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        return hmac.compare_digest(params.get("response", ""), expected)

    # ---------------------------------------------------------------- INVITE

    def _invite_txn(self, request: SipRequest, origin: Origin) -> InviteServerTransaction:
        txn = InviteServerTransaction(
            request,
            self._sender(origin),
            self._call_later,
            reliable=origin.reliable,
            on_terminated=self._forget_server_txn,
        )
        self._server_txns[txn.key] = txn
        return txn

    def _contact(self, origin: Origin, invite: SipRequest) -> str:
        if origin.transport == "TLS":
            if _sips_dialog(invite):
                return f"<sips:openrealtime@{self.media_host}:{self.tls_port}>"
            return f"<sip:openrealtime@{self.media_host}:{self.tls_port};transport=tls>"
        return f"<sip:openrealtime@{self.media_host}:{self.port};transport={origin.transport.lower()}>"

    def _on_invite(self, request: SipRequest, origin: Origin) -> None:
        if tag_of(request.get("To")):
            self._on_reinvite(request, origin)
            return
        known = self._by_dialog.get(request.call_id)
        if known is not None:  # the INVITE again with a new branch, after our 2xx: resend it
            waiter = self._acks.get(known.call_id)
            if waiter is not None:
                waiter.resend()
            return
        txn = self._invite_txn(request, origin)
        if request.uri.lower().startswith("sips:") and origin.transport != "TLS":
            txn.respond(  # RFC 3261 §8.2.2.1; a SIPS request must arrive over TLS
                build_response(
                    request,
                    416,
                    to_tag=new_tag(),
                    headers=[("Warning", '399 openrealtime "sips: URIs are served over TLS only"')],
                )
            )
            return
        txn.respond(build_response(request, 100))
        content_type = (request.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp" or not request.body:
            txn.respond(
                build_response(
                    request,
                    488,
                    to_tag=new_tag(),
                    headers=[("Warning", '399 openrealtime "An SDP offer is required"')],
                )
            )
            return
        offer = request.body.decode("utf-8", errors="replace")
        try:
            chosen = negotiate(offer, self.media_security)
        except NegotiationError as exc:
            warning = re.sub(r'["\\\r\n]', "'", str(exc))[:120]
            txn.respond(
                build_response(
                    request, 488, to_tag=new_tag(), headers=[("Warning", f'304 openrealtime "{warning}"')]
                )
            )
            return
        call_id = new_id(CALL_ID_PREFIX)
        dialog = Dialog.from_invite(request, new_tag())
        call = SipCall(call_id, request, offer, chosen, dialog, self)
        self.calls[call_id] = call
        self._by_dialog[request.call_id] = call
        self._origins[call_id] = origin
        self._invites[call_id] = txn
        txn.on_timeout = call.no_ack
        txn.respond(
            build_response(
                request, 180, to_tag=dialog.local_tag, headers=[("Contact", self._contact(origin, request))]
            )
        )
        call.ring_timer = asyncio.get_running_loop().call_later(self.ring_timeout_s, call.ring_timeout)
        log.info("incoming call %s from %s", call_id, request.get("From"))
        self._spawn(self._announce(call), "sip-webhook")

    async def _announce(self, call: SipCall) -> None:
        delivered = False
        if self.on_incoming is not None:
            try:
                delivered = await self.on_incoming(call)
            except Exception:
                log.exception("incoming-call handler failed")
        if not delivered and call.state == "ringing":
            log.info("call %s: nobody was told about it, declining", call.call_id)
            call.reject(503)

    def _on_reinvite(self, request: SipRequest, origin: Origin) -> None:
        txn = self._invite_txn(request, origin)
        call = self._dialog_call(request)
        if call is None or call.state != "active":
            txn.respond(build_response(request, 481, to_tag=tag_of(request.get("To"))))
            return
        if not call.dialog.accept_remote_cseq(request):
            txn.respond(build_response(request, 500, to_tag=call.dialog.local_tag))
            return
        response = build_response(
            request,
            200,
            to_tag=call.dialog.local_tag,
            headers=[("Contact", self._contact(origin, call.invite)), ("Content-Type", "application/sdp")],
            body=call.answer_sdp.encode(),
        )
        txn.respond(response)
        waiter = AckWaiter(
            response,
            self._sender(origin),
            self._call_later,
            reliable=origin.reliable,
            on_timeout=lambda: None,
        )
        self._acks[call.call_id] = waiter
        waiter.start(already_sent=True)

    def final_response(self, call: SipCall, status: int, *, body: bytes = b"") -> None:
        """Answer the call's INVITE (200 with our SDP on accept, an error on reject/timeout)."""
        txn = self._invites.pop(call.call_id, None)
        origin = self._origins.get(call.call_id)
        if txn is None or origin is None:
            return
        headers = [
            ("Contact", self._contact(origin, call.invite)),
            ("Allow", ALLOW),
            ("User-Agent", USER_AGENT),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = build_response(
            txn.request, status, to_tag=call.dialog.local_tag, headers=headers, body=body
        )
        txn.respond(response)
        if 200 <= status < 300:
            call.dialog.confirmed = True
            waiter = AckWaiter(
                response,
                self._sender(origin),
                self._call_later,
                reliable=origin.reliable,
                on_timeout=call.no_ack,
            )
            self._acks[call.call_id] = waiter
            waiter.start(already_sent=True)

    def _on_ack(self, request: SipRequest) -> None:
        txn = self._server_txns.get(transaction_key(request))
        if isinstance(txn, InviteServerTransaction):
            txn.on_request(request)  # ACK of a non-2xx final
            return
        call = self._dialog_call(request)
        if call is not None:
            waiter = self._acks.pop(call.call_id, None)
            if waiter is not None:
                waiter.ack()

    def _on_cancel(self, request: SipRequest, origin: Origin) -> None:
        txn = self._non_invite_txn(request, origin)
        branch, sent_by, _ = transaction_key(request)
        invite = self._server_txns.get((branch, sent_by, "INVITE"))
        if not isinstance(invite, InviteServerTransaction):
            txn.respond(build_response(request, 481, to_tag=new_tag()))
            return
        call = self._by_dialog.get(request.call_id)
        txn.respond(build_response(request, 200, to_tag=call.dialog.local_tag if call else new_tag()))
        if call is not None and call.state == "ringing":
            call.cancelled()
        elif invite.state == "proceeding":
            invite.respond(build_response(invite.request, 487, to_tag=new_tag()))

    # ---------------------------------------------------------------- in-dialog requests

    def _dialog_call(self, request: SipRequest) -> SipCall | None:
        call = self._by_dialog.get(request.call_id)
        return call if call is not None and call.dialog.matches(request) else None

    def _on_bye(self, request: SipRequest, txn: NonInviteServerTransaction) -> None:
        call = self._dialog_call(request)
        if call is None:
            txn.respond(build_response(request, 481))
            return
        txn.respond(build_response(request, 200))
        log.info("call %s: caller hung up", call.call_id)
        call.remote_hangup()

    def _on_options(self, request: SipRequest, txn: NonInviteServerTransaction) -> None:
        headers = [("Allow", ALLOW), ("Accept", "application/sdp"), ("User-Agent", USER_AGENT)]
        txn.respond(
            build_response(request, 200, to_tag=tag_of(request.get("To")) or new_tag(), headers=headers)
        )

    def _on_notify(self, request: SipRequest, txn: NonInviteServerTransaction) -> None:
        """Progress of a transfer we asked for (RFC 3515 sipfrag); a 2xx means it worked."""
        call = self._dialog_call(request)
        if call is None:
            txn.respond(build_response(request, 481))
            return
        txn.respond(build_response(request, 200))
        frag = request.body.decode("utf-8", errors="replace").strip()
        match = re.match(r"^SIP/2\.0\s+(\d{3})", frag)
        if match and 200 <= int(match.group(1)) < 300:
            log.info("call %s: transfer completed", call.call_id)
            call.transfer_finished()

    def _on_info(self, request: SipRequest, txn: NonInviteServerTransaction) -> None:
        """SIP INFO DTMF (``application/dtmf-relay``), for trunks that do not send RFC 4733."""
        call = self._dialog_call(request)
        if call is None:
            txn.respond(build_response(request, 481))
            return
        txn.respond(build_response(request, 200))
        body = request.body.decode("utf-8", errors="replace")
        match = re.search(r"Signal\s*=\s*([0-9*#A-Da-d])", body)
        if match:
            call.on_dtmf(match.group(1).upper())

    async def request(
        self, call: SipCall, method: str, headers: list[tuple[str, str]] | None = None
    ) -> SipResponse | None:
        """Send an in-dialog request (BYE, REFER) and wait for its final response. Over TCP or
        TLS it reuses the caller's connection, or opens a new one when that has closed."""
        origin = self._origins.get(call.call_id)
        if origin is None:
            return None
        if origin.writer is not None and origin.writer.is_closing():
            reconnected = await self._connect(call, origin.transport)
            if reconnected is None:
                return None
            origin = self._origins[call.call_id] = reconnected
        request = call.dialog.create_request(
            method,
            via_host=self.media_host,
            via_port=self.tls_port if origin.transport == "TLS" else self.port,
            transport=origin.transport,
            contact=self._contact(origin, call.invite),
            headers=headers,
        )
        done: asyncio.Future[SipResponse | None] = asyncio.get_running_loop().create_future()

        def final(response: SipResponse | None) -> None:
            if not done.done():
                done.set_result(response)

        txn = NonInviteClientTransaction(
            request,
            self._sender(origin),
            self._call_later,
            reliable=origin.reliable,
            on_final=final,
            on_terminated=self._forget_client_txn,
        )
        self._client_txns[txn.branch] = txn
        txn.start()
        return await done

    def call_ended(self, call: SipCall) -> None:
        self.calls.pop(call.call_id, None)
        if self._by_dialog.get(call.dialog.call_id) is call:
            self._spawn(self._forget_later(call), "sip-forget")
        waiter = self._acks.pop(call.call_id, None)
        if waiter is not None:
            waiter.cancel()
        self.on_ended(call)

    async def _forget_later(self, call: SipCall) -> None:
        """Keep the dialog a little longer so the BYE exchange and late retransmissions match."""
        await asyncio.sleep(32.0)
        if self._by_dialog.get(call.dialog.call_id) is call:
            del self._by_dialog[call.dialog.call_id]
        self._origins.pop(call.call_id, None)


def _sips_dialog(invite: SipRequest) -> bool:
    """RFC 3261 §12.1.1: a SIPS Request-URI, or a SIPS top Record-Route (the Contact when there
    is no Record-Route), makes the dialog a SIPS one, and our Contact must be ``sips:``."""
    routes = invite.get_all("Record-Route")
    contacts = invite.get_all("Contact")
    hop = uri_of(routes[0]) if routes else uri_of(contacts[0]) if contacts else ""
    return invite.uri.lower().startswith("sips:") or hop.lower().startswith("sips:")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
