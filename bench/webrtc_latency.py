"""Voice-to-voice latency over WebRTC vs WebSocket, same server, same clips, alternating.

For each shared real-speech clip (room tone around it, real-time pace, server VAD):

* WebSocket: the last speech sample sent (40 ms ``input_audio_buffer.append`` chunks) → the
  first ``response.output_audio.delta`` received (what ``bench/voice_latency.py`` measures),
  and → its first audible 20 ms (played from the first delta on, no client buffering);
* WebRTC: the last speech sample sent on the microphone track (20 ms RTP frames) → the first
  audible frame received on the remote track (after the server's playout, Opus and the
  client's jitter buffer: what the caller hears), and → ``output_audio_buffer.started``.
  The client is aiortc, whose receiver holds 4 frames (80 ms) before decoding; browsers'
  adaptive jitter buffers hold less on a clean network.

    .venv/bin/python bench/webrtc_latency.py [--clips goforward cards-001 ...] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.speech_audio import LEAD_MS, REFERENCE_EDGES, caller_audio  # noqa: E402
from tests.support import ServerProcess, run_server, validate_server_event  # noqa: E402
from tests.webrtc_client import Caller  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def session_config(silence_ms: int) -> dict[str, Any]:
    return {
        "type": "realtime",
        "model": "gpt-realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}},
    }


def leading_quiet_ms(pcm16: bytes, threshold: float = 100.0) -> float | None:
    """Where the first audible 20 ms frame starts (the same test the WebRTC recorder applies)."""
    samples = np.frombuffer(pcm16[: len(pcm16) // 960 * 960], dtype=np.int16).astype(np.float64)
    for index, frame in enumerate(samples.reshape(-1, 480)):
        if np.sqrt(np.mean(frame**2)) > threshold:
            return index * 20.0
    return None


async def websocket_turn(server: ServerProcess, name: str, silence_ms: int) -> dict[str, float]:
    pcm = caller_audio(name)
    end_sample = (LEAD_MS + REFERENCE_EDGES[name][1]) * 24
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {server.api_key}"}
    ) as ws:
        validate_server_event(await ws.recv())
        await ws.send(json.dumps({"type": "session.update", "session": session_config(silence_ms)}))
        speech_end_at: list[float] = []

        async def send() -> None:
            step = 24 * 40
            start = time.monotonic()
            for index in range(0, len(pcm), step):
                chunk = pcm[index : index + step]
                await ws.send(
                    json.dumps(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(chunk.tobytes()).decode(),
                        }
                    )
                )
                if index <= end_sample < index + step:
                    speech_end_at.append(time.monotonic())
                delay = start + (index + len(chunk)) / 24000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            silence = np.zeros(24 * 40, dtype=np.int16).tobytes()
            while True:  # keep the line open like a live microphone
                await ws.send(
                    json.dumps(
                        {"type": "input_audio_buffer.append", "audio": base64.b64encode(silence).decode()}
                    )
                )
                await asyncio.sleep(0.04)

        sender = asyncio.create_task(send())
        row: dict[str, float] = {}
        audio = bytearray()
        try:
            while True:
                event = validate_server_event(await asyncio.wait_for(ws.recv(), 120))
                since_end = (time.monotonic() - speech_end_at[0]) * 1000 if speech_end_at else 0.0
                if event["type"] == "input_audio_buffer.speech_stopped":
                    row["ws_speech_stopped_ms"] = since_end
                if event["type"] == "response.output_audio.delta":
                    row.setdefault("ws_first_delta_ms", since_end)
                    audio.extend(base64.b64decode(event["delta"]))
                    quiet_ms = leading_quiet_ms(bytes(audio))
                    if quiet_ms is not None:  # played from the first delta on, as a client would
                        row["ws_first_audible_ms"] = row["ws_first_delta_ms"] + quiet_ms
                        return row
        finally:
            sender.cancel()


async def webrtc_turn(server: ServerProcess, name: str, silence_ms: int) -> dict[str, float]:
    caller = Caller()
    try:
        await caller.connect(server, session=session_config(silence_ms))
        await caller.until("session.created", timeout=60)
        speech_end = caller.mic.play(caller_audio(name), mark_at=(LEAD_MS + REFERENCE_EDGES[name][1]) * 24)
        started = (await caller.until("output_audio_buffer.started", timeout=120))[-1]
        ended_at = await speech_end
        started_ms = (caller.time_of(started) - ended_at) * 1000
        deadline = time.monotonic() + 10
        while (heard := caller.first_sound_after(ended_at)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert heard is not None, "no audible answer"
        stopped = caller.of("input_audio_buffer.speech_stopped")[0]
        return {
            "rtc_speech_stopped_ms": (caller.time_of(stopped) - ended_at) * 1000,
            "rtc_buffer_started_ms": started_ms,
            "rtc_first_audible_ms": (heard - ended_at) * 1000,
        }
    finally:
        await caller.close()


def summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "mean": statistics.fmean(values) if values else None,
    }


METRICS = {
    "ws_first_delta_ms": "WebSocket: end of speech -> first output_audio.delta",
    "ws_first_audible_ms": "WebSocket: end of speech -> first audible 20 ms in the deltas",
    "rtc_first_audible_ms": "WebRTC: end of speech -> first audible frame received",
    "rtc_buffer_started_ms": "WebRTC: end of speech -> output_audio_buffer.started",
    "ws_speech_stopped_ms": "WebSocket: end of speech -> speech_stopped",
    "rtc_speech_stopped_ms": "WebRTC: end of speech -> speech_stopped",
    "rtc_minus_ws_ms": "paired: WebRTC first audible - WebSocket first audible",
    "rtc_started_to_audible_ms": "WebRTC: output_audio_buffer.started -> first audible frame",
}


async def run(server: ServerProcess, clips: list[str], repeat: int, silence_ms: int) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    for round_ in range(repeat):
        for index, name in enumerate(clips):
            row: dict[str, Any] = {"clip": name}
            first_ws = (round_ + index) % 2 == 0  # alternate which transport goes first
            for transport in ("ws", "rtc") if first_ws else ("rtc", "ws"):
                turn = websocket_turn if transport == "ws" else webrtc_turn
                row.update(await turn(server, name, silence_ms))
            row["rtc_minus_ws_ms"] = row["rtc_first_audible_ms"] - row["ws_first_audible_ms"]
            row["rtc_started_to_audible_ms"] = row["rtc_first_audible_ms"] - row["rtc_buffer_started_ms"]
            turns.append(row)
            print(
                json.dumps({k: round(v) if isinstance(v, float) else v for k, v in row.items()}), flush=True
            )
    result: dict[str, Any] = {key: summary([t[key] for t in turns]) for key in METRICS}
    result["turns"] = turns
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", nargs="*", default=list(REFERENCE_EDGES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--silence-ms", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "webrtc_latency.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp)) as server:
        result = asyncio.run(run(server, args.clips, args.repeat, args.silence_ms))
    result["command"] = " ".join(["python", *sys.argv])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, label in METRICS.items():
        stats = result[key]
        print(f"{label}: p50 {stats['p50']:.0f} ms, p95 {stats['p95']:.0f} ms (n={stats['n']})")


if __name__ == "__main__":
    main()
