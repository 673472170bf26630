"""The UAS dialog: identifiers from the INVITE, matching in-dialog requests, our BYE/REFER."""

from __future__ import annotations

from openrealtime.transports.sip.dialog import Dialog
from openrealtime.transports.sip.message import SipRequest, parse_message, tag_of, uri_of


def invite() -> SipRequest:
    message = parse_message(
        b"INVITE sip:test@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"Record-Route: <sip:proxy1;lr>, <sip:proxy2;lr>\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
        b"To: <sip:test@127.0.0.1>\r\n"
        b"Call-ID: call-1\r\nCSeq: 7 INVITE\r\n"
        b"Contact: <sip:alice@10.0.0.1:5070;transport=udp>\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(message, SipRequest)
    return message


def test_dialog_from_invite_and_our_requests() -> None:
    dialog = Dialog.from_invite(invite(), "local9")
    assert dialog.remote_target == "sip:alice@10.0.0.1:5070;transport=udp"
    assert dialog.route_set == ["<sip:proxy1;lr>", "<sip:proxy2;lr>"]
    bye = dialog.create_request(
        "BYE", via_host="127.0.0.1", via_port=5060, transport="UDP", contact="<sip:me@x>"
    )
    refer = dialog.create_request(
        "REFER", via_host="127.0.0.1", via_port=5060, transport="UDP", contact="<sip:me@x>",
        headers=[("Refer-To", "<sip:desk@x>")],
    )  # fmt: skip
    parsed = parse_message(bye.serialize())
    assert isinstance(parsed, SipRequest)
    assert parsed.uri == dialog.remote_target and parsed.method == "BYE"
    assert tag_of(parsed.get("From")) == "local9" and tag_of(parsed.get("To")) == "a1"
    assert uri_of(parsed.get("From") or "") == "sip:test@127.0.0.1"
    assert parsed.get_all("Route") == ["<sip:proxy1;lr>", "<sip:proxy2;lr>"]
    assert parsed.cseq == (1, "BYE") and refer.cseq == (2, "REFER")
    assert bye.get_all("Via")[0] != refer.get_all("Via")[0]  # a new branch each


def test_in_dialog_requests_match_and_cseq_must_grow() -> None:
    dialog = Dialog.from_invite(invite(), "local9")
    bye = SipRequest(method="BYE", uri="sip:test@127.0.0.1")
    for name, value in [
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", "<sip:test@127.0.0.1>;tag=local9"),
        ("Call-ID", "call-1"),
        ("CSeq", "8 BYE"),
    ]:
        bye.add(name, value)
    assert dialog.matches(bye) and dialog.accept_remote_cseq(bye)
    assert not dialog.accept_remote_cseq(bye)  # the same CSeq again is not a new request
    stranger = SipRequest(headers=[(k, v.replace("a1", "zz")) for k, v in bye.headers], method="BYE")
    assert not dialog.matches(stranger)
