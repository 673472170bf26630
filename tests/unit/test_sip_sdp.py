"""SDP offer/answer for telephone audio: codec choice, telephone-event, 488 cases."""

from __future__ import annotations

import pytest

from openrealtime.transports.sip.sdp import NegotiationError, build_answer, negotiate, parse_sdp


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
