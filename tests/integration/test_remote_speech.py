"""A session whose transcription and speech run on a second openrealtime's audio endpoints
(``ASR_BASE_URL`` / ``TTS_BASE_URL``), then on its own engines once that server is stopped.
Two real servers, real recorded speech, the openai SDK as the caller."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from openrealtime.engines.asr.wer import corpus_wer
from tests.speech_audio import caller_audio, transcripts
from tests.support import ServerProcess, run_server, validate_server_event

pytestmark = pytest.mark.slow

SESSION = {
    "type": "realtime",
    "instructions": "You are a card dealer. Answer in one short sentence.",
    "max_output_tokens": 40,
    "audio": {
        "input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        },
        "output": {"voice": "marin"},
    },
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """(gateway, speech server): the gateway's ASR and TTS are the speech server's endpoints."""
    with run_server(tmp_path_factory.mktemp("speech"), env={"OPENREALTIME_LLM": "smollm2-135m"}) as speech:
        env = {
            "OPENREALTIME_ASR_BASE_URL": speech.base_url,
            "OPENREALTIME_ASR_API_KEY": speech.api_key,
            "OPENREALTIME_TTS_BASE_URL": speech.base_url,
            "OPENREALTIME_TTS_API_KEY": speech.api_key,
        }
        with run_server(tmp_path_factory.mktemp("gateway"), env=env) as gateway:
            yield gateway, speech


def usage_of(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(
        server.base_url + "/usage", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30
    )
    response.raise_for_status()
    rows = response.json()["data"]
    return rows[0] if rows else {"transcriptions": 0, "output_token_details": {"audio_tokens": 0}}


async def spoken_turn(connection: Any, clip: str) -> tuple[str, dict[str, Any], bytes]:
    """Stream a recorded question at real-time pace; return its transcript, the response
    and the answer's audio."""
    audio = bytearray()
    transcript = ""
    done: dict[str, Any] = {}

    async def listen() -> None:
        nonlocal transcript, done
        while True:
            event = validate_server_event(await connection.recv_bytes())
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                transcript = event["transcript"]
            elif event["type"] == "response.output_audio.delta":
                audio.extend(base64.b64decode(event["delta"]))
            elif event["type"] == "response.done":
                done = event["response"]
                return

    listener = asyncio.create_task(listen())
    pcm = caller_audio(clip)
    for start in range(0, len(pcm), 960):
        chunk = pcm[start : start + 960]
        await connection.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk.tobytes()).decode()}
        )
        await asyncio.sleep(0.04)
    await asyncio.wait_for(listener, 180)
    # a client plays the answer before its caller speaks again (the server places the next
    # words after it): the answer's audio is 48 bytes per ms
    await asyncio.sleep(len(audio) / 48_000)
    return transcript, done, bytes(audio)


async def test_a_session_on_a_second_servers_speech_engines_then_on_its_own(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    gateway, speech = servers
    voices = httpx.get(
        gateway.base_url + "/voices", headers={"Authorization": f"Bearer {gateway.api_key}"}
    ).json()
    assert {row["engine"] for row in voices["data"]} == {"remote"}
    before = usage_of(speech)
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.api_key)
    async with client.realtime.connect(model="gpt-realtime") as connection:
        assert validate_server_event(await connection.recv_bytes())["type"] == "session.created"
        await connection.send({"type": "session.update", "session": SESSION})

        heard, response, audio = await spoken_turn(connection, "cards-005")
        assert corpus_wer([(transcripts()["cards-005"], heard)]) <= 0.25, heard
        assert response["status"] == "completed", response
        assert len(audio) > 48_000 * 0.5, len(audio)  # over half a second of answer
        after = usage_of(speech)
        # the speech server did the work: a transcription row and speech audio in its ledger
        assert after["transcriptions"] > before["transcriptions"]
        spoken = (
            after["output_token_details"]["audio_tokens"] - before["output_token_details"]["audio_tokens"]
        )
        heard_tokens = len(audio) // 48 // 50  # what the caller got, at 1 token per 50 ms
        assert spoken > 0 and abs(spoken - heard_tokens) <= 5, (spoken, heard_tokens)
        assert "transcribing locally" not in gateway.log() and "speaking locally" not in gateway.log()

        speech.process.terminate()  # the speech server goes away between turns
        speech.process.wait(30)

        heard, response, audio = await spoken_turn(connection, "librivox-0880")
        assert corpus_wer([(transcripts()["librivox-0880"], heard)]) <= 0.25, heard
        assert response["status"] == "completed", response
        assert len(audio) > 48_000 * 0.5, len(audio)
    log = gateway.log()
    assert "transcribing locally" in log and "speaking locally" in log
