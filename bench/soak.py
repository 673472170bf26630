"""Load and leak run against the real server on the embedded models.

    python bench/soak.py --text 50 --voice 4 --seconds 180 --cycles 1000

Prints and writes ``bench/results/soak.json``: text first-token and voice-to-voice latency
under load (median/p95), and the server's file descriptors, threads and RSS before and after
the connect → respond → abort cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import run_server  # noqa: E402

from openrealtime.benchmark.machine import machine_info  # noqa: E402
from openrealtime.benchmark.server import BenchServer  # noqa: E402
from openrealtime.benchmark.soak import (  # noqa: E402
    ProcessStats,
    connect_abort_cycles,
    cpu_seconds,
    mixed_load,
)

RESULTS = ROOT / "bench" / "results"


async def soak(server: BenchServer, pid: int, args: argparse.Namespace) -> dict[str, object]:
    cpu_before, load_started = cpu_seconds(pid), time.monotonic()
    load = await mixed_load(server, text_sessions=args.text, voice_sessions=args.voice, seconds=args.seconds)
    load["server_cores_busy"] = round((cpu_seconds(pid) - cpu_before) / (time.monotonic() - load_started), 2)
    load["machine_load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(load, indent=2), flush=True)
    await connect_abort_cycles(server, 20)
    await asyncio.sleep(5)  # let the server finish releasing the warm-up sessions
    before = ProcessStats.of(pid)
    started = time.monotonic()
    completed = await connect_abort_cycles(server, args.cycles)
    await asyncio.sleep(5)
    after = ProcessStats.of(pid)
    cycles = {
        "cycles": args.cycles,
        "completed": completed,
        "seconds": round(time.monotonic() - started, 1),
        "before": vars(before),
        "after": vars(after),
        "growth": after.growth_since(before),
    }
    print(json.dumps(cycles, indent=2), flush=True)
    return {"load": load, "abort_cycles": cycles}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--text", type=int, default=50, help="concurrent text sessions")
    parser.add_argument("--voice", type=int, default=4, help="concurrent real-speech sessions")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the load phase")
    parser.add_argument("--cycles", type=int, default=1000, help="connect/abort cycles")
    args = parser.parse_args()
    env = {"OPENREALTIME_MAX_SESSIONS_PER_KEY": str(args.text + args.voice + 10)}
    with (
        tempfile.TemporaryDirectory(prefix="openrealtime-soak-") as tmp,
        run_server(Path(tmp), env=env) as server,
    ):
        bench = BenchServer(url=server.url, api_key=server.api_key, log_path=server.log_path)
        result = asyncio.run(soak(bench, server.process.pid, args))
    report = {"command": " ".join(["python", *sys.argv]), "machine": machine_info(), **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
