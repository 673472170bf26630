"""A browser app on its own origin, written from OpenAI's WebRTC guide, against the server in
its default configuration: the app's own web server (another loopback port) serves the page
and mints the ``ek_`` key from its backend; the page, in Debian's Chromium, posts its SDP offer
to ``/v1/realtime/calls`` across origins. The fake microphone plays a real recording; the call
must connect, events must arrive on ``oai-events`` and the answer's audio on the RTP track.

The same app written from Azure OpenAI's guides: GA (key from
``/openai/v1/realtime/client_secrets``, offer to ``/openai/v1/realtime/calls?webrtcfilter=on``,
only the filtered events on ``realtime-channel``) and the preview protocol (key from
``/openai/realtimeapi/sessions``, offer to ``/v1/realtimertc?model=…``, beta events)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from openrealtime.server.dialects import AZURE_WEBRTC_FILTER
from tests.support import ServerProcess, validate_beta_server_event, validate_server_event

from .conftest import VIEWPORT, reference_transcript

pytestmark = pytest.mark.slow

PAGES = Path(__file__).with_name("cross_origin_app")
PAGE = PAGES / "index.html"
DEPLOYMENT = "voice-app-deployment"
TURN_TIMEOUT_MS = 180_000
SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "Whatever the user says, reply with exactly this sentence: Thank you, I heard you.",
    "audio": {
        "input": {"transcription": {"model": "whisper-1", "language": "en"}},
        "output": {"voice": "marin"},
    },
}
"""What the app's backend binds to the key it mints (as in the guide's token route)."""

INBOUND_AUDIO = """async () => {
  const totals = { bytes: 0, energy: 0 };
  (await window.app.pc.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      totals.bytes += report.bytesReceived || 0;
      totals.energy += report.totalAudioEnergy || 0;
    }
  });
  return totals;
}"""

CROSS_ORIGIN_FETCH = """async ([url, init]) => {
  try {
    const response = await fetch(url, init);
    return `answered ${response.status}`;
  } catch (error) {
    return `blocked: ${error}`;
  }
}"""


def token(realtime: ServerProcess, flavour: str) -> tuple[int, bytes, str]:
    """What the app's backend does for ``/token``, per guide: status, body, the minted key."""
    if flavour == "azure":  # Azure's GA guide: its own answer carries the key as ``token``
        response = httpx.post(
            realtime.url + "/openai/v1/realtime/client_secrets",
            json={"session": {**SESSION, "model": DEPLOYMENT}},
            headers={"api-key": realtime.api_key},
            timeout=30,
        )
        value = response.json().get("value", "")
        return response.status_code, json.dumps({"token": value}).encode(), value
    if flavour == "azure-preview":  # Azure's preview guide: the sessions body, beta shape
        response = httpx.post(
            realtime.url + "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
            json={
                "model": DEPLOYMENT,
                "voice": "verse",
                "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            },
            headers={"api-key": realtime.api_key},
            timeout=30,
        )
        return response.status_code, response.content, response.json()["client_secret"]["value"]
    response = httpx.post(
        realtime.base_url + "/realtime/client_secrets",
        json={"session": SESSION},
        headers={"Authorization": f"Bearer {realtime.api_key}"},
        timeout=30,
    )
    return response.status_code, response.content, response.json().get("value", "")


def page_of(realtime: ServerProcess, flavour: str) -> bytes:
    if flavour == "azure":
        return (PAGES / "azure.html").read_text().replace("__AZURE_ENDPOINT__", realtime.url).encode()
    if flavour == "azure-preview":
        text = (PAGES / "azure_preview.html").read_text()
        text = text.replace("__WEBRTC_ORIGIN__", realtime.url).replace("__DEPLOYMENT__", DEPLOYMENT)
        return text.replace("__INSTRUCTIONS__", SESSION["instructions"]).encode()  # type: ignore[arg-type]
    return PAGE.read_text().replace("__REALTIME_BASE__", realtime.base_url).encode()


class WebApp:
    """The app's own web server: its page, and ``/token``, which mints an ephemeral key with
    the API key only this backend holds (``flavour``: which guide the app follows)."""

    def __init__(self, realtime: ServerProcess, flavour: str = "openai") -> None:
        page = page_of(realtime, flavour)
        minted: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/":
                    self.reply(200, "text/html; charset=utf-8", page)
                elif self.path == "/token":
                    status, body, value = token(realtime, flavour)
                    minted.append(value)
                    self.reply(status, "application/json", body)
                else:
                    self.reply(404, "text/plain", b"not found")

            def reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.minted = minted
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def flavour() -> str:
    return "openai"


@pytest.fixture
def web_app(playground_server: ServerProcess, flavour: str) -> Iterator[WebApp]:
    with WebApp(playground_server, flavour) as app:
        yield app


@pytest.fixture
def app_page(browser: Browser, web_app: WebApp) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.grant_permissions(["microphone"], origin=web_app.origin)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
    finally:
        context.close()


def words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def events_of(page: Page, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(f"() => window.app.events.filter((e) => e.type === {kind!r})")
    return found


def test_an_app_on_another_origin_holds_a_voice_call(
    app_page: Page, web_app: WebApp, playground_server: ServerProcess
) -> None:
    assert web_app.origin != playground_server.url
    app_page.goto(web_app.origin + "/")
    app_page.wait_for_function("() => window.app.status !== 'starting'")
    assert app_page.evaluate("() => window.app.status") == "connected", app_page.evaluate(
        "() => window.app.errors"
    )
    assert web_app.minted and web_app.minted[0].startswith("ek_")
    # the Location header is exposed to the page: it knows its call id
    assert re.fullmatch(r"rtc_[A-Za-z0-9_-]+", app_page.evaluate("() => window.app.callId") or "")

    # events arrive on the data channel: the session, then what the server heard
    app_page.wait_for_function(
        "() => window.app.events.some("
        "(e) => e.type === 'conversation.item.input_audio_transcription.completed')",
        timeout=TURN_TIMEOUT_MS,
    )
    heard = events_of(app_page, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
    expected = words(reference_transcript()) & {"ill", "disposed", "young", "man", "not"}
    assert len(words(heard) & expected) >= 3, (heard, reference_transcript())

    # the answer's audio comes back on the RTP track
    deadline = time.monotonic() + TURN_TIMEOUT_MS / 1000
    while (inbound := app_page.evaluate(INBOUND_AUDIO))["energy"] <= 0:
        assert time.monotonic() < deadline, f"no audible audio on the RTP track: {inbound}"
        app_page.wait_for_timeout(200)
    assert inbound["bytes"] > 0
    app_page.wait_for_function(
        "() => window.app.events.some((e) => e.type === 'response.done')", timeout=TURN_TIMEOUT_MS
    )
    types = [event["type"] for event in app_page.evaluate("() => window.app.events")]
    assert types[0] == "session.created"
    assert "output_audio_buffer.started" in types and "response.output_audio.delta" not in types
    session = events_of(app_page, "session.created")[0]["session"]
    assert session["instructions"] == SESSION["instructions"]  # the key's bound session
    done = events_of(app_page, "response.done")[0]["response"]
    assert done["status"] == "completed", json.dumps(done)[:1000]
    transcript = done["output"][0]["content"][0].get("transcript") or ""
    assert transcript.strip(), done

    # what the default configuration keeps closed to other origins: API-key and admin routes
    for url, init in [
        (playground_server.base_url + "/models", {"headers": {"Authorization": "Bearer sk-anything"}}),
        (
            playground_server.base_url + "/realtime/client_secrets",
            {
                "method": "POST",
                "body": "{}",
                "headers": {"Authorization": "Bearer sk-anything", "Content-Type": "application/json"},
            },
        ),
        (playground_server.url + "/playground/login", {"method": "POST", "headers": {"X-Playground": "1"}}),
    ]:
        outcome = app_page.evaluate(CROSS_ORIGIN_FETCH, [url, init])
        assert outcome.startswith("blocked: TypeError"), (url, outcome)


def wait_for_audio(page: Page) -> dict[str, Any]:
    deadline = time.monotonic() + TURN_TIMEOUT_MS / 1000
    while (inbound := page.evaluate(INBOUND_AUDIO))["energy"] <= 0:
        assert time.monotonic() < deadline, f"no audible audio on the RTP track: {inbound}"
        page.wait_for_timeout(200)
    return dict(inbound)


def heard_the_caller(page: Page) -> None:
    page.wait_for_function(
        "() => window.app.events.some("
        "(e) => e.type === 'conversation.item.input_audio_transcription.completed')",
        timeout=TURN_TIMEOUT_MS,
    )
    heard = events_of(page, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
    expected = words(reference_transcript()) & {"ill", "disposed", "young", "man", "not"}
    assert len(words(heard) & expected) >= 3, (heard, reference_transcript())


@pytest.mark.parametrize("flavour", ["azure"])
def test_an_azure_app_holds_a_voice_call_with_the_webrtc_filter(
    app_page: Page, web_app: WebApp, playground_server: ServerProcess
) -> None:
    """Azure's GA guide: the page gets the filtered events only (no session, so the
    instructions stay private; no response events) and the answer's audio on RTP."""
    app_page.goto(web_app.origin + "/")
    app_page.wait_for_function("() => window.app.status !== 'starting'")
    assert app_page.evaluate("() => window.app.status") == "connected", app_page.evaluate(
        "() => window.app.errors"
    )
    assert web_app.minted and web_app.minted[0].startswith("ek_")
    assert re.fullmatch(r"rtc_[A-Za-z0-9_-]+", app_page.evaluate("() => window.app.callId") or "")
    heard_the_caller(app_page)
    assert wait_for_audio(app_page)["bytes"] > 0
    app_page.wait_for_function(
        "() => window.app.events.some((e) => e.type === 'output_audio_buffer.stopped')",
        timeout=TURN_TIMEOUT_MS,
    )
    events = app_page.evaluate("() => window.app.events")
    for event in events:
        validate_server_event(json.dumps(event))
    types = {event["type"] for event in events}
    assert types <= AZURE_WEBRTC_FILTER, types - AZURE_WEBRTC_FILTER
    assert {"input_audio_buffer.speech_started", "output_audio_buffer.started"} <= types
    assert events_of(app_page, "response.output_audio_transcript.done")[0]["transcript"].strip()
    assert SESSION["instructions"] not in json.dumps(events)  # type: ignore[operator]


@pytest.mark.parametrize("flavour", ["azure-preview"])
def test_an_azure_preview_app_holds_a_voice_call_in_the_beta_shape(
    app_page: Page, web_app: WebApp, playground_server: ServerProcess
) -> None:
    """Azure's preview guide: beta events on the data channel, the page's beta
    ``session.update`` taken, the answer's audio on RTP."""
    app_page.goto(web_app.origin + "/")
    app_page.wait_for_function("() => window.app.status !== 'starting'")
    assert app_page.evaluate("() => window.app.status") == "connected", app_page.evaluate(
        "() => window.app.errors"
    )
    assert web_app.minted and web_app.minted[0].startswith("ek_")
    heard_the_caller(app_page)
    assert wait_for_audio(app_page)["bytes"] > 0
    app_page.wait_for_function(
        "() => window.app.events.some((e) => e.type === 'response.done')", timeout=TURN_TIMEOUT_MS
    )
    events = app_page.evaluate("() => window.app.events")
    for event in events:
        validate_beta_server_event(json.dumps(event))
    types = [event["type"] for event in events]
    assert types[:2] == ["session.created", "conversation.created"]
    assert events[0]["session"]["voice"] == "verse"  # from the sessions route
    updated = events_of(app_page, "session.updated")[0]["session"]
    assert updated["instructions"] == SESSION["instructions"]  # the page's beta session.update
    assert "response.audio_transcript.done" in types and "response.output_audio_transcript.done" not in types
    done = events_of(app_page, "response.done")[0]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["type"] == "audio"
