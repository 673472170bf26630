"""What the hop through a gateway adds to an upstream Realtime API (``UPSTREAM_URL``).

Two ``openrealtime serve`` on loopback: the upstream (the embedded models) and a gateway whose
responses go to it over its Realtime WebSocket. The same turn is sent directly to the upstream
and through the gateway, alternating run by run so load drift hits both alike: a user item
(typed text, or a recorded question as ``input_audio``) and ``response.create`` for a spoken
answer, on a fresh session each run. Measured from ``response.create`` to the first
``response.output_audio.delta`` and to ``response.done``; the added latency is the median
and p95 of the paired differences (gateway minus direct).

    python bench/upstream_latency.py [--rounds 7]

Writes bench/results/upstream_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.audio.resample import resample
from openrealtime.benchmark.server import BenchServer, start_server

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
QUESTIONS = ["What is the capital of France?", "Name a colour of the sky.", "How many days has a week?"]
SESSION = {
    "type": "realtime",
    "instructions": "Answer in one short sentence.",
    "max_output_tokens": 30,
    "audio": {"input": {"turn_detection": None}},
}


def clip_pcm24(name: str) -> str:
    with wave.open(str(AUDIO / f"{name}.wav")) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32)
    return base64.b64encode(resample(pcm, 16000, 24000).astype(np.int16).tobytes()).decode()


async def one_turn(server: BenchServer, content: dict[str, Any]) -> tuple[float, float]:
    """ms from ``response.create`` to the first audio delta and to ``response.done``."""
    url = server.url.replace("http", "ws", 1) + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
        item = {"type": "message", "role": "user", "content": [content]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create"}))
        first: float | None = None
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 300))
            if event["type"] == "response.output_audio.delta" and first is None:
                first = time.perf_counter()
            elif event["type"] == "response.done":
                done = time.perf_counter()
                assert event["response"]["status"] == "completed", event["response"]
                assert first is not None
                return (first - sent) * 1000, (done - sent) * 1000
            elif event["type"] == "error":
                raise RuntimeError(event["error"])


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 1), "p95": round(p95, 1), "n": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    kinds: dict[str, list[dict[str, Any]]] = {
        "text": [{"type": "input_text", "text": q} for q in QUESTIONS],
        "audio": [{"type": "input_audio", "audio": clip_pcm24(c)} for c in ("cards-001", "librivox-0880")],
    }
    load_before = os.getloadavg()
    with start_server([]) as upstream:
        os.environ["OPENREALTIME_UPSTREAM_URL"] = upstream.url + "/v1"
        os.environ["OPENREALTIME_UPSTREAM_API_KEY"] = upstream.api_key
        try:
            with start_server([]) as gateway:
                runs: dict[str, dict[str, list[float]]] = {}
                for kind, contents in kinds.items():
                    asyncio.run(one_turn(upstream, contents[0]))  # warm-up, both ways
                    asyncio.run(one_turn(gateway, contents[0]))
                    stages: dict[str, list[float]] = {
                        k: [] for k in ("direct_first", "gateway_first", "direct_done", "gateway_done")
                    }
                    for i in range(args.rounds):
                        content = contents[i % len(contents)]
                        order = [("direct", upstream), ("gateway", gateway)]
                        for name, server in order if i % 2 == 0 else order[::-1]:
                            first, done = asyncio.run(one_turn(server, content))
                            stages[f"{name}_first"].append(first)
                            stages[f"{name}_done"].append(done)
                        print(kind, i, {k: round(v[-1]) for k, v in stages.items()}, file=sys.stderr)
                    runs[kind] = stages
        finally:
            os.environ.pop("OPENREALTIME_UPSTREAM_URL", None)
            os.environ.pop("OPENREALTIME_UPSTREAM_API_KEY", None)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    for kind, stages in runs.items():
        report[kind] = {
            **{name: summary(values) for name, values in stages.items()},
            "added_first_audio": summary(
                [g - d for g, d in zip(stages["gateway_first"], stages["direct_first"], strict=True)]
            ),
            "added_done": summary(
                [g - d for g, d in zip(stages["gateway_done"], stages["direct_done"], strict=True)]
            ),
        }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "upstream_latency.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
