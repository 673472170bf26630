"""SDP offer/answer for telephone audio: codec choice, telephone-event, SRTP keys (SDES),
488 cases."""

from __future__ import annotations

import pytest

from openrealtime.transports.sip.sdp import (
    MediaSecurity,
    NegotiationError,
    build_answer,
    negotiate,
    parse_sdp,
)
from openrealtime.transports.sip.srtp import CryptoAttribute


def offer(media: str, connection: str = "c=IN IP4 192.0.2.10\r\n") -> str:
    return f"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\n{connection}t=0 0\r\n{media}"


BARESIP_LIKE = offer(
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def test_the_offerers_first_g711_codec_and_telephone_event_are_chosen() -> None:
    chosen = negotiate(BARESIP_LIKE)
    assert (chosen.codec, chosen.payload_type, chosen.dtmf_payload_type) == ("PCMA", 8, 101)
    assert (chosen.remote_address, chosen.remote_port) == ("192.0.2.10", 40000)
    assert chosen.format == "audio/pcma"


def test_static_payload_types_need_no_rtpmap_and_direction_is_mirrored() -> None:
    chosen = negotiate(offer("m=audio 5004 RTP/AVP 0\r\na=sendonly\r\n"))
    assert chosen.codec == "PCMU" and chosen.dtmf_payload_type is None
    assert chosen.direction == "recvonly"


def test_answer_lists_only_what_was_chosen_and_refuses_other_streams() -> None:
    text = offer(
        "m=video 6000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
        "m=audio 40000 RTP/AVP 111 0 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    chosen = negotiate(text)
    answer = build_answer(text, chosen, "127.0.0.1", 30000)
    parsed = parse_sdp(answer)
    assert [(m.kind, m.port) for m in parsed.media] == [("video", 0), ("audio", 30000)]
    assert parsed.media[1].formats == [0, 101]
    assert "a=rtpmap:101 telephone-event/8000" in answer and "a=ptime:20" in answer
    assert parsed.address == "127.0.0.1" and "opus" not in answer


@pytest.mark.parametrize(
    "text",
    [
        offer("m=audio 40000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"),  # no G.711
        offer("m=audio 40000 RTP/SAVP 0\r\n"),  # SRTP only
        offer("m=video 40000 RTP/AVP 96\r\n"),  # no audio
        offer("m=audio 0 RTP/AVP 0\r\n"),  # refused stream
        offer("m=audio 40000 RTP/AVP 0\r\n", connection=""),  # nowhere to send
        offer("m=audio 40000 RTP/AVP 96\r\na=rtpmap:96 PCMU/16000\r\n"),  # wrong clock rate
        offer("m=audio 99999 RTP/AVP 0\r\n"),
        offer("m=audio\r\n"),
        "not sdp at all",
    ],
)
def test_unusable_offers_raise_negotiation_errors(text: str) -> None:
    with pytest.raises(NegotiationError):
        negotiate(text)


# ------------------------------------------------------------------ SRTP (SDES, RFC 4568)

CRYPTO_80 = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:9DCOPQlsj5Bhuabd7lfOgwmH/ckIIaPmtUFwfT7I\r\n"
SAVP = offer(
    "m=audio 7486 RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n" + CRYPTO_80
)
"""What baresip with ``mediaenc=srtp-mand`` offers."""
BEST_EFFORT = SAVP.replace("RTP/SAVP", "RTP/AVP")
"""baresip's ``mediaenc=srtp``: plain profile, keys offered in case the answerer wants them."""


def answer_crypto(answer: str) -> CryptoAttribute:
    lines = [line for line in answer.split("\r\n") if line.startswith("a=crypto:")]
    assert len(lines) == 1, answer
    return CryptoAttribute.parse(lines[0][len("a=crypto:") :])


@pytest.mark.parametrize("security", ["either", "srtp"])
def test_an_savp_offer_gets_an_savp_answer_with_our_own_key(security: MediaSecurity) -> None:
    chosen = negotiate(SAVP, security)
    assert chosen.srtp is not None and chosen.media_security == "srtp"
    assert (chosen.codec, chosen.dtmf_payload_type) == ("PCMU", 101)
    offered = CryptoAttribute.parse(CRYPTO_80.strip()[len("a=crypto:") :])
    assert chosen.srtp.remote_key == offered.key
    answer = build_answer(SAVP, chosen, "127.0.0.1", 30000)
    assert "m=audio 30000 RTP/SAVP 0 101\r\n" in answer
    ours = answer_crypto(answer)
    assert (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert ours.key == chosen.srtp.local_key != offered.key
    assert parse_sdp(answer).media[0].crypto == [ours.value()]


def test_best_effort_srtp_is_answered_with_keys_on_the_plain_profile() -> None:
    chosen = negotiate(BEST_EFFORT, "either")
    assert chosen.media_security == "srtp"
    answer = build_answer(BEST_EFFORT, chosen, "127.0.0.1", 30000)
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in answer and answer_crypto(answer).suite.startswith("AES")
    plain = negotiate(BEST_EFFORT, "rtp")  # keys ignored: plain RTP
    assert plain.srtp is None and plain.media_security == "rtp"
    assert "a=crypto" not in build_answer(BEST_EFFORT, plain, "127.0.0.1", 30000)


def test_plain_offers_stay_plain_unless_srtp_is_required() -> None:
    allowed: tuple[MediaSecurity, ...] = ("either", "rtp")
    for security in allowed:
        chosen = negotiate(BARESIP_LIKE, security)
        assert chosen.srtp is None and chosen.media_security == "rtp"
        assert "a=crypto" not in build_answer(BARESIP_LIKE, chosen, "127.0.0.1", 30000)
    with pytest.raises(NegotiationError, match="SRTP is required"):
        negotiate(BARESIP_LIKE, "srtp")


def test_the_first_usable_crypto_line_is_answered() -> None:
    text = SAVP.replace(
        CRYPTO_80,
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 62 + "==\r\n"
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:9DCOPQlsj5Bhuabd7lfOgwmH/ckIIaPmtUFwfT7I|2^31\r\n"
        + CRYPTO_80.replace("crypto:1", "crypto:3"),
    )
    chosen = negotiate(text)
    assert chosen.srtp is not None and (chosen.srtp.tag, chosen.srtp.suite) == (2, "AES_CM_128_HMAC_SHA1_32")
    assert answer_crypto(build_answer(text, chosen, "127.0.0.1", 1)).tag == 2


@pytest.mark.parametrize(
    ("text", "security", "reason"),
    [
        (SAVP, "rtp", "SRTP is not accepted here"),
        (SAVP.replace(CRYPTO_80, ""), "either", "no a=crypto"),
        (
            SAVP.replace("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80"),
            "either",
            "unsupported crypto suite",
        ),
        (SAVP.replace("fT7I", "fT7I|2^20|1:4"), "srtp", "MKI"),
        (BEST_EFFORT.replace("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80"), "srtp", "SRTP is required"),
        (SAVP.replace("RTP/SAVP", "UDP/TLS/RTP/SAVP"), "either", "unsupported media transport"),
    ],
)
def test_srtp_offers_we_cannot_answer_get_a_reason(text: str, security: MediaSecurity, reason: str) -> None:
    with pytest.raises(NegotiationError, match=reason):
        negotiate(text, security)
