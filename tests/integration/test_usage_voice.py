"""Usage of a real spoken turn through the real server: user audio is 1 token per 100 ms,
assistant audio 1 per 50 ms, transcription billed on its own, cached prompt on the next turn,
and the ledger holds exactly what ``response.done`` reported."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from openrealtime.core.usage import ASSISTANT_AUDIO_MS_PER_TOKEN, USER_AUDIO_MS_PER_TOKEN
from openrealtime.storage.sqlite import SqliteStorage
from openrealtime.telemetry.prices import PriceTable
from tests.integration.usage_client import assert_row_matches, connect, usage
from tests.speech_audio import caller_audio
from tests.support import ServerProcess, run_server

pytestmark = pytest.mark.slow

PCM_BYTES_PER_MS = 48  # 24 kHz mono pcm16


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its own server, not the shared one: the test reads the whole ledger of its key."""
    with run_server(tmp_path_factory.mktemp("usage-voice")) as server:
        yield server


async def test_spoken_turn_usage_matches_the_audio_and_the_ledger(voice_server: ServerProcess) -> None:
    session = {
        "type": "realtime",
        "instructions": "Answer in one short sentence.",
        "audio": {
            "input": {"transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": None},
        },
    }
    speech = caller_audio("cards-005").astype("<i2").tobytes()
    speech_ms = len(speech) // PCM_BYTES_PER_MS
    async with connect(voice_server, voice_server.api_key, session) as caller:
        session_id = caller.events[0]["session"]["id"]
        await caller.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(speech).decode()})
        await caller.send({"type": "input_audio_buffer.commit"})
        await caller.until("input_audio_buffer.committed")
        await caller.send({"type": "response.create", "response": {"max_output_tokens": 24}})
        first_events = await caller.until("rate_limits.updated")
        if not any(e["type"].endswith("transcription.completed") for e in caller.events):
            await caller.until("conversation.item.input_audio_transcription.completed")
        await caller.say("Thanks. Say it again, shorter.")
        await caller.send({"type": "response.create", "response": {"max_output_tokens": 24}})
        second_events = await caller.until("rate_limits.updated")

    done = [
        next(e for e in events if e["type"] == "response.done") for events in (first_events, second_events)
    ]
    usages = [d["response"]["usage"] for d in done]
    heard = [
        sum(len(base64.b64decode(e["delta"])) for e in events if e["type"] == "response.output_audio.delta")
        // PCM_BYTES_PER_MS
        for events in (first_events, second_events)
    ]
    # the whole context is input audio of each response: the caller's speech, and from the
    # second response on also the first answer's audio (1 token / 50 ms)
    context_audio = [
        speech_ms // USER_AUDIO_MS_PER_TOKEN,
        speech_ms // USER_AUDIO_MS_PER_TOKEN + heard[0] // ASSISTANT_AUDIO_MS_PER_TOKEN,
    ]
    for wire, audio_ms, expected in zip(usages, heard, context_audio, strict=True):
        assert audio_ms > 0
        assert abs(wire["input_token_details"]["audio_tokens"] - expected) <= 1, (wire, expected)
        assert wire["output_token_details"]["audio_tokens"] == audio_ms // ASSISTANT_AUDIO_MS_PER_TOKEN
        assert wire["output_token_details"]["text_tokens"] > 0
        assert wire["input_tokens"] == sum(
            wire["input_token_details"][k] for k in ("text_tokens", "audio_tokens", "image_tokens")
        )
    assert usages[1]["input_token_details"]["cached_tokens"] > 0  # the first turn's prompt was reused
    # the caller's first utterance sits in that cached prefix: billed as cached audio
    assert usages[1]["input_token_details"]["cached_tokens_details"]["audio_tokens"] >= speech_ms // 100

    transcribed = next(e for e in caller.events if e["type"].endswith("transcription.completed"))
    assert transcribed["usage"]["input_token_details"]["audio_tokens"] == round(speech_ms / 100)

    [aggregate] = usage(voice_server, voice_server.api_key, group_by="session").json()["data"]
    assert aggregate["session_id"] == session_id
    assert (aggregate["responses"], aggregate["transcriptions"]) == (2, 1)
    storage = SqliteStorage(Path(voice_server.log_path).parent / "data" / "openrealtime.db")
    await storage.open()
    try:
        rows = {r.id: r for r in await storage.usage_records(session_id=session_id)}
    finally:
        await storage.close()
    for d in done:
        assert_row_matches(rows.pop(d["response"]["id"]), d["response"]["usage"])
    [transcription] = rows.values()
    assert transcription.kind == "transcription"
    assert transcription.input_audio_tokens == transcribed["usage"]["input_token_details"]["audio_tokens"]
    assert transcription.output_text_tokens == transcribed["usage"]["output_tokens"]
    assert transcription.cost_usd == pytest.approx(PriceTable().cost(transcription))
