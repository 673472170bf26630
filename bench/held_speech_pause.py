"""How soon a WebRTC caller hears the answer stop when they talk over it under ``semantic_vad``.

The server plays the answer on WebRTC, so it pauses it from the VAD's first frame of the caller's
speech, and either plays on (a backchannel) or clears it (an interruption, ``speech_started``
after 1 s of speech or after the words of shorter speech). Each trial asks for a story, lets
1.5 s of it play, then the caller (aiortc, no echo path: it plays nothing back) either talks
over it with a real recorded clip or says an espeak-ng backchannel ("okay", "mhm", "yeah",
"uh-huh", "right"; no package ships recorded ones). Measured on the caller's side:

* interruptions: onset → the answer falls silent (its last audible frame before
  ``speech_started``), and onset → ``speech_started`` received, which is where the answer
  stopped before the pause existed (the clear follows it at once);
* backchannels: onset → the answer falls silent, how long it stays silent, and whether it
  went on to the end (no ``speech_started``, no clear).

    .venv/bin/python bench/held_speech_pause.py [--trials 10]

Writes bench/results/held_speech_pause.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.speech_audio import LEAD_MS, REFERENCE_EDGES, caller_audio, espeak  # noqa: E402
from tests.support import ServerProcess, run_server  # noqa: E402
from tests.webrtc_client import Caller  # noqa: E402

from machine import machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a storyteller. Whatever the user says, answer with a story of four sentences.",
    "audio": {
        "input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "semantic_vad"},
        }
    },
}
INTERRUPTIONS = ["librivox-0880", "cards-005", "librivox-0930", "cards-002", "librivox-0890"]
BACKCHANNELS = ["okay", "[[m:'hm:]]", "yeah", "uh-huh", "right"]
AUDIBLE = 100.0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "max": max(values, default=None),
    }


async def story_playing(caller: Caller, server: ServerProcess) -> dict[str, Any]:
    return await caller.answer_playing(server, SESSION, caller_audio("goforward"))


async def interruption(server: ServerProcess, name: str) -> dict[str, Any]:
    caller = Caller()
    try:
        await story_playing(caller, server)
        onset = caller.mic.play(caller_audio(name, seed=3), mark_at=(LEAD_MS + REFERENCE_EDGES[name][0]) * 24)
        await caller.until("input_audio_buffer.speech_started", timeout=60)
        decided_at = caller.time_of(caller.of("input_audio_buffer.speech_started")[-1])
        onset_at = await onset
        silent_from = max(h.at for h in caller.heard if h.at < decided_at and h.rms > AUDIBLE) + 0.02
        return {
            "kind": "interruption",
            "sound": name,
            "silent_ms_after_onset": (silent_from - onset_at) * 1000,
            "speech_started_ms_after_onset": (decided_at - onset_at) * 1000,
        }
    finally:
        await caller.close()


async def backchannel(server: ServerProcess, word: str) -> dict[str, Any]:
    caller = Caller()
    try:
        story = await story_playing(caller, server)
        sound = (espeak(word) * 8000).astype(np.int16)
        lead = np.zeros(24 * 200, dtype=np.int16)
        onset = caller.mic.play(
            np.concatenate([lead, sound, np.zeros(24 * 500, dtype=np.int16)]), mark_at=len(lead)
        )
        onset_at = await onset
        stopped = (await caller.until("output_audio_buffer.stopped", timeout=180))[-1]
        loud = [h.at for h in caller.heard if h.at >= onset_at and h.rms > AUDIBLE]
        gaps = [(a, b) for a, b in pairwise(loud) if b - a >= 0.3]
        row: dict[str, Any] = {
            "kind": "backchannel",
            "sound": word,
            "sound_ms": len(sound) / 24,
            "played_on": stopped["response_id"] == story["response_id"]
            and len(caller.of("input_audio_buffer.speech_started")) == 1
            and not caller.of("output_audio_buffer.cleared"),
        }
        if gaps:
            row["silent_ms_after_onset"] = (gaps[0][0] + 0.02 - onset_at) * 1000
            row["paused_ms"] = (gaps[0][1] - gaps[0][0] - 0.02) * 1000
        return row
    finally:
        await caller.close()


async def run(server: ServerProcess, trials: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for trial in range(trials):
        if trial % 2 == 0:
            row = await interruption(server, INTERRUPTIONS[trial // 2 % len(INTERRUPTIONS)])
        else:
            row = await backchannel(server, BACKCHANNELS[trial // 2 % len(BACKCHANNELS)])
        rows.append(row)
        print(json.dumps({k: round(v) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    cut = [r for r in rows if r["kind"] == "interruption"]
    kept = [r for r in rows if r["kind"] == "backchannel"]
    return {
        "interruption_silent_ms_after_onset": summary([r["silent_ms_after_onset"] for r in cut]),
        "interruption_speech_started_ms_after_onset": summary(
            [r["speech_started_ms_after_onset"] for r in cut]
        ),
        "backchannel_silent_ms_after_onset": summary(
            [r["silent_ms_after_onset"] for r in kept if "paused_ms" in r]
        ),
        "backchannel_paused_ms": summary([r["paused_ms"] for r in kept if "paused_ms" in r]),
        "backchannels_played_on": f"{sum(r['played_on'] for r in kept)}/{len(kept)}",
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "held_speech_pause.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp)) as server:
        result = asyncio.run(run(server, args.trials))
    result = {
        "benchmark": "bench/held_speech_pause.py",
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info("aiortc", "faster-whisper"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.monotonic() - started),
        **result,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
