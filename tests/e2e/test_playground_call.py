"""A whole conversation in the playground, in Debian's headless Chromium: the fake microphone
plays a real recorded utterance over WebRTC, the real server transcribes it and answers with
audio on the RTP track. Also measures click → first ``session.created`` over a few calls."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import time
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.support import ServerProcess

from .conftest import ARTIFACTS, REPO, reference_transcript

pytestmark = pytest.mark.slow

TURN_TIMEOUT_MS = 180_000
CONNECT_RUNS = 3
TURNS = 2

INBOUND_AUDIO = """async () => {
  const pc = window.__playground.pc;
  const totals = { bytes: 0, energy: 0 };
  if (!pc) return totals;
  (await pc.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      totals.bytes += report.bytesReceived || 0;
      totals.energy += report.totalAudioEnergy || 0;
    }
  });
  return totals;
}"""


def words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def sign_in(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    page.fill("#api-key", server.api_key)
    page.click("#signin-submit")
    expect(page.locator("#app-view")).to_be_visible()
    expect(page.locator("#voice option[value=alloy]")).to_have_count(1)


def start_call(page: Page) -> int:
    """Click start; returns the page's own measure of click → first ``session.created`` (ms)."""
    page.click("#start")
    page.wait_for_function("() => window.__playground.timings.sessionCreatedMs !== null")
    expect(page.locator("#start")).to_have_attribute("data-state", "live")
    created: int = page.evaluate("() => window.__playground.timings.sessionCreatedMs")
    return created


def stop_call(page: Page) -> None:
    page.click("#start")
    expect(page.locator("#start")).to_have_attribute("data-state", "idle")
    assert page.evaluate("() => window.__playground.pc") is None


def received_types(page: Page) -> list[str]:
    types: list[str] = page.evaluate(
        "() => window.__playground.events.filter((e) => e.dir === 'in').map((e) => e.event.type)"
    )
    return types


def test_a_spoken_turn_is_transcribed_and_answered_with_audio(
    page: Page, playground_server: ServerProcess
) -> None:
    sign_in(page, playground_server)
    connect_ms = [start_call(page)]

    # the server's transcript of the fake microphone's speech shows up on the page
    page.wait_for_function(
        "() => window.__playground.events.some("
        "(e) => e.event.type === 'conversation.item.input_audio_transcription.completed')",
        timeout=TURN_TIMEOUT_MS,
    )
    heard = " ".join(page.locator(".turn.user .bubble").all_inner_texts())
    expected = words(reference_transcript()) & {"ill", "disposed", "young", "man", "not"}
    assert len(words(heard) & expected) >= 3, (heard, reference_transcript())

    # the assistant answers: its transcript streams in, the latency readout shows a number
    page.wait_for_function(
        "() => [...document.querySelectorAll('.turn.assistant .bubble')].some((b) => b.textContent.trim())",
        timeout=TURN_TIMEOUT_MS,
    )
    # Chromium replays the capture file, so more turns follow: the readout keeps a median
    page.wait_for_function(f"() => window.__playground.latencies.length >= {TURNS}", timeout=TURN_TIMEOUT_MS)
    expect(page.locator("#latency-last")).to_have_text(re.compile(r"^\d+(\.\d)? m?s$"))
    expect(page.locator("#latency-median")).to_have_text(re.compile(r"^\d+(\.\d)? m?s$"))
    turn_ms: list[int] = page.evaluate("() => window.__playground.latencies.map((l) => l.ms)")
    assert all(ms > 0 for ms in turn_ms)

    # its audio arrives on the RTP track (no output_audio.delta on the data channel)
    deadline = time.monotonic() + TURN_TIMEOUT_MS / 1000
    while (inbound := page.evaluate(INBOUND_AUDIO))["energy"] <= 0:
        assert time.monotonic() < deadline, f"no audible audio on the RTP track: {inbound}"
        page.wait_for_timeout(200)
    assert inbound["bytes"] > 0
    assert (
        page.evaluate("() => document.getElementById('remote-audio').srcObject.getAudioTracks().length") == 1
    )
    page.wait_for_function(
        f"() => window.__playground.events.filter((e) => e.event.type === 'response.done').length >= {TURNS}",
        timeout=TURN_TIMEOUT_MS,
    )
    types = received_types(page)
    assert types[0] == "session.created"
    assert "response.output_audio.delta" not in types
    assert "output_audio_buffer.started" in types

    page.locator("#log-details > summary").click()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "playground.png"
    page.screenshot(path=str(screenshot))
    (REPO / "docs").mkdir(exist_ok=True)
    shutil.copyfile(screenshot, REPO / "docs" / "playground.png")

    stop_call(page)
    for _ in range(CONNECT_RUNS - 1):
        connect_ms.append(start_call(page))
        stop_call(page)
    assert all(ms > 0 for ms in connect_ms)

    report: dict[str, Any] = {
        "click_to_session_created_ms": connect_ms,
        "click_to_session_created_median_ms": statistics.median(connect_ms),
        "speech_stopped_to_first_reply_ms": turn_ms,
        "speech_stopped_to_first_reply_median_ms": statistics.median(turn_ms),
        "user_transcript": heard,
    }
    (ARTIFACTS / "playground-timings.json").write_text(json.dumps(report, indent=2))
    print(f"\nscreenshot: {screenshot}\nplayground timings: {json.dumps(report)}")


