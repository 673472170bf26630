"""The ``realtime.call.incoming`` webhook: body shape and a signature the openai SDK accepts."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from openrealtime.transports.sip import webhook
from openrealtime.transports.sip.message import SipRequest

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def invite() -> SipRequest:
    request = SipRequest(method="INVITE", uri="sip:test@127.0.0.1")
    for name, value in [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"),
        ("From", "<sip:+15550100@trunk>;tag=1"),
        ("To", "<sip:test@127.0.0.1>"),
        ("Authorization", 'Digest username="trunk", response="secret"'),
        ("Call-ID", "abc"),
        ("X-Custom", "kept"),
    ]:
        request.add(name, value)
    return request


def test_the_openai_sdk_verifies_and_parses_our_webhook() -> None:
    client = OpenAI(api_key="unused")
    event = webhook.incoming_call_event("rtc_123", invite())
    body, headers = webhook.signed_request(SECRET, event)
    parsed = client.webhooks.unwrap(body, headers, secret=SECRET)
    assert parsed.type == "realtime.call.incoming"
    assert parsed.id.startswith("evt_") and parsed.data.call_id == "rtc_123"
    names = [header.name for header in parsed.data.sip_headers]
    assert names == ["Via", "From", "To", "Call-ID", "X-Custom"]  # order kept, auth removed
    assert headers["user-agent"].startswith("OpenAI/1.0")


def test_tampering_or_a_wrong_secret_fails_verification() -> None:
    client = OpenAI(api_key="unused")
    event = webhook.incoming_call_event("rtc_123", invite())
    body, headers = webhook.signed_request(SECRET, event)
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.unwrap(body.replace("rtc_123", "rtc_999"), headers, secret=SECRET)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=other)
    stale_body, stale_headers = webhook.signed_request(SECRET, event, now=int(time.time()) - 3600)
    with pytest.raises(InvalidWebhookSignatureError):
        client.webhooks.unwrap(stale_body, stale_headers, secret=SECRET)


def test_signature_is_hmac_of_id_timestamp_body() -> None:
    event = webhook.incoming_call_event("rtc_1", invite(), now=1700000000)
    body, headers = webhook.signed_request(SECRET, event, now=1700000000)
    assert json.loads(body)["created_at"] == 1700000000
    expected = webhook.sign(SECRET, headers["webhook-id"], 1700000000, body)
    assert headers["webhook-signature"] == expected and expected.startswith("v1,")
    with pytest.raises(ValueError):
        webhook.secret_bytes("whsec_not base64!")


@pytest.mark.parametrize("security", ["srtp", "rtp"])
def test_the_media_security_reaches_the_app(security: str) -> None:
    client = OpenAI(api_key="unused")
    event = webhook.incoming_call_event("rtc_1", invite(), media_security=security)
    body, headers = webhook.signed_request(SECRET, event)
    parsed = client.webhooks.unwrap(body, headers, secret=SECRET)
    assert parsed.data.sip_media_security == security
    assert "sip_media_security" not in webhook.incoming_call_event("rtc_1", invite())["data"]
