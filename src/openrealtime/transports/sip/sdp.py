"""SDP offer/answer for telephone audio (RFC 3264, RFC 4566): G.711 at 8 kHz plus
RFC 4733 telephone-event, over plain RTP or SRTP keyed by SDES (RFC 4568: ``RTP/SAVP`` with
``a=crypto``, or ``RTP/AVP`` with ``a=crypto`` for best-effort SRTP). The server's media
security policy says which of the two it accepts. Anything we cannot play (no PCMU/PCMA, no
usable key, plain RTP where SRTP is required, no audio at all) is a ``NegotiationError``,
which the server turns into ``488 Not Acceptable Here``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from .srtp import SdesKeys, choose_crypto

CODECS = {"PCMU": 0, "PCMA": 8}
"""Our codecs by encoding name, with their static payload types."""
STATIC_NAMES = {0: "PCMU", 8: "PCMA"}
AUDIO_RATE = 8000
PLAIN_PROFILES = ("RTP/AVP", "RTP/AVPF")
SECURE_PROFILES = ("RTP/SAVP", "RTP/SAVPF")

MediaSecurity = Literal["rtp", "srtp", "either"]
"""Which media a call may use: plain RTP only, SRTP only (plain offers get 488), or either
(SRTP whenever the caller offers a usable key)."""


class NegotiationError(ValueError):
    """The offer has no media we can answer."""


@dataclass
class MediaOffer:
    kind: str
    port: int
    proto: str
    formats: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    direction: str = "sendrecv"
    address: str | None = None
    crypto: list[str] = field(default_factory=list)  # a=crypto values, in preference order


@dataclass(frozen=True)
class Negotiated:
    """What both sides will use: where to send RTP and with which payload types."""

    remote_address: str
    remote_port: int
    codec: str  # "PCMU" | "PCMA"
    payload_type: int
    dtmf_payload_type: int | None
    direction: str
    media_index: int
    srtp: SdesKeys | None = None
    """The SDES keys when the media is SRTP; None for plain RTP."""
    secure_profile: bool = False
    """The offer used ``RTP/SAVP(F)``, so the answer says ``RTP/SAVP`` (else ``RTP/AVP``)."""

    @property
    def format(self) -> str:
        return "audio/pcmu" if self.codec == "PCMU" else "audio/pcma"

    @property
    def media_security(self) -> str:
        """``"srtp"`` or ``"rtp"``: the webhook's ``data.sip_media_security``."""
        return "srtp" if self.srtp is not None else "rtp"


@dataclass
class SessionDescription:
    address: str | None
    media: list[MediaOffer]


def parse_sdp(text: str) -> SessionDescription:
    """The parts of an SDP body that offer/answer needs; raises ``NegotiationError``."""
    if not text.lstrip().startswith("v=0"):
        raise NegotiationError("not SDP")
    session_address: str | None = None
    media: list[MediaOffer] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "c":
            parts = value.split()
            address = parts[2].split("/")[0] if len(parts) >= 3 else None
            if media:
                media[-1].address = address
            else:
                session_address = address
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise NegotiationError("malformed m= line")
            try:
                port = int(parts[1].split("/")[0])
                formats = [int(f) for f in parts[3:] if f.isdigit()]
            except ValueError:
                raise NegotiationError("malformed m= line") from None
            if not 0 <= port <= 65535:
                raise NegotiationError("bad media port")
            media.append(MediaOffer(parts[0], port, parts[2], formats))
        elif kind == "a" and media:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                pt_text, _, encoding = rest.partition(" ")
                enc_parts = encoding.split("/")
                if pt_text.isdigit() and len(enc_parts) >= 2 and enc_parts[1].isdigit():
                    media[-1].rtpmap[int(pt_text)] = (enc_parts[0], int(enc_parts[1]))
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                media[-1].direction = name
            elif name == "crypto":
                media[-1].crypto.append(rest.strip())
    return SessionDescription(session_address, media)


def _encoding(offer: MediaOffer, pt: int) -> tuple[str, int] | None:
    if pt in offer.rtpmap:
        name, rate = offer.rtpmap[pt]
        return name.upper(), rate
    if pt in STATIC_NAMES:
        return STATIC_NAMES[pt], AUDIO_RATE
    return None


