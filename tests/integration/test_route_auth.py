"""Every route but health (and the playground's public page shell) refuses a request without a
valid key: none, a wrong API key, a made-up ephemeral key, and a real ephemeral key on the
routes only API keys may use. The route list comes from the app itself, so a new route is
covered the day it is added."""

from __future__ import annotations

import re

import httpx
import pytest

from openrealtime.config import Settings
from openrealtime.server.app import create_app
from openrealtime.server.auth import KeyStore
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

SCHEMA = create_app(Settings(), keys=KeyStore(["unused"]), engines=lambda: None).openapi()  # type: ignore[arg-type, return-value]
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
    "/metrics",
    "/v1/realtime/client_secrets",
    "/v1/audio/transcriptions",
    "/v1/audio/speech",
} | {p for m, p in ROUTES if "/calls/" in p}


def test_the_route_list_is_not_empty() -> None:
    paths = {path for _, path in ROUTES}
    assert {
        "/v1/models",
        "/v1/realtime/client_secrets",
        "/v1/realtime/calls",
        "/v1/usage",
        "/metrics",
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
    } <= paths


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_way_in_without_a_valid_key(text_server: ServerProcess, method: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer sk-wrong"},
        {"Authorization": "Bearer ek_made_up"},
        {"api-key": "nope"},
    ):
        response = httpx.request(method, text_server.url + path, headers=headers, timeout=30)
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