def force_tool_in_minted_session(page: Page, name: str) -> None:
    """Add ``tool_choice`` to the config the page asks to be bound to its ``ek_`` key, so the
    first response calls the tool whatever the small model would rather do."""

    def rewrite(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["session"]["tool_choice"] = {"type": "function", "name": name}
        route.continue_(post_data=json.dumps(body))

    page.route("**/playground/session", rewrite)


def test_a_tool_call_is_shown_and_its_typed_result_is_sent_back(
    page: Page, playground_server: ServerProcess
) -> None:
    sign_in(page, playground_server)
    tool = {
        "type": "function",
        "name": "note_request",
        "description": "Write down what the user said.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    }
    page.fill("#tools", json.dumps([tool]))
    force_tool_in_minted_session(page, "note_request")
    start_call(page)
    assert page.evaluate("() => window.__playground.session.tools.map((t) => t.name)") == ["note_request"]

    card = page.locator(".tool-call")
    expect(card.first).to_be_visible(timeout=TURN_TIMEOUT_MS)
    expect(card.first.locator(".tool-name")).to_have_text("note_request")
    expect(card.first.locator(".tool-args")).to_contain_text('"text"')

    # back to "auto" (a settings change goes out as session.update), then answer the call
    page.evaluate(
        "() => window.__playground.dc.send(JSON.stringify({type: 'session.update',"
        " session: {type: 'realtime', tool_choice: 'auto'}}))"
    )
    page.wait_for_function("() => window.__playground.session.tool_choice === 'auto'")
    card.first.locator(".tool-result").fill('{"saved": true}')
    card.first.locator("button[type=submit]").click()
    expect(card.first).to_have_class(re.compile(r"\banswered\b"))
    sent: list[dict[str, Any]] = page.evaluate(
        "() => window.__playground.events.filter((e) => e.dir === 'out').map((e) => e.event)"
    )
    outputs = [e for e in sent if e["type"] == "conversation.item.create"]
    assert outputs and outputs[0]["item"]["type"] == "function_call_output"
    assert outputs[0]["item"]["output"] == '{"saved": true}'
    assert any(e["type"] == "response.create" for e in sent)
    page.wait_for_function(
        "() => window.__playground.events.some((e) => e.event.type === 'conversation.item.added'"
        " && e.event.item.type === 'function_call_output')",
        timeout=TURN_TIMEOUT_MS,
    )
    # the model speaks about the result: a response after the output completes
    page.wait_for_function(
        "() => window.__playground.events.filter((e) => e.event.type === 'response.done').length >= 2",
        timeout=TURN_TIMEOUT_MS,
    )

    # turning detection off from the settings panel updates the live session
    page.click("label[for=turn-off]")
    expect(page.locator("#respond")).to_be_visible()
    page.wait_for_function("() => window.__playground.session.audio.input.turn_detection === null")
    errors = page.evaluate(
        "() => window.__playground.events.filter((e) => e.event.type === 'error').map((e) => e.event)"
    )
    assert not errors
    stop_call(page)
