"""What recording costs a live server: the event loop's time per recorder call, and how fast
the writer thread journals, encrypts and writes.

    python bench/recording_overhead.py --sessions 4 --minutes 5

Each simulated session is a WebSocket voice call in ``full`` mode at real event rates but
without waiting: a 40 ms ``input_audio_buffer.append`` every 40 ms of audio and a 200 ms
``response.output_audio.delta`` for every second of it. Prints and writes
``bench/results/recording_overhead.json``: per-call time on the event loop (median, p95, p99,
max, and the same for timing nothing, which shows the machine's own stalls), how long the writer took to have everything on disk, the audio it handled per second
of wall time, and the bytes on disk per minute of call.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openrealtime.benchmark.machine import machine_info  # noqa: E402
from openrealtime.benchmark.stats import percentile  # noqa: E402
from openrealtime.recording import RecordingPolicy, RecordingService, generate_key, load_keyring  # noqa: E402
from openrealtime.storage import RecordingQuery, make_storage  # noqa: E402

RESULTS = ROOT / "bench" / "results"


async def run(sessions: int, minutes: float) -> dict[str, object]:
    rng = np.random.default_rng(1)
    append = base64.b64encode(rng.integers(-3000, 3000, 960, dtype=np.int16).tobytes()).decode()
    delta = base64.b64encode(rng.integers(-3000, 3000, 4800, dtype=np.int16).tobytes()).decode()
    with tempfile.TemporaryDirectory(prefix="recording-bench-") as tmp:
        storage = make_storage(f"sqlite:///{tmp}/index.db")
        await storage.open()
        service = RecordingService(
            storage, load_keyring(generate_key()), Path(tmp) / "rec", RecordingPolicy("full")
        )
        await service.start()
        recorders = [
            service.start_session(session_id=f"s{i}", key_id="key_bench", transport="websocket", model="m")
            for i in range(sessions)
        ]
        calls: list[float] = []
        idle: list[float] = []  # the same loop timing nothing: the machine's own stalls
        steps = int(minutes * 60 * 25)  # 40 ms steps
        started = time.perf_counter()
        for step in range(steps):
            for recorder in recorders:
                assert recorder is not None
                before = time.perf_counter()
                recorder.client_event({"type": "input_audio_buffer.append", "audio": append})
                if step % 5 == 0:
                    recorder.server_event(
                        {
                            "type": "response.output_audio.delta",
                            "response_id": "r",
                            "item_id": "i",
                            "delta": delta,
                        }
                    )
                calls.append(time.perf_counter() - before)
                before = time.perf_counter()
                idle.append(time.perf_counter() - before)
            if step % 25 == 0:
                await asyncio.sleep(0)
        queued = time.perf_counter() - started
        for recorder in recorders:
            assert recorder is not None
            recorder.close()
        await service.flush()
        written = time.perf_counter() - started
        metas = await service.list(RecordingQuery())
        await service.close()
        await storage.close()
    audio_seconds = sessions * minutes * 60 * 1.2  # caller audio plus 0.2 s of answer per second
    on_disk = sum(m.size_bytes for m in metas)

    def spread(values: list[float]) -> dict[str, float]:
        micro = [v * 1e6 for v in values]
        return {
            "median": round(statistics.median(micro), 1),
            "p95": round(percentile(micro, 0.95) or 0.0, 1),
            "p99": round(percentile(micro, 0.99) or 0.0, 1),
            "max": round(max(micro), 1),
            "over_1ms": sum(1 for v in micro if v > 1000),
        }

    return {
        "benchmark": "recording overhead",
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info("openrealtime", "cryptography"),
        "sessions": sessions,
        "call_minutes_per_session": minutes,
        "calls": len(calls),
        "loop_us_per_call": spread(calls),
        "loop_us_per_empty_call": spread(idle),
        "queued_in_s": round(queued, 2),
        "on_disk_after_s": round(written, 2),
        "audio_seconds_per_wall_second": round(audio_seconds / written, 1),
        "disk_bytes_per_call_minute": round(on_disk / (sessions * minutes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.sessions, args.minutes))
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recording_overhead.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
