"""Every route but health (and the playground's public page shell) refuses a request without a
valid key: none, a wrong API key, a made-up ephemeral key, and a real ephemeral key on the
routes only API keys may use. The route list comes from the app itself, so a new route is
covered the day it is added."""

from __future__ import annotations

import re

import httpx
import pytest
import websockets
from starlette.routing import WebSocketRoute

from openrealtime.config import Settings
from openrealtime.server.app import create_app
from openrealtime.server.auth import KeyStore
from openrealtime.server.dialects import is_azure_path
from tests.support import ServerProcess, validate_server_event

pytestmark = pytest.mark.slow

APP = create_app(Settings(), keys=KeyStore(["unused"]), engines=lambda: None)  # type: ignore[arg-type, return-value]
SCHEMA = APP.openapi()
SOCKETS = sorted(route.path for route in APP.routes if isinstance(route, WebSocketRoute))
PUBLIC = {("GET", "/healthz")}
# routes outside the schema: the playground's data routes (its page shell and static files are public)
PLAYGROUND = [("GET", "/playground/me"), ("GET", "/playground/voices"), ("POST", "/playground/session")]
ROUTES = (
    sorted(
        {
            (method.upper(), re.sub(r"\{[^}]+\}", "rtc_doesnotexist", path))
            for path, operations in SCHEMA["paths"].items()
            for method in operations
        }
        - PUBLIC
    )
    + PLAYGROUND
)
# where only API keys may act (an ephemeral key is for opening sessions, not for administration
# or for the audio endpoints, as on OpenAI where ephemeral keys are realtime-only)
ADMIN = {
    "/v1/usage",
    "/v1/recordings",
    "/v1/recordings/rtc_doesnotexist",
    "/metrics",
    "/v1/realtime/client_secrets",
    "/v1/audio/transcriptions",
    "/v1/audio/speech",
    "/openai/v1/realtime/client_secrets",
    "/v1/realtime/sessions",
    "/v1/realtime/transcription_sessions",
    "/openai/realtimeapi/sessions",
} | {p for m, p in ROUTES if "/calls/" in p}
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer sk-wrong"},
    {"Authorization": "Bearer ek_made_up"},
    {"api-key": "nope"},
]


def test_the_route_list_is_not_empty() -> None:
    paths = {path for _, path in ROUTES}
    assert {
        "/v1/models",
        "/v1/realtime/client_secrets",
        "/v1/realtime/calls",
        "/v1/usage",
        "/v1/recordings",
        "/v1/recordings/rtc_doesnotexist",
        "/metrics",
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
        # the beta shape's and Azure's routes
        "/v1/realtime",
        "/v1/realtime/sessions",
        "/v1/realtime/transcription_sessions",
        "/v1/realtimertc",
        "/openai/v1/realtime/client_secrets",
        "/openai/v1/realtime/calls",
        "/openai/v1/realtime/calls/rtc_doesnotexist/accept",
        "/openai/v1/realtime/calls/rtc_doesnotexist/hangup",
        "/openai/realtimeapi/sessions",
    } <= paths
    assert SOCKETS == ["/openai/realtime", "/openai/v1/realtime", "/v1/realtime"]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_way_in_without_a_valid_key(text_server: ServerProcess, method: str, path: str) -> None:
    # Azure's routes also take the key from the query
    queries = ["", "?api-key=nope"] if is_azure_path(path) else [""]
    for headers, query in [(headers, query) for headers in BAD_CREDENTIALS for query in queries]:
        response = httpx.request(method, text_server.url + path + query, headers=headers, timeout=30)
        assert response.status_code in (401, 403), (
            method,
            path,
            headers,
            response.status_code,
            response.text[:200],
        )
        assert text_server.api_key not in response.text


@pytest.mark.parametrize(("method", "path"), [route for route in ROUTES if route[1] in ADMIN])
def test_ephemeral_keys_cannot_administer(text_server: ServerProcess, method: str, path: str) -> None:
    minted = httpx.post(
        text_server.base_url + "/realtime/client_secrets",
        json={},
        headers={"Authorization": f"Bearer {text_server.api_key}"},
    ).json()["value"]
    response = httpx.request(
        method, text_server.url + path, headers={"Authorization": f"Bearer {minted}"}, timeout=30
    )
    assert response.status_code in (401, 403), (method, path, response.status_code, response.text[:200])


def test_health_needs_no_key(text_server: ServerProcess) -> None:
    assert httpx.get(text_server.url + "/healthz").status_code == 200


@pytest.mark.parametrize("path", SOCKETS)
async def test_no_session_on_a_socket_without_a_valid_key(text_server: ServerProcess, path: str) -> None:
    """The Realtime sockets: an ``invalid_api_key`` error, then the socket closes (spec §2.2)."""
    query = "?model=gpt-realtime&api-version=2025-08-28&deployment=gpt-realtime"
    attempts: list[tuple[dict[str, str], str]] = [(headers, "") for headers in BAD_CREDENTIALS]
    if is_azure_path(path):
        attempts.append(({}, "&api-key=nope"))
    for headers, extra in attempts:
        url = text_server.ws_url + path + query + extra
        async with websockets.connect(url, additional_headers=headers) as ws:
            event = validate_server_event(await ws.recv())
            assert event["type"] == "error" and event["error"]["code"] == "invalid_api_key", (path, headers)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
