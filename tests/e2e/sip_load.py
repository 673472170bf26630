"""How many phone calls at once: N baresip callers dial the real server together, each says
the same utterance, the app accepts every call; per call we measure mouth-to-ear latency
(from baresip's own recordings) and gaps inside the answer (playout underruns).

    .venv/bin/python -m tests.e2e.sip_load 1 2 4 6
    .venv/bin/python -m tests.e2e.sip_load --idle 4 8 16   # silent callers: the per-call cost
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from tests.e2e.test_sip_call import (
    SESSION,
    SPEECH_END_MS,
    WEBHOOK_SECRET,
    Baresip,
    mouth_to_ear_ms,
    webhook_app,
    write_caller_wav,
)
from tests.support import free_port, run_server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def longest_gap_ms(heard: np.ndarray, offset: int) -> float:
    """The longest silent stretch between the answer's first and last loud samples."""
    loud = np.flatnonzero(np.abs(heard[max(0, SPEECH_END_MS * 8 - offset) :].astype(np.int32)) > 500)
    if loud.size < 2:
        return float("nan")
    return float(np.diff(loud).max()) / 8


async def run_calls(
    server: Any, hook_port: int, sip_port: int, count: int, tmp: Path, idle: bool
) -> tuple[list[dict[str, float]], float]:
    wav = write_caller_wav(tmp / "caller.wav")
    if idle:  # quiet room noise only: the cost of the calls themselves (RTP, playout, VAD)
        noise = np.random.default_rng(1).normal(0, 30, 8000 * 30).astype("<i2")
        with wave.open(str(wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(noise.tobytes())
    async with (
        AsyncOpenAI(base_url=server.base_url, api_key=server.api_key) as client,
        webhook_app(client, hook_port) as app,
    ):
        phones = [Baresip(tmp / f"phone{i}", wav) for i in range(count)]
        await asyncio.gather(*(phone.start() for phone in phones))
        try:
            await asyncio.gather(
                *(phone.command("dial", f"sip:test@127.0.0.1:{sip_port}") for phone in phones)
            )
            call_ids = []
            for _ in phones:
                call_ids.append((await app.next_call(60)).data.call_id)
            await asyncio.gather(
                *(client.realtime.calls.accept(cid, type="realtime", **SESSION) for cid in call_ids)
            )
            cpu_before = cpu_seconds(server.process.pid)
            window = SPEECH_END_MS / 1000 + 15
            await asyncio.sleep(window)  # speak, wait for the answers
            cpu = (cpu_seconds(server.process.pid) - cpu_before) / window
            await asyncio.gather(*(client.realtime.calls.hangup(cid) for cid in call_ids))
            await asyncio.gather(*(phone.event("CALL_CLOSED") for phone in phones))
            results = []
            for phone in phones:
                sent, heard = phone.heard()
                try:
                    latency = mouth_to_ear_ms(sent, heard)
                except AssertionError:
                    latency = float("nan")
                results.append(
                    {
                        "mouth_to_ear_ms": latency,
                        "longest_gap_ms": longest_gap_ms(heard, len(sent) - len(heard)),
                    }
                )
            return results, cpu
        finally:
            await asyncio.gather(*(phone.stop() for phone in phones))


def main(counts: list[int], idle: bool) -> None:
    hook_port, sip_port = free_port(), free_port()
    env = {
        "OPENREALTIME_SIP_ENABLED": "true",
        "OPENREALTIME_SIP_PORT": str(sip_port),
        "OPENREALTIME_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "OPENREALTIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp), env=env) as server:
        for count in counts:
            run_dir = Path(tmp) / f"n{count}"
            run_dir.mkdir()
            results, cpu = asyncio.run(run_calls(server, hook_port, sip_port, count, run_dir, idle))
            latencies = [r["mouth_to_ear_ms"] for r in results]
            answered = [x for x in latencies if x == x]
            print(
                json.dumps(
                    {
                        "calls": count,
                        "idle": idle,
                        "server_cpu_cores": round(cpu, 2),
                        "answered": len(answered),
                        "mouth_to_ear_ms": sorted(round(x) for x in answered),
                        "median_ms": round(statistics.median(answered)) if answered else None,
                        "longest_gap_in_answer_ms": sorted(
                            round(r["longest_gap_ms"])
                            for r in results
                            if r["longest_gap_ms"] == r["longest_gap_ms"]
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    args = sys.argv[1:]
    main([int(arg) for arg in args if arg.isdigit()] or [1, 2, 4], idle="--idle" in args)
