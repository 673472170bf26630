"""Voice-to-voice latency over a real WebSocket, on the shared real-speech clips.

For each clip a caller streams the clip (1 s room tone before, 1.5 s after) at real-time pace
in 40 ms chunks into a fresh session with server VAD, and we measure:

* voice-to-voice: the last speech sample sent → the first ``response.output_audio.delta``;
* engine latency: ``speech_stopped`` received → the first audio delta;
* per stage, from the server's ``turn timings`` log lines (ms after end-of-speech commit):
  final transcript ready, LLM first token, TTS first chunk, first audio sent.

Runs sequentially and with N concurrent sessions; writes JSON and a PNG plot.

    .venv/bin/python bench/voice_latency.py [--silence-ms 300] [--concurrency 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.speech_audio import LEAD_MS, REFERENCE_EDGES, caller_audio  # noqa: E402
from tests.support import ServerProcess, run_server, validate_server_event  # noqa: E402

from machine import machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "mean": statistics.fmean(values) if values else None,
    }


async def one_turn(server: ServerProcess, name: str, silence_ms: int) -> dict[str, Any]:
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    pcm = caller_audio(name)
    _onset, offset = REFERENCE_EDGES[name]
    speech_end_sample = (LEAD_MS + offset) * 24
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        validate_server_event(await ws.recv())
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {
                            "input": {
                                "transcription": {"model": "whisper-1", "language": "en"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
                            }
                        },
                    },
                }
            )
        )
        arrivals: dict[str, float] = {}
        response_id: str | None = None
        done = asyncio.Event()

        async def receive() -> None:
            nonlocal response_id
            while True:
                event = validate_server_event(await ws.recv())
                kind = event["type"]
                arrivals.setdefault(kind, time.monotonic())
                if kind == "response.created":
                    response_id = event["response"]["id"]
                if kind == "response.done":
                    done.set()
                    return

        receiver = asyncio.create_task(receive())
        step = 24 * 40
        start = time.monotonic()
        speech_end_sent = None
        for index in range(0, len(pcm), step):
            chunk = pcm[index : index + step]
            await ws.send(
                json.dumps(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk.tobytes()).decode()}
                )
            )
            if speech_end_sent is None and index + len(chunk) >= speech_end_sample:
                speech_end_sent = time.monotonic()
            delay = start + (index + len(chunk)) / 24000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        # keep the line open with silence until the answer is complete, as a phone would
        silence = base64.b64encode(bytes(step * 2)).decode()
        while not done.is_set():
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.04)
        await receiver
    first_audio = arrivals.get("response.output_audio.delta")
    stopped = arrivals.get("input_audio_buffer.speech_stopped")
    transcribed = arrivals.get("conversation.item.input_audio_transcription.completed")
    assert speech_end_sent is not None
    return {
        "clip": name,
        "response_id": response_id,
        "voice_to_voice_ms": None if first_audio is None else (first_audio - speech_end_sent) * 1000,
        "engine_ms": None if first_audio is None or stopped is None else (first_audio - stopped) * 1000,
        "speech_stopped_after_speech_end_ms": None if stopped is None else (stopped - speech_end_sent) * 1000,
        "transcript_after_speech_stopped_ms": None
        if transcribed is None or stopped is None
        else (transcribed - stopped) * 1000,
    }


def server_stages(log_text: str) -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    for line in log_text.splitlines():
        marker = "turn timings "
        if marker in line:
            record = json.loads(line.split(marker, 1)[1])
            stages[record["response_id"]] = record
    return stages


async def run_all(
    server: ServerProcess, clips: list[str], silence_ms: int, concurrency: int
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    if concurrency <= 1:
        for clip in clips:
            results.append(await one_turn(server, clip, silence_ms))
        return results
    for index in range(0, len(clips), concurrency):
        group = clips[index : index + concurrency]
        results.extend(await asyncio.gather(*(one_turn(server, clip, silence_ms) for clip in group)))
    return results


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = []
    data = []
    for run in report["runs"]:
        values = [r["voice_to_voice_ms"] for r in run["turns"] if r["voice_to_voice_ms"] is not None]
        labels.append(f"{run['sessions']} session(s)\nvoice-to-voice")
        data.append(values)
        values = [r["engine_ms"] for r in run["turns"] if r["engine_ms"] is not None]
        labels.append(f"{run['sessions']} session(s)\nspeech_stopped→audio")
        data.append(values)
    ax.boxplot(data, tick_labels=labels, showmeans=True)
    ax.axhline(1000, color="tab:red", linestyle="--", linewidth=1, label="1.0 s milestone")
    ax.axhline(500, color="tab:green", linestyle=":", linewidth=1, label="0.5 s goal")
    ax.set_ylabel("ms")
    ax.set_title(
        f"openrealtime voice latency (silence_duration_ms={report['silence_ms']}, {report['machine']['logical_cpus']} CPUs)"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--silence-ms", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--clips", nargs="*", default=list(REFERENCE_EDGES))
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra argument for openrealtime serve"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "voice_latency.json")
    args = parser.parse_args()
    clips = [c for c in args.clips for _ in range(args.repeat)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with run_server(Path(tempfile.mkdtemp()), args=args.server_arg) as server:
        asyncio.run(one_turn(server, clips[0], args.silence_ms))  # warm-up, not counted
        runs = []
        for sessions in sorted({1, args.concurrency}):
            turns = asyncio.run(run_all(server, clips, args.silence_ms, sessions))
            stages = server_stages(server.log())
            for turn in turns:
                turn["server"] = stages.get(turn["response_id"] or "", {})
            runs.append({"sessions": sessions, "turns": turns})
    report: dict[str, Any] = {
        "benchmark": "voice_latency",
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info("llama-cpp-python", "faster-whisper", "piper-tts"),
        "silence_ms": args.silence_ms,
        "runs": [],
    }
    for run in runs:
        turns = run["turns"]

        def values(key: str, source: str | None = None, turns: list[dict[str, Any]] = turns) -> list[float]:
            found = [(t["server"] if source else t).get(key) for t in turns]
            return [float(v) for v in found if v is not None]

        report["runs"].append(
            {
                "sessions": run["sessions"],
                "voice_to_voice_ms": summary(values("voice_to_voice_ms")),
                "engine_ms": summary(values("engine_ms")),
                "speech_stopped_after_speech_end_ms": summary(values("speech_stopped_after_speech_end_ms")),
                "transcript_after_speech_stopped_ms": summary(values("transcript_after_speech_stopped_ms")),
                "server_stages_ms_after_commit": {
                    key: summary(values(key, "server"))
                    for key in (
                        "transcript_ready_ms",
                        "llm_first_token_ms",
                        "first_piece_ms",
                        "tts_first_chunk_ms",
                        "first_audio_sent_ms",
                    )
                },
                "turns": turns,
            }
        )
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.out.with_suffix(".png"))
    for run in report["runs"]:
        v2v, eng = run["voice_to_voice_ms"], run["engine_ms"]
        stages = {k: v["p50"] for k, v in run["server_stages_ms_after_commit"].items()}
        print(
            f"{run['sessions']} session(s): voice-to-voice p50 {v2v['p50']:.0f} ms p95 {v2v['p95']:.0f} ms; "
            f"speech_stopped→audio p50 {eng['p50']:.0f} ms p95 {eng['p95']:.0f} ms; stage p50s {stages}"
        )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
