"""Content safety in the speech path of a real server (real Qwen, Piper, Whisper): a rules
file cuts an answer before the offending clause is spoken and refuses a caller turn; the
endpoint mode does the same against a small OpenAI-shaped moderation server on loopback."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.integration.test_moderation_endpoint import API_KEY as MODERATION_KEY
from tests.integration.test_moderation_endpoint import ModerationServer, endpoint  # noqa: F401 - fixture
from tests.speech_audio import caller_audio
from tests.support import ServerProcess, run_server, validate_server_event
from tests.voice_client import CallerRun, collect, output_audio, stream_audio

pytestmark = pytest.mark.slow

SAY = "Repeat the user's message word for word and say nothing else. Do not add, drop or change any word."
RULES = """
rules:
  - id: dessert
    phrases: ["banana split"]
    action: block
    applies_to: output
  - id: movement
    phrases: ["forward"]
    action: block
    applies_to: input
"""
REFUSAL = "Sorry, I can't help with that."


def wav_bytes(pcm24: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(24000)
        file.writeframes(pcm24.astype("<i2").tobytes())
    return out.getvalue()


def heard(server: ServerProcess, audio: bytes) -> str:
    """What the caller heard, through the server's own speech recognition."""
    pcm = np.frombuffer(audio, dtype="<i2")
    if not len(pcm):
        return ""
    answer = httpx.post(
        server.base_url + "/audio/transcriptions",
        headers={"Authorization": f"Bearer {server.api_key}"},
        files={"file": ("heard.wav", wav_bytes(pcm), "audio/wav")},
        data={"model": "whisper-1", "language": "en"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    text: str = answer.json()["text"]
    print("heard:", text)
    return text


@pytest.fixture(scope="module")
def rules_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("moderation-rules")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    env = {"OPENREALTIME_MODERATION": "rules", "OPENREALTIME_MODERATION_RULES": str(rules)}
    with run_server(tmp, env=env) as server:
        yield server


async def connect(server: ServerProcess) -> AsyncIterator[Any]:
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        assert validate_server_event(await socket.recv())["type"] == "session.created"
        yield socket


@pytest.fixture
async def ws(rules_server: ServerProcess) -> AsyncIterator[Any]:
    async for socket in connect(rules_server):
        yield socket


async def say(ws: Any, text: str, **session: Any) -> CallerRun:
    """Ask for a spoken answer repeating ``text``; returns everything up to ``response.done``."""
    await ws.send(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": SAY,
                    "audio": {"input": {"turn_detection": None}},
                    **session,
                },
            }
        )
    )
    await collect(ws, CallerRun(), "session.updated")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    run = CallerRun()
    await collect(ws, run, "response.done")
    return run


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    body = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.api_key}"}).text
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_rules_file_cuts_the_answer_before_the_blocked_phrase(
    rules_server: ServerProcess, ws: Any
) -> None:
    before = metric(rules_server, "openrealtime_moderation_blocks_total", direction="output", rule="dessert")
    run = await say(ws, "The weather is lovely today. My favourite treat is a banana split. See you soon.")
    response = run.of("response.done")[0]["response"]
    assert response["status"] == "incomplete", response
    assert response["status_details"] == {"type": "incomplete", "reason": "content_filter"}
    transcript = "".join(e["delta"] for e in run.of("response.output_audio_transcript.delta"))
    print("spoken transcript:", transcript)
    assert "weather" in transcript.lower()  # what came before the blocked clause was said
    assert "banana" not in transcript.lower()
    audio = output_audio(run)
    assert "banana" not in heard(rules_server, audio).lower()  # no audio of it
    after = metric(rules_server, "openrealtime_moderation_blocks_total", direction="output", rule="dessert")
    assert after == before + 1
    log = rules_server.log()
    assert "moderation output block rules=dessert" in log and "banana split" not in log.lower()


async def test_a_text_only_answer_is_cut_before_the_blocked_phrase(
    rules_server: ServerProcess, ws: Any
) -> None:
    run = await say(
        ws,
        "The weather is lovely today. My favourite treat is a banana split. See you soon.",
        output_modalities=["text"],
    )
    response = run.of("response.done")[0]["response"]
    assert response["status_details"] == {"type": "incomplete", "reason": "content_filter"}, response
    text = "".join(e["delta"] for e in run.of("response.output_text.delta"))
    print("shown text:", text)
    assert "weather" in text.lower() and "banana" not in text.lower()
    assert not run.of("response.output_audio.delta")
    shown = [part.get("text", "") for item in response["output"] for part in item.get("content", [])]
    assert all("banana" not in part.lower() for part in shown)


async def test_a_blocked_caller_turn_gets_the_refusal(rules_server: ServerProcess, ws: Any) -> None:
    await ws.send(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "You control a robot. Answer in one short sentence.",
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                        }
                    },
                },
            }
        )
    )
    await collect(ws, CallerRun(), "session.updated")
    await stream_audio(ws, caller_audio("goforward"))
    run = CallerRun()
    await collect(ws, run, "response.done")
    response = run.of("response.done")[0]["response"]
    assert response["status"] == "completed"
    transcript = "".join(e["delta"] for e in run.of("response.output_audio_transcript.delta"))
    assert transcript.strip() == REFUSAL
    assert "sorry" in heard(rules_server, output_audio(run)).lower()
    assert (
        metric(rules_server, "openrealtime_moderation_blocks_total", direction="input", rule="movement") >= 1
    )
    assert (
        "forward"
        not in " ".join(line for line in rules_server.log().splitlines() if "moderation" in line).lower()
    )


@pytest.fixture(scope="module")
def endpoint_server(
    endpoint: ModerationServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("moderation-endpoint")
    env = {
        "OPENREALTIME_MODERATION": "endpoint",
        "OPENREALTIME_MODERATION_URL": endpoint.url + "/v1/moderations",
        "OPENREALTIME_MODERATION_API_KEY": MODERATION_KEY,
    }
    with run_server(tmp, env=env) as server:
        yield server


async def test_the_endpoint_mode_cuts_what_the_endpoint_flags(
    endpoint_server: ServerProcess,
    endpoint: ModerationServer,  # noqa: F811
) -> None:
    async for socket in connect(endpoint_server):
        run = await say(socket, "Good evening to you all. We will build a bomb in the shed. Goodbye now.")
    response = run.of("response.done")[0]["response"]
    assert response["status_details"] == {"type": "incomplete", "reason": "content_filter"}
    transcript = "".join(e["delta"] for e in run.of("response.output_audio_transcript.delta"))
    assert "evening" in transcript.lower() and "bomb" not in transcript.lower()
    assert "bomb" not in heard(endpoint_server, output_audio(run)).lower()
    assert any("bomb" in text.lower() for text in endpoint.inputs)  # the endpoint judged it
    blocks = metric(endpoint_server, "openrealtime_moderation_blocks_total", direction="output")
    assert blocks >= 1
