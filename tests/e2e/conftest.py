"""Fixtures for the browser tests: the real server, Debian's Chromium driven by Playwright
(never a downloaded browser), and a fake microphone that plays a real recorded utterance."""

from __future__ import annotations

import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from openrealtime.audio.resample import resample
from tests.speech_audio import caller_audio, transcripts
from tests.support import ServerProcess

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CLIP = "librivox-0880"
""""he was not an ill disposed young man": 2.5 s of speech, distinctive words."""
TRAILING_SILENCE_S = 8.0
"""Chromium loops the capture file: the silence ends the turn and leaves room for the reply."""
FAKE_MIC_RATE = 48000
VIEWPORT = {"width": 1440, "height": 900}


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is missing: run scripts/system-deps.sh (apt-get install chromium)")
    return path


def reference_transcript() -> str:
    return transcripts()[CLIP]


def write_fake_mic(path: Path) -> Path:
    """The clip with room tone around it and silence after, as the 16-bit PCM WAV Chromium wants."""
    speech = resample(caller_audio(CLIP), 24000, FAKE_MIC_RATE)
    silence = np.zeros(int(TRAILING_SILENCE_S * FAKE_MIC_RATE), dtype=np.int16)
    samples = np.concatenate([speech, silence]).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(FAKE_MIC_RATE)
        wav.writeframes(samples.tobytes())
    return path


@pytest.fixture(scope="session")
def playground_server(voice_server: ServerProcess) -> ServerProcess:
    """The real server with its real speech models (the run's shared one)."""
    return voice_server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Per module: Playwright's sync API runs an event loop in this thread while it is open,
    which asyncio tests (pytest-asyncio) in later modules could not run beside."""
    wav = write_fake_mic(tmp_path_factory.mktemp("fake-mic") / f"{CLIP}.wav")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=[
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser, playground_server: ServerProcess) -> Iterator[BrowserContext]:
    """A fresh profile (no cookies) allowed to use the microphone on the server's origin."""
    ctx = browser.new_context(viewport=VIEWPORT, color_scheme="light")  # type: ignore[arg-type]
    ctx.grant_permissions(["microphone"], origin=playground_server.url)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    yield opened
