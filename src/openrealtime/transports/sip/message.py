"""SIP messages (RFC 3261 §7): parsing, serializing and building responses.

Parsing never trusts the peer: anything malformed raises ``SipParseError`` (the server then
answers 400 when it can still address a response). Header order and repetition are kept,
because the webhook forwards the INVITE's headers in order.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024
SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "b": "Referred-By",
    "o": "Event",
    "u": "Allow-Events",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Call-ID", "CSeq", "WWW-Authenticate", "Max-Forwards", "Record-Route", "Content-Length",
        "Content-Type", "Refer-To", "Referred-By", "Allow-Events", "Subscription-State", "MIME-Version",
        "Proxy-Authorization", "Proxy-Authenticate", "Min-Expires", "User-Agent", "Retry-After",
    )
}  # fmt: skip
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class SipParseError(ValueError):
    """The bytes are not a usable SIP message."""


def canonical_name(name: str) -> str:
    """``via`` / ``v`` / ``VIA`` → ``Via`` (compact forms expanded)."""
    lower = name.strip().lower()
    if lower in COMPACT:
        return COMPACT[lower]
    if lower in _CANONICAL:
        return _CANONICAL[lower]
    return "-".join(part.capitalize() for part in lower.split("-"))


@dataclass
class SipMessage:
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str) -> str | None:
        wanted = canonical_name(name)
        return next((value for key, value in self.headers if key == wanted), None)

    def get_all(self, name: str) -> list[str]:
        wanted = canonical_name(name)
        values: list[str] = []
        for key, value in self.headers:
            if key == wanted:
                values.extend(split_header_values(value) if key in _LIST_HEADERS else [value])
        return values

    def set(self, name: str, value: str) -> None:
        wanted = canonical_name(name)
        self.headers = [(k, v) for k, v in self.headers if k != wanted]
        self.headers.append((wanted, value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical_name(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.get("CSeq") or "")

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        lines += [f"{name}: {value}" for name, value in self.headers if name != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class SipRequest(SipMessage):
    method: str = ""
    uri: str = ""

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")


@dataclass
class SipResponse(SipMessage):
    status: int = 0
    reason: str = ""

    def serialize(self) -> bytes:
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")


_LIST_HEADERS = {"Via", "Route", "Record-Route", "Allow", "Supported", "Contact"}


def split_header_values(value: str) -> list[str]:
    """Comma-separated header values, ignoring commas inside quotes and ``<…>``."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(value):
        if char == '"' and (index == 0 or value[index - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        elif char == "," and not quoted and depth == 0:
            parts.append(value[start:index].strip())
            start = index + 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """One complete SIP message (a UDP datagram, or one message framed off a stream)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 §7.5: tolerate leading CRLFs
    if not lines:
        raise SipParseError("empty message")
    start = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or not _TOKEN.match(name.strip()):
            raise SipParseError(f"malformed header line {line[:40]!r}")
        headers.append((canonical_name(name), value.strip()))
    length_values = [v for k, v in headers if k == "Content-Length"]
    if length_values:
        try:
            length = int(length_values[0])
        except ValueError:
            raise SipParseError("bad Content-Length") from None
        if length < 0 or length > len(body):
            raise SipParseError("Content-Length does not match the body")
        body = body[:length]
    message: SipRequest | SipResponse
    parts = start.split(" ", 2)
    if start.startswith("SIP/"):
        if len(parts) < 2 or parts[0] != SIP_VERSION or not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError("malformed status line")
        message = SipResponse(
            headers=headers, body=body, status=int(parts[1]), reason=parts[2] if len(parts) > 2 else ""
        )
    else:
        if len(parts) != 3 or parts[2] != SIP_VERSION or not _TOKEN.match(parts[0]) or not parts[1]:
            raise SipParseError("malformed request line")
        message = SipRequest(headers=headers, body=body, method=parts[0].upper(), uri=parts[1])
    return message


def missing_mandatory(request: SipRequest) -> str | None:
    """The first mandatory header (RFC 3261 §8.1.1) that is absent or unusable, else None."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not request.get(name):
            return name
    try:
        _number, method = request.cseq
    except SipParseError:
        return "CSeq"
    if method != request.method and not (request.method == "ACK" and method == "ACK"):
        return "CSeq"
    if not request.get_all("Via")[0].upper().startswith("SIP/2.0/"):
        return "Via"
    return None


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        raise SipParseError("malformed CSeq")
    return int(parts[0]), parts[1].upper()


def header_params(value: str) -> dict[str, str]:
    """``;name=value`` parameters of a header value (after any ``<uri>``)."""
    tail = value.rsplit(">", 1)[1] if ">" in value else value
    params: dict[str, str] = {}
    for part in tail.split(";")[1:]:
        name, _, val = part.partition("=")
        if name.strip():
            params[name.strip().lower()] = val.strip().strip('"')
    return params


def tag_of(value: str | None) -> str:
    return header_params(value or "").get("tag", "")


def branch_of(via: str) -> str:
    return header_params(via).get("branch", "")


def uri_of(value: str) -> str:
    """The URI in a name-addr (``"Bob" <sip:bob@x>;tag=1``) or addr-spec header value."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def host_port(uri: str, default_port: int = 5060) -> tuple[str, int] | None:
    """Host and port of a ``sip:`` URI, or None when it has none usable."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = rest.partition(":")
    if not host:
        return None
    try:
        return host, int(port_text) if port_text else default_port
    except ValueError:
        return None


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def with_tag(value: str, tag: str) -> str:
    return value if tag_of(value) else f"{value};tag={tag}"


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` (§8.2.6): Via, From, To (+tag), Call-ID and CSeq copied."""
    copied: list[tuple[str, str]] = [(k, v) for k, v in request.headers if k == "Via"]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.get(name) or ""
        if name == "To" and to_tag and status != 100:
            value = with_tag(value, to_tag)
        copied.append((name, value))
    if status >= 180 and status < 300:
        copied += [(k, v) for k, v in request.headers if k == "Record-Route"]
    return SipResponse(
        headers=copied + [(canonical_name(k), v) for k, v in headers or []],
        body=body,
        status=status,
        reason=reason or REASONS.get(status, "Unknown"),
    )


class StreamFramer:
    """Splits a TCP byte stream into SIP messages by ``Content-Length`` (RFC 3261 §18.3)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]  # keep-alive CRLFs
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    raise SipParseError("headers too long")
                return messages
            head = bytes(self._buffer[:end]).decode("utf-8", errors="replace")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if canonical_name(name) == "Content-Length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        raise SipParseError("bad Content-Length") from None
            if length < 0 or length > MAX_MESSAGE_BYTES:
                raise SipParseError("bad Content-Length")
            total = end + 4 + length
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
