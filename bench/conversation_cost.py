"""Tokens and cost per minute of a real spoken conversation, from the usage ledger.

A caller holds one multi-turn voice conversation with the real server (server VAD, Whisper
transcription, spoken answers): each turn streams one of the shared real-speech clips at
real-time pace, waits for the answer, and listens to it (waits out its playback) before
speaking again. Conversation time is the wall-clock time from the first audio sent to the end
of the last answer's playback. Token counts and cost (list prices, ``telemetry/prices.py``)
come from ``GET /v1/usage`` for the session, i.e. from the ledger.

    .venv/bin/python bench/conversation_cost.py [--turns 6] [--max-output-tokens 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.speech_audio import caller_audio  # noqa: E402
from tests.support import ServerProcess, run_server, validate_server_event  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLIPS = ["cards-005", "librivox-0880", "goforward", "librivox-0930", "cards-001", "librivox-0890"]
PCM_BYTES_PER_MS = 48


async def converse(server: ServerProcess, turns: int, max_output_tokens: int) -> dict[str, Any]:
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        created = validate_server_event(await ws.recv())
        session_id = created["session"]["id"]
        session = {
            "type": "realtime",
            "instructions": "You are a friendly phone assistant. Answer in one or two sentences.",
            "max_output_tokens": max_output_tokens,
            "audio": {
                "input": {
                    "transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                }
            },
        }
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        while validate_server_event(await ws.recv())["type"] != "session.updated":
            pass
        started = time.monotonic()
        user_ms = assistant_ms = 0
        per_turn: list[dict[str, Any]] = []
        for turn in range(turns):
            pcm = caller_audio(CLIPS[turn % len(CLIPS)]).astype("<i2").tobytes()
            done_event: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            audio = bytearray()
            first_audio_at: list[float] = []

            async def receive(
                done: asyncio.Future[dict[str, Any]] = done_event,
                audio: bytearray = audio,
                first_audio_at: list[float] = first_audio_at,
            ) -> None:
                while True:
                    event = validate_server_event(await ws.recv())
                    if event["type"] == "response.output_audio.delta":
                        if not first_audio_at:
                            first_audio_at.append(time.monotonic())
                        audio.extend(base64.b64decode(event["delta"]))
                    elif event["type"] == "response.done":
                        done.set_result(event)
                        return

            receiver = asyncio.create_task(receive())
            step = 24 * 40 * 2  # 40 ms chunks
            t0 = time.monotonic()
            for index in range(0, len(pcm), step):
                await ws.send(
                    json.dumps(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm[index : index + step]).decode(),
                        }
                    )
                )
                delay = t0 + (index + step) / PCM_BYTES_PER_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            done = await asyncio.wait_for(done_event, 180)
            await receiver
            answer_ms = len(audio) // PCM_BYTES_PER_MS
            if first_audio_at:  # listen to the answer to its end before speaking again
                await asyncio.sleep(max(0.0, first_audio_at[0] + answer_ms / 1000 - time.monotonic()))
            user_ms += len(pcm) // PCM_BYTES_PER_MS
            assistant_ms += answer_ms
            per_turn.append({"clip": CLIPS[turn % len(CLIPS)], "usage": done["response"]["usage"]})
        seconds = time.monotonic() - started
        await asyncio.sleep(1.0)  # the last transcription
    reply = httpx.get(
        server.base_url + "/usage",
        params={"group_by": "session"},
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
    )
    [aggregate] = [a for a in reply.json()["data"] if a["session_id"] == session_id]
    minutes = seconds / 60
    return {
        "turns": turns,
        "conversation_seconds": round(seconds, 1),
        "user_audio_seconds": user_ms / 1000,
        "assistant_audio_seconds": assistant_ms / 1000,
        "total_tokens": aggregate["total_tokens"],
        "tokens_per_minute": round(aggregate["total_tokens"] / minutes),
        "input_tokens_per_minute": round(aggregate["input_tokens"] / minutes),
        "output_tokens_per_minute": round(aggregate["output_tokens"] / minutes),
        "cost_usd": aggregate["amount"]["value"],
        "cost_usd_per_minute": round(aggregate["amount"]["value"] / minutes, 4),
        "ledger": aggregate,
        "per_turn": per_turn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-output-tokens", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "conversation_cost.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp)) as server:
        result = asyncio.run(converse(server, args.turns, args.max_output_tokens))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("ledger", "per_turn")}
    print(json.dumps(summary, indent=2))
    details = result["ledger"]
    print(
        "input text/audio/cached:",
        details["input_token_details"]["text_tokens"],
        details["input_token_details"]["audio_tokens"],
        details["input_token_details"]["cached_tokens"],
        "output text/audio:",
        details["output_token_details"]["text_tokens"],
        details["output_token_details"]["audio_tokens"],
        "transcriptions:",
        details["transcriptions"],
    )


if __name__ == "__main__":
    main()