def _keys(offer: MediaOffer, security: MediaSecurity) -> tuple[SdesKeys | None, str | None]:
    """The SDES keys for a stream (None: plain RTP), or why the stream cannot be answered."""
    secure = offer.proto.upper() in SECURE_PROFILES
    if security == "rtp":
        return (None, "SRTP is not accepted here (plain RTP only)") if secure else (None, None)
    crypto, problems = choose_crypto(offer.crypto) if offer.crypto else (None, [])
    if crypto is not None:
        return SdesKeys.answer(crypto), None
    if secure or security == "srtp":
        detail = "; ".join(problems) if problems else "no a=crypto (SDES) key offered"
        required = "" if secure else "SRTP is required here: "
        return None, f"{required}{detail}"
    return None, None  # plain RTP, or best-effort SRTP we cannot use: answer plain


def negotiate(offer_text: str, security: MediaSecurity = "either") -> Negotiated:
    """Pick the offerer's most preferred G.711 codec on its first usable audio stream, with
    SRTP as ``security`` allows or requires."""
    description = parse_sdp(offer_text)
    reasons: list[str] = []
    for index, offer in enumerate(description.media):
        if offer.kind != "audio" or offer.port == 0:
            continue
        if offer.proto.upper() not in PLAIN_PROFILES + SECURE_PROFILES:
            reasons.append(f"unsupported media transport {offer.proto}")
            continue
        address = offer.address or description.address
        if not address:
            reasons.append("no connection address")
            continue
        codec: tuple[str, int] | None = None
        dtmf: int | None = None
        for pt in offer.formats:
            encoding = _encoding(offer, pt)
            if encoding is None:
                continue
            name, rate = encoding
            if codec is None and name in CODECS and rate == AUDIO_RATE:
                codec = (name, pt)
            elif dtmf is None and name == "TELEPHONE-EVENT" and rate == AUDIO_RATE:
                dtmf = pt
        if codec is None:
            reasons.append("no PCMU or PCMA at 8000 Hz offered")
            continue
        keys, problem = _keys(offer, security)
        if problem is not None:
            reasons.append(problem)
            continue
        direction = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offer.direction, offer.direction)
        secure_profile = offer.proto.upper() in SECURE_PROFILES
        return Negotiated(
            address, offer.port, codec[0], codec[1], dtmf, direction, index, keys, secure_profile
        )
    raise NegotiationError("; ".join(reasons) or "no audio stream offered")


def build_answer(offer_text: str, chosen: Negotiated, local_address: str, local_port: int) -> str:
    """Our answer: the chosen codec (+ telephone-event), every other stream refused (port 0)."""
    description = parse_sdp(offer_text)
    session_id = int(time.time())
    lines = [
        "v=0",
        f"o=openrealtime {session_id} {session_id} IN IP4 {local_address}",
        "s=openrealtime",
        f"c=IN IP4 {local_address}",
        "t=0 0",
    ]
    for index, offer in enumerate(description.media):
        if index != chosen.media_index:
            formats = " ".join(str(f) for f in offer.formats) or "0"
            lines.append(f"m={offer.kind} 0 {offer.proto} {formats}")
            continue
        pts = [chosen.payload_type] + (
            [chosen.dtmf_payload_type] if chosen.dtmf_payload_type is not None else []
        )
        profile = "RTP/SAVP" if chosen.secure_profile else "RTP/AVP"
        lines.append(f"m=audio {local_port} {profile} {' '.join(str(pt) for pt in pts)}")
        lines.append(f"a=rtpmap:{chosen.payload_type} {chosen.codec}/{AUDIO_RATE}")
        if chosen.dtmf_payload_type is not None:
            lines.append(f"a=rtpmap:{chosen.dtmf_payload_type} telephone-event/{AUDIO_RATE}")
            lines.append(f"a=fmtp:{chosen.dtmf_payload_type} 0-16")
        lines.append("a=ptime:20")
        lines.append(f"a={chosen.direction}")
        if chosen.srtp is not None:
            lines.append(f"a=crypto:{chosen.srtp.answer_attribute().value()}")
    return "\r\n".join(lines) + "\r\n"
