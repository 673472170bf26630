"""The playground's sign-in, cookie session, ``ek_`` minting and static files: over real HTTP
against the real server, and in Debian's Chromium. The API key must never reach the page."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Response, expect

from openrealtime.server.auth import Principal
from openrealtime.server.playground import COOKIE_NAME, PlaygroundSessions
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

PAGE_HEADERS = {"X-Playground": "1"}


@contextlib.contextmanager
def signed_in_client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/playground/login", json={"api_key": server.api_key}, headers=PAGE_HEADERS)
        assert response.status_code == 200, response.text
        yield client


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


# ------------------------------------------------------------------ sessions (one module)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sign_ins_expire_and_store_only_a_hash_of_the_token() -> None:
    clock = Clock()
    logins = PlaygroundSessions(60, clock=clock)
    principal = Principal(key_id="key_abc")
    token, login = logins.open(principal)
    assert login.expires_at == 1060
    assert logins.find(token) is not None and logins.find(token).principal == principal  # type: ignore[union-attr]
    assert token not in repr(logins._logins)
    assert logins.find(token + "x") is None and logins.find("") is None and logins.find(None) is None
    clock.now = 1060
    assert logins.find(token) is None
    assert len(logins) == 0


def test_sign_ins_are_capped_and_can_be_closed() -> None:
    clock = Clock()
    logins = PlaygroundSessions(60, limit=2, clock=clock)
    first, _ = logins.open(Principal("key_a"))
    clock.now += 1
    second, _ = logins.open(Principal("key_b"))
    clock.now += 1
    third, _ = logins.open(Principal("key_c"))
    assert logins.find(first) is None  # the oldest made room
    assert logins.find(second) is not None and logins.find(third) is not None
    logins.close(second)
    assert logins.find(second) is None and len(logins) == 1


# ------------------------------------------------------------------ over HTTP


def test_page_and_static_files_are_served_with_a_strict_policy(playground_server: ServerProcess) -> None:
    with httpx.Client(base_url=playground_server.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<script src="/playground/static/app.js"' in page.text
        for name, kind in [
            ("app.js", "text/javascript"),
            ("style.css", "text/css"),
            ("icon.svg", "image/svg"),
        ]:
            asset = client.get(f"/playground/static/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
        assert_openai_error(client.get("/playground/static/index.py"), 404, "not_found")
        assert client.get("/playground/static/..%2F..%2Fconfig.py").status_code == 404


def test_data_routes_refuse_a_visitor_without_the_cookie(playground_server: ServerProcess) -> None:
    with httpx.Client(base_url=playground_server.url) as client:
        assert_openai_error(client.get("/playground/me"), 401, "not_signed_in")
        assert_openai_error(client.get("/playground/voices"), 401, "not_signed_in")
        session = client.post("/playground/session", json={}, headers=PAGE_HEADERS)
        assert_openai_error(session, 401, "not_signed_in")
        client.cookies.set(COOKIE_NAME, "made-up-token")
        assert_openai_error(
            client.post("/playground/session", json={}, headers=PAGE_HEADERS), 401, "not_signed_in"
        )


def test_login_checks_the_key_and_refuses_cross_site_requests(playground_server: ServerProcess) -> None:
    with httpx.Client(base_url=playground_server.url) as client:
        body = {"api_key": playground_server.api_key}
        assert_openai_error(client.post("/playground/login", json=body), 403, "csrf_check_failed")
        evil = {**PAGE_HEADERS, "Origin": "http://evil.example"}
        assert_openai_error(
            client.post("/playground/login", json=body, headers=evil), 403, "csrf_check_failed"
        )
        wrong = client.post("/playground/login", json={"api_key": "sk-wrong"}, headers=PAGE_HEADERS)
        assert_openai_error(wrong, 401, "invalid_api_key")
        assert "set-cookie" not in wrong.headers
        missing = client.post("/playground/login", json={}, headers=PAGE_HEADERS)
        assert_openai_error(missing, 400, "missing_required_parameter")
        broken = client.post("/playground/login", content=b"{", headers=PAGE_HEADERS)
        assert_openai_error(broken, 400, "invalid_json")
        own = {**PAGE_HEADERS, "Origin": playground_server.url}
        assert client.post("/playground/login", json=body, headers=own).status_code == 200
        proxied = {**PAGE_HEADERS, "Origin": "https://voice.example", "X-Forwarded-Host": "voice.example"}
        assert client.post("/playground/login", json=body, headers=proxied).status_code == 200


def test_an_ephemeral_key_cannot_sign_in(playground_server: ServerProcess) -> None:
    with signed_in_client(playground_server) as client:
        minted = client.post("/playground/session", json={}, headers=PAGE_HEADERS).json()
    with httpx.Client(base_url=playground_server.url) as fresh:
        refused = fresh.post("/playground/login", json={"api_key": minted["value"]}, headers=PAGE_HEADERS)
        assert_openai_error(refused, 401, "invalid_api_key")


def test_signed_in_page_mints_bound_ephemeral_keys_without_ever_seeing_the_api_key(
    playground_server: ServerProcess,
) -> None:
    key = playground_server.api_key
    with httpx.Client(base_url=playground_server.url, timeout=30) as client:
        login = client.post("/playground/login", json={"api_key": key}, headers=PAGE_HEADERS)
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        assert key not in login.text and key not in cookie
        assert re.search(r"(?i)\bhttponly\b", cookie) and re.search(r"(?i)samesite=strict", cookie)
        token = client.cookies[COOKIE_NAME]
        assert len(token) >= 40 and key not in token

        me = client.get("/playground/me")
        assert me.status_code == 200 and me.json()["signed_in"] is True
        assert key not in me.text
        voices = client.get("/playground/voices").json()["data"]
        assert {"alloy", "marin"} <= {voice["name"] for voice in voices}

        config = {
            "type": "realtime",
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "semantic_vad"},
                },
                "output": {"voice": "marin"},
            },
        }
        assert_openai_error(
            client.post("/playground/session", json={"session": config}), 403, "csrf_check_failed"
        )
        minted = client.post("/playground/session", json={"session": config}, headers=PAGE_HEADERS)
        assert minted.status_code == 200, minted.text
        body = minted.json()
        assert set(body) == {"value", "expires_at", "session"}
        assert body["value"].startswith("ek_") and key not in minted.text
        assert body["session"]["instructions"] == "Be brief."
        assert body["session"]["audio"]["output"]["voice"] == "marin"
        assert body["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"

        # the minted key works on the API, as a browser would use it
        with_ek = httpx.get(
            playground_server.url + "/v1/voices", headers={"Authorization": f"Bearer {body['value']}"}
        )
        assert with_ek.status_code == 200

        bad = {"session": {"type": "realtime", "audio": {"output": {"voice": "nobody"}}}}
        error = assert_openai_error(
            client.post("/playground/session", json=bad, headers=PAGE_HEADERS), 400, "invalid_value"
        )
        assert error["param"] == "session.audio.output.voice"

        out = client.post("/playground/logout", headers=PAGE_HEADERS)
        assert out.status_code == 200
        client.cookies.set(COOKIE_NAME, token)  # a copy of the old cookie is worthless after sign-out
        assert_openai_error(client.get("/playground/me"), 401, "not_signed_in")


# ------------------------------------------------------------------ in the browser


def test_browser_sign_in_never_exposes_the_key_to_the_page(
    page: Page, playground_server: ServerProcess
) -> None:
    key = playground_server.api_key
    seen: list[str] = []

    def record(response: Response) -> None:
        if response.url.startswith(playground_server.url):
            seen.append(str(response.headers) + response.text())

    page.goto(playground_server.url + "/")
    expect(page.locator("#signin-view")).to_be_visible()
    page.fill("#api-key", "sk-not-a-key")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_contain_text("not valid")

    page.on("response", record)
    page.fill("#api-key", key)
    page.click("#signin-submit")
    expect(page.locator("#app-view")).to_be_visible()
    expect(page.locator("#voice option[value=alloy]")).to_have_count(1)
    assert page.input_value("#api-key") == ""

    page_state = page.evaluate(
        "() => document.cookie + '|' + JSON.stringify(localStorage) + '|' + JSON.stringify(sessionStorage)"
        " + '|' + document.documentElement.outerHTML"
    )
    assert key not in page_state
    assert COOKIE_NAME not in page_state  # HttpOnly: the script cannot read the cookie
    assert seen and not any(key in text for text in seen)

    page.reload()
    expect(page.locator("#app-view")).to_be_visible()  # the cookie keeps the visitor signed in
    page.click("#logout")
    expect(page.locator("#signin-view")).to_be_visible()
    status = page.evaluate("async () => (await fetch('/playground/me')).status")
    assert status == 401
