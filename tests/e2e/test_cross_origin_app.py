"""A browser app on its own origin, written from OpenAI's WebRTC guide, against the server in
its default configuration: the app's own web server (another loopback port) serves the page
and mints the ``ek_`` key from its backend; the page, in Debian's Chromium, posts its SDP offer
to ``/v1/realtime/calls`` across origins. The fake microphone plays a real recording; the call
must connect, events must arrive on ``oai-events`` and the answer's audio on the RTP track."""

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

from tests.support import ServerProcess

from .conftest import VIEWPORT, reference_transcript

pytestmark = pytest.mark.slow

PAGE = Path(__file__).with_name("cross_origin_app") / "index.html"
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


class WebApp:
    """The app's own web server: its page, and ``/token``, which mints an ephemeral key with
    the API key only this backend holds."""

    def __init__(self, realtime: ServerProcess) -> None:
        page = PAGE.read_text().replace("__REALTIME_BASE__", realtime.base_url).encode()
        minted: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/":
                    self.reply(200, "text/html; charset=utf-8", page)
                elif self.path == "/token":
                    response = httpx.post(
                        realtime.base_url + "/realtime/client_secrets",
                        json={"session": SESSION},
                        headers={"Authorization": f"Bearer {realtime.api_key}"},
                        timeout=30,
                    )
                    minted.append(response.json().get("value", ""))
                    self.reply(response.status_code, "application/json", response.content)
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
def web_app(playground_server: ServerProcess) -> Iterator[WebApp]:
    with WebApp(playground_server) as app:
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
