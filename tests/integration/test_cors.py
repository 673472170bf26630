"""Cross-origin access per route. By default the WebRTC call route, made for ``ek_`` keys,
answers any origin without credentials (as OpenAI's API does, so a browser app on its own
origin can post its SDP offer); API-key, admin and playground routes answer no other origin
unless ``OPENREALTIME_CORS_ORIGINS`` lists it, and the playground's cookie routes keep their
own header check whatever is listed. The browser side is in tests/e2e/test_cross_origin_app.py."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from openrealtime.config import Settings
from openrealtime.server.app import create_app
from openrealtime.server.auth import KeyStore
from tests.support import ServerProcess

APP_ORIGIN = "https://voice-app.example"
OTHER_ORIGIN = "https://elsewhere.example"
CLOSED_BY_DEFAULT = [
    "/v1/realtime/client_secrets",
    "/v1/models",
    "/v1/voices",
    "/v1/usage",
    "/metrics",
    "/v1/realtime/calls/rtc_abc/hangup",
    "/v1/realtime/calls/rtc_abc/accept",
    "/playground/login",
    "/playground/session",
    # minting and call control on the beta shape's and Azure's paths: API keys, so closed too
    "/v1/realtime/sessions",
    "/v1/realtime/transcription_sessions",
    "/openai/v1/realtime/client_secrets",
    "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
    "/openai/v1/realtime/calls/rtc_abc/hangup",
    "/openai/v1/realtime/calls/rtc_abc/accept",
]
EPHEMERAL_KEY_CALL_ROUTES = [
    "/v1/realtime/calls",
    "/v1/realtime/calls?model=gpt-realtime",
    # Azure's GA call route (with and without its filter), the beta offer and Azure's preview one
    "/openai/v1/realtime/calls",
    "/openai/v1/realtime/calls?webrtcfilter=on",
    "/v1/realtime?model=gpt-4o-realtime-preview",
    "/v1/realtimertc?model=my-deployment",
]


def preflight(
    client: TestClient, path: str, origin: str, headers: str = "authorization,content-type"
) -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def app_client(origins: list[str]) -> TestClient:
    """The app without its lifespan: preflights are answered before any route runs."""
    return TestClient(
        create_app(Settings(cors_origins=origins), keys=KeyStore(["sk-unused"]), engines=lambda: None)
    )  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("listed", [[], [APP_ORIGIN]])
def test_the_call_route_answers_any_origin_without_credentials(listed: list[str]) -> None:
    client = app_client(listed)
    for path in EPHEMERAL_KEY_CALL_ROUTES:
        for origin in (APP_ORIGIN, OTHER_ORIGIN, "http://127.0.0.1:5173"):
            answer = preflight(client, path, origin, "authorization,content-type,x-openai-agents-sdk")
            assert answer.status_code == 200, answer.text
            assert answer.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in answer.headers
            assert "POST" in answer.headers["access-control-allow-methods"]
            allowed = answer.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
    # only what the route is for: no other method, no other header
    for path in EPHEMERAL_KEY_CALL_ROUTES:
        assert preflight(client, path, OTHER_ORIGIN, "x-playground").status_code == 400


def test_other_routes_answer_no_other_origin_by_default() -> None:
    client = app_client([])
    for path in CLOSED_BY_DEFAULT:
        answer = preflight(client, path, APP_ORIGIN)
        assert "access-control-allow-origin" not in answer.headers, (path, answer.headers)


def test_listed_origins_reach_the_api_routes_and_no_others() -> None:
    client = app_client([APP_ORIGIN])
    for path in ("/v1/realtime/client_secrets", "/v1/models", "/v1/usage"):
        granted = preflight(client, path, APP_ORIGIN)
        assert granted.status_code == 200 and granted.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "access-control-allow-credentials" not in granted.headers
        refused = preflight(client, path, OTHER_ORIGIN)
        assert "access-control-allow-origin" not in refused.headers
    # the playground's state-changing routes need the X-Playground header, which no other
    # origin is ever allowed to send, listed or not (and its cookie is SameSite=Strict)
    for path in ("/playground/login", "/playground/session", "/playground/logout"):
        answer = preflight(client, path, APP_ORIGIN, "content-type,x-playground")
        assert answer.status_code == 400, (path, answer.headers)


@pytest.mark.slow
def test_call_route_responses_carry_the_grant(text_server: ServerProcess) -> None:
    """On the real server, answers to the call route itself (errors too, so a page can read
    the message) carry the grant and expose ``Location``; API-key routes carry nothing."""
    refused = httpx.post(
        text_server.base_url + "/realtime/calls",
        content=b"v=0\r\n",
        headers={
            "Origin": APP_ORIGIN,
            "Authorization": "Bearer ek_unknown",
            "Content-Type": "application/sdp",
        },
    )
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["access-control-allow-origin"] == "*"
    assert "location" in refused.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-credentials" not in refused.headers
    minted = httpx.post(
        text_server.base_url + "/realtime/client_secrets",
        json={},
        headers={"Authorization": f"Bearer {text_server.api_key}", "Origin": APP_ORIGIN},
    )
    assert minted.status_code == 200 and "access-control-allow-origin" not in minted.headers
    bad_offer = httpx.post(
        text_server.base_url + "/realtime/calls",
        content=b"not sdp",
        headers={
            "Origin": APP_ORIGIN,
            "Authorization": f"Bearer {minted.json()['value']}",
            "Content-Type": "application/sdp",
        },
    )
    assert bad_offer.status_code == 400 and bad_offer.json()["error"]["code"] == "invalid_offer"
    assert bad_offer.headers["access-control-allow-origin"] == "*"
