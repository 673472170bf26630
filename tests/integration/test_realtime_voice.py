"""Voice sessions end to end: real recorded speech streamed at real-time pace over a real
WebSocket into the real server (Silero VAD, smart-turn, Whisper, Qwen, Piper)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from openrealtime.audio import formats
from openrealtime.engines.asr.wer import corpus_wer
from tests.speech_audio import LEAD_MS, REFERENCE_EDGES, caller_audio, transcripts
from tests.support import ServerProcess, validate_server_event
from tests.voice_client import CallerRun, collect, output_audio, stream_audio

pytestmark = pytest.mark.slow

EDGE_TOLERANCE_MS = 100
FIXED_REPLY = (
    "Whatever the user says, reply with exactly this sentence: "
    "Thank you for calling, I heard you clearly and I will help you right away."
)
PREFIX_MS = 300


@pytest.fixture
async def ws(voice_server: ServerProcess) -> AsyncIterator[Any]:
    url = voice_server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {voice_server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        assert validate_server_event(await socket.recv())["type"] == "session.created"
        yield socket


async def update(ws: Any, **session: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    run = CallerRun()
    await collect(ws, run, "session.updated")
    return run.of("session.updated")[0]["session"]


def vad_audio(**turn: Any) -> dict[str, Any]:
    return {
        "input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "prefix_padding_ms": PREFIX_MS, **turn},
        }
    }


async def test_vad_edges_and_transcription_over_the_shared_set(ws: Any) -> None:
    """Every clip: speech_started/stopped within 100 ms of the annotated edges; WER ≤ 10 %."""
    await update(ws, audio=vad_audio(silence_duration_ms=300, create_response=False))
    references = transcripts()
    hypotheses: list[str] = []
    refs: list[str] = []
    for name, (onset, offset) in REFERENCE_EDGES.items():
        run = CallerRun()
        receiver = asyncio.create_task(
            collect(ws, run, "conversation.item.input_audio_transcription.completed")
        )
        await stream_audio(ws, caller_audio(name))
        await asyncio.wait_for(receiver, 60)
        started = run.of("input_audio_buffer.speech_started")
        stopped = run.of("input_audio_buffer.speech_stopped")
        assert len(started) == 1 and len(stopped) == 1, (
            name,
            [e["type"] for e in (r.event for r in run.events)],
        )
        expected_start = LEAD_MS + onset - PREFIX_MS
        expected_end = LEAD_MS + offset
        # the session clock runs on: edges are relative to this clip's first byte
        clip_origin = started[0]["audio_start_ms"] - expected_start
        assert abs(started[0]["audio_start_ms"] - (clip_origin + expected_start)) <= EDGE_TOLERANCE_MS
        assert abs(
            stopped[0]["audio_end_ms"] - started[0]["audio_start_ms"] - (expected_end - expected_start)
        ) <= (2 * EDGE_TOLERANCE_MS), (name, started[0], stopped[0])
        committed = run.of("input_audio_buffer.committed")[0]
        assert committed["item_id"] == started[0]["item_id"] == stopped[0]["item_id"]
        assert not run.of("response.created")
        completed = run.of("conversation.item.input_audio_transcription.completed")[0]
        assert completed["usage"]["type"] == "tokens" and completed["usage"]["input_tokens"] > 0
        deltas = "".join(e["delta"] for e in run.of("conversation.item.input_audio_transcription.delta"))
        assert deltas.split() == completed["transcript"].split()
        hypotheses.append(completed["transcript"])
        refs.append(references[name])
    wer = corpus_wer(zip(refs, hypotheses, strict=True))
    assert wer <= 0.10, (wer, list(zip(refs, hypotheses, strict=True)))


async def test_first_clip_absolute_edges(ws: Any) -> None:
    """On a fresh session the clock starts at the first appended byte."""
    await update(ws, audio=vad_audio(silence_duration_ms=500, create_response=False))
    onset, offset = REFERENCE_EDGES["librivox-0880"]
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "input_audio_buffer.committed"))
    await stream_audio(ws, caller_audio("librivox-0880"))
    await asyncio.wait_for(receiver, 30)
    started = run.of("input_audio_buffer.speech_started")[0]
    stopped = run.of("input_audio_buffer.speech_stopped")[0]
    assert abs(started["audio_start_ms"] - (LEAD_MS + onset - PREFIX_MS)) <= EDGE_TOLERANCE_MS
    assert abs(stopped["audio_end_ms"] - (LEAD_MS + offset)) <= EDGE_TOLERANCE_MS


async def answer_transcript_check(
    server: ServerProcess, audio: bytes, fmt: str, transcript: str, *, ssl: Any = None
) -> float:
    """Feed the answer's audio back through the server's own ASR; return the WER (``ssl``:
    the client context for a TLS server)."""
    pcm24 = formats.decode(fmt, audio)
    url = server.ws_url + "/v1/realtime?intent=transcription"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    options = {"ssl": ssl} if ssl is not None else {}
    async with websockets.connect(url, additional_headers=headers, max_size=None, **options) as ws:
        assert validate_server_event(await ws.recv())["type"] == "session.created"
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}},
                    },
                }
            )
        )
        pcm = pcm24.astype("<i2").tobytes()
        await ws.send(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        )
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        run = CallerRun()
        await collect(ws, run, "conversation.item.input_audio_transcription.completed")
        heard = run.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    result = corpus_wer([(transcript, heard)])
    print(f"answer transcript {transcript!r} heard as {heard!r}: WER {result:.2f}")
    return result


async def test_full_voice_turn_through_openai_sdk(voice_server: ServerProcess) -> None:
    """One spoken question → a spoken answer whose audio matches its transcript."""
    client = AsyncOpenAI(base_url=voice_server.base_url, api_key=voice_server.api_key)
    pcm = caller_audio("cards-005")
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": FIXED_REPLY,
                    "audio": vad_audio(silence_duration_ms=300),
                },
            }
        )
        kinds: list[str] = []
        audio = bytearray()
        transcript = ""

        async def listen() -> None:
            nonlocal transcript
            while True:
                event = validate_server_event(await connection.recv_bytes())
                kinds.append(event["type"])
                if event["type"] == "response.output_audio.delta":
                    audio.extend(base64.b64decode(event["delta"]))
                elif event["type"] == "response.output_audio_transcript.done":
                    transcript = event["transcript"]
                elif event["type"] == "response.done":
                    assert event["response"]["status"] == "completed", event
                    usage = event["response"]["usage"]
                    assert usage["output_token_details"]["audio_tokens"] == len(audio) // 48 // 50
                    assert usage["input_token_details"]["audio_tokens"] > 0
                    return

        listener = asyncio.create_task(listen())
        for start in range(0, len(pcm), 960):
            chunk = pcm[start : start + 960]
            await connection.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk.tobytes()).decode()}
            )
            await asyncio.sleep(0.04)
        await asyncio.wait_for(listener, 120)
    order = [
        k
        for k in kinds
        if k
        in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "response.created",
        )
    ]
    assert order == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
    ]
    assert len(audio) > 48 * 500 and transcript.strip()
    assert await answer_transcript_check(voice_server, bytes(audio), "audio/pcm", transcript) <= 0.15


async def test_barge_in_cancels_and_truncation(ws: Any) -> None:
    await update(
        ws,
        instructions="Do exactly what the user asks.",
        audio=vad_audio(silence_duration_ms=400, create_response=False),
    )
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {
                            "type": "input_text",
                            "text": "Count from one to one hundred in words, like this: one, two, three, four, five, six, and so on.",
                        }
                    ],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create"}))
    run = CallerRun()
    await collect(ws, run, "response.output_audio.delta")
    response_id = run.of("response.created")[0]["response"]["id"]
    assistant_item = run.of("response.output_audio.delta")[0]["item_id"]
    receiver = asyncio.create_task(collect(ws, run, "input_audio_buffer.committed"))
    await stream_audio(ws, caller_audio("cards-001"))
    await asyncio.wait_for(receiver, 60)
    started_at = run.first_at("input_audio_buffer.speech_started")
    assert started_at is not None
    done = [e for e in run.of("response.done") if e["response"]["id"] == response_id]
    assert done and done[0]["response"]["status"] == "cancelled"
    assert done[0]["response"]["status_details"]["reason"] == "turn_detected"
    late = [
        r.at - started_at
        for r in run.events
        if r.event["type"] == "response.output_audio.delta"
        and r.event["response_id"] == response_id
        and r.at > started_at
    ]
    assert max(late, default=0.0) <= 0.100, late
    kinds = [r.event["type"] for r in run.events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
    assert done[0]["response"]["output"][0]["status"] == "incomplete"

    # truncate the interrupted answer to what was "heard"
    generated_ms = len(output_audio(run, response_id)) // 48
    heard_ms = min(700, generated_ms)
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": assistant_item,
                "content_index": 0,
                "audio_end_ms": heard_ms,
            }
        )
    )
    run2 = CallerRun()
    await collect(ws, run2, "conversation.item.truncated")
    assert run2.of("conversation.item.truncated")[0]["audio_end_ms"] == heard_ms
    await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": assistant_item}))
    await collect(ws, run2, "conversation.item.retrieved")
    part = run2.of("conversation.item.retrieved")[0]["item"]["content"][0]
    assert len(base64.b64decode(part["audio"])) == heard_ms * 48
    full = done[0]["response"]["output"][0]["content"][0]["transcript"]
    assert part["transcript"] and full.startswith(part["transcript"])

    # errors: beyond the audio, and a non-assistant item
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": assistant_item,
                "content_index": 0,
                "audio_end_ms": heard_ms + 60_000,
                "event_id": "t1",
            }
        )
    )
    await collect(ws, run2, "error")
    error = run2.of("error")[-1]["error"]
    assert error["event_id"] == "t1" and "already shorter" in error["message"]
    user_item = run.of("input_audio_buffer.committed")[0]["item_id"]
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": user_item,
                "content_index": 0,
                "audio_end_ms": 10,
                "event_id": "t2",
            }
        )
    )
    await collect(ws, run2, "error")
    assert run2.of("error")[-1]["error"]["code"] == "unsupported_content_type"


@pytest.mark.parametrize(("in_fmt", "out_fmt"), [("audio/pcmu", "audio/pcma"), ("audio/pcma", "audio/pcmu")])
async def test_g711_round_trip(voice_server: ServerProcess, ws: Any, in_fmt: str, out_fmt: str) -> None:
    await update(
        ws,
        instructions=FIXED_REPLY,
        audio={
            "input": {"format": {"type": in_fmt}, **vad_audio(silence_duration_ms=300)["input"]},
            "output": {"format": {"type": out_fmt}},
        },
    )
    pcm24 = caller_audio("librivox-0880")
    wire = formats.encode(in_fmt, pcm24)
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "response.done"))
    step = 8 * 40
    start = time.monotonic()
    for index in range(0, len(wire), step):
        await ws.send(
            json.dumps(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(wire[index : index + step]).decode(),
                }
            )
        )
        delay = start + (index + step) / 8000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.wait_for(receiver, 120)
    heard = run.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert corpus_wer([(transcripts()["librivox-0880"], heard)]) <= 0.2
    audio = output_audio(run)
    assert len(audio) > 8 * 300
    transcript = run.of("response.output_audio_transcript.done")[0]["transcript"]
    assert await answer_transcript_check(voice_server, audio, out_fmt, transcript) <= 0.15
    assert run.of("response.done")[0]["response"]["audio"]["output"]["format"] == {"type": out_fmt}


async def test_manual_commit_mode(ws: Any) -> None:
    await update(ws, audio={"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}})
    pcm = caller_audio("cards-005")
    await stream_audio(ws, pcm, realtime=False)
    await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c1"}))
    run = CallerRun()
    await collect(ws, run, "conversation.item.done")
    assert not run.of("input_audio_buffer.speech_started")
    assert run.of("input_audio_buffer.committed")
    await ws.send(json.dumps({"type": "response.create"}))
    await collect(ws, run, "response.done")
    assert run.of("response.done")[0]["response"]["status"] == "completed"
    assert output_audio(run)
    heard = run.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert corpus_wer([(transcripts()["cards-005"], heard)]) <= 0.2
    # clear and an empty commit
    await ws.send(
        json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x00" * 240).decode()}
        )
    )
    await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c2"}))
    run2 = CallerRun()
    await collect(ws, run2, "error")
    assert run2.of("input_audio_buffer.cleared")
    assert run2.of("error")[0]["error"]["code"] == "input_audio_buffer_commit_empty"


async def test_semantic_vad_ends_turn_within_eagerness_wait(ws: Any) -> None:
    await update(
        ws,
        audio={
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "semantic_vad", "eagerness": "high", "create_response": False},
            }
        },
    )
    pcm = caller_audio("librivox-0930")
    silence = np.zeros(24000 * 3, dtype=np.int16)
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "input_audio_buffer.committed"))
    speech_sent = await stream_audio(ws, pcm)
    sender = asyncio.create_task(stream_audio(ws, silence))
    await asyncio.wait_for(receiver, 30)
    sender.cancel()
    stopped_at = run.first_at("input_audio_buffer.speech_stopped")
    assert stopped_at is not None and run.of("input_audio_buffer.speech_started")
    # high eagerness: the turn ends at the latest 2 s after speech (1.5 s of the clip's tail is room tone)
    assert stopped_at - speech_sent <= 2.0 + 0.5
    stopped = run.of("input_audio_buffer.speech_stopped")[0]
    onset, offset = REFERENCE_EDGES["librivox-0930"]
    started = run.of("input_audio_buffer.speech_started")[0]
    assert (
        abs((stopped["audio_end_ms"] - started["audio_start_ms"]) - (offset - onset + PREFIX_MS))
        <= 2 * EDGE_TOLERANCE_MS
    )


async def test_idle_timeout_prompts_the_user(ws: Any) -> None:
    await update(ws, audio=vad_audio(silence_duration_ms=300, idle_timeout_ms=1000))
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Say hi in two words."}],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 12}}))
    run = CallerRun()
    await collect(ws, run, "response.done")
    first_done = run.first_at("response.done")
    audio_s = len(output_audio(run)) / 48000
    silence = np.zeros(24000 * 12, dtype=np.int16)
    sender = asyncio.create_task(stream_audio(ws, silence, chunk_ms=100))
    await collect(ws, run, "input_audio_buffer.timeout_triggered", timeout=30)
    triggered_at = run.first_at("input_audio_buffer.timeout_triggered")
    assert triggered_at is not None and first_done is not None
    assert triggered_at - first_done >= 1.0 - 0.05
    assert triggered_at - first_done <= audio_s + 1.0 + 1.0
    event = run.of("input_audio_buffer.timeout_triggered")[0]
    assert event["audio_end_ms"] >= event["audio_start_ms"]
    await collect(ws, run, "response.created", timeout=30)
    sender.cancel()
    committed = run.of("input_audio_buffer.committed")
    assert committed and committed[-1]["item_id"] == event["item_id"]


async def test_two_sessions_talking_at_once(voice_server: ServerProcess) -> None:
    """Shared engines, two callers at the same time: both are heard and both are answered."""
    url = voice_server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {voice_server.api_key}"}

    async def caller(name: str) -> CallerRun:
        async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
            assert validate_server_event(await socket.recv())["type"] == "session.created"
            await update(socket, instructions=FIXED_REPLY, audio=vad_audio(silence_duration_ms=300))
            run = CallerRun()
            receiver = asyncio.create_task(collect(socket, run, "response.done", timeout=120))
            await stream_audio(socket, caller_audio(name))
            await asyncio.wait_for(receiver, 120)
            return run

    runs = await asyncio.gather(caller("librivox-0930"), caller("cards-005"))
    for name, run in zip(("librivox-0930", "cards-005"), runs, strict=True):
        assert run.of("response.done")[0]["response"]["status"] == "completed"
        assert len(output_audio(run)) > 48 * 500
        heard = run.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
        assert corpus_wer([(transcripts()[name], heard)]) <= 0.25


async def test_voices_route_lists_every_builtin_name(voice_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=voice_server.url) as http:
        assert (await http.get("/v1/voices")).status_code == 401
        listed = (
            await http.get("/v1/voices", headers={"Authorization": f"Bearer {voice_server.api_key}"})
        ).json()
    names = {entry["name"]: entry for entry in listed["data"]}
    for name in ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"):
        assert names[name]["engine"] and names[name]["voice"]
    assert names["marin"]["engine"] == "piper"
    assert names["marin"]["neural"] is True and names["marin"]["languages"] == ["en"]
    assert names["echo"]["neural"] is False
    measured = names["marin"]["measured"]  # what bench/voices.py measured for Piper joe
    assert measured["first_chunk_ms_p50"] > 0 and 0 <= measured["round_trip_wer"] <= 0.05
    assert "bench/voices.py" in measured["command"] and measured["measured_on"]
    assert listed["languages"]["en"][0] == "piper" and "espeak" in listed["languages"]["es"]


async def test_unknown_voice_is_refused_and_voice_locks_after_audio(ws: Any) -> None:
    await ws.send(
        json.dumps(
            {
                "type": "session.update",
                "event_id": "v1",
                "session": {"type": "realtime", "audio": {"output": {"voice": "nova"}}},
            }
        )
    )
    run = CallerRun()
    await collect(ws, run, "error")
    assert run.of("error")[0]["error"]["param"] == "session.audio.output.voice"
    await update(ws, audio={"output": {"voice": "cedar", "speed": 1.3}})
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Say hello."}],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 16}}))
    await collect(ws, run, "response.done")
    assert output_audio(run)
    await ws.send(
        json.dumps(
            {
                "type": "session.update",
                "event_id": "v2",
                "session": {"type": "realtime", "audio": {"output": {"voice": "ash"}}},
            }
        )
    )
    await collect(ws, run, "error")
    error = run.of("error")[-1]["error"]
    assert error["event_id"] == "v2" and error["param"] == "session.audio.output.voice"
