"""The ``realtime.call.incoming`` webhook (spec §4.3), signed the Standard Webhooks way, as
OpenAI does: ``webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``
where the secret is the base64 part of ``whsec_…``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from ...protocol.ids import new_id
from .message import SipRequest

log = logging.getLogger("openrealtime.sip.webhook")

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
AUTH_HEADERS = {
    "Authorization",
    "Proxy-Authorization",
    "Www-Authenticate",
    "WWW-Authenticate",
    "Proxy-Authenticate",
}


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (a plain string is used as it is)."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the webhook secret is not 'whsec_' followed by base64") from None
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    digest = hmac.new(
        secret_bytes(secret), f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def incoming_call_event(
    call_id: str, invite: SipRequest, *, media_security: str | None = None, now: int | None = None
) -> dict[str, Any]:
    """The event body: the INVITE's headers minus authentication headers, in order, and
    whether the call's media is encrypted (``"srtp"``) or not (``"rtp"``)."""
    data: dict[str, Any] = {
        "call_id": call_id,
        "sip_headers": [
            {"name": name, "value": value} for name, value in invite.headers if name not in AUTH_HEADERS
        ],
    }
    if media_security is not None:
        data["sip_media_security"] = media_security
    return {
        "id": new_id("evt_"),
        "object": "event",
        "type": "realtime.call.incoming",
        "created_at": int(time.time()) if now is None else now,
        "data": data,
    }


def signed_request(
    secret: str, event: dict[str, Any], *, now: int | None = None
) -> tuple[str, dict[str, str]]:
    """The exact body and headers to POST."""
    body = json.dumps(event, separators=(",", ":"))
    timestamp = int(time.time()) if now is None else now
    webhook_id = str(event["id"])
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
    return body, headers


async def deliver(
    url: str, secret: str, event: dict[str, Any], *, timeout: float = 5.0, attempts: int = 2
) -> bool:
    """POST the event; True once the receiver answered 2xx. Failures are logged, not raised."""
    body, headers = signed_request(secret, event)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for attempt in range(attempts):
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("webhook %s delivery failed (attempt %d): %s", event["id"], attempt + 1, exc)
                continue
            if 200 <= response.status_code < 300:
                return True
            log.warning("webhook %s answered %d (attempt %d)", event["id"], response.status_code, attempt + 1)
    return False
