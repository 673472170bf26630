"""The cost of connected idle sessions on the real server, per transport.

    python bench/idle_sessions.py --websocket 50 --webrtc 50 --webrtc-noise 50 --webrtc-dtx 50 \
        --sip 50 --window 20

For each transport: the server's CPU with no session over the window, then N sessions that
stay connected and quiet (WebSocket: nothing sent; WebRTC: aiortc callers sending digital
silence, a muted microphone; WebRTC with noise: aiortc callers sending quiet room noise, an
open microphone; WebRTC with DTX: a muted microphone sent as a browser sends it when the
answer asks for Opus DTX, a packet every 400 ms; WebRTC browser noise: an open microphone at
a browser's Opus settings, 32 kb/s mono with DTX asked, which room noise keeps out of DTX;
SIP: baresip callers sending quiet room noise), the server's RSS growth and its process CPU
time (from ``/proc``) over the same window. Prints per-session MB and share of a core and
writes ``bench/results/idle_sessions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.test_sip_call import WEBHOOK_SECRET  # noqa: E402
from tests.idle_sessions import (  # noqa: E402
    measure,
    sip_sessions_factory,
    webrtc_browser_noise_sessions_factory,
    webrtc_dtx_sessions,
    webrtc_noise_sessions_factory,
    webrtc_sessions,
    websocket_sessions,
)
from tests.support import free_port, run_server  # noqa: E402

from openrealtime.benchmark.machine import machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results"


async def run(
    args: argparse.Namespace, server: object, tmp: Path, hook_port: int, sip_port: int
) -> list[dict[str, object]]:
    found = []
    plan = [
        ("websocket", websocket_sessions, args.websocket),
        ("webrtc", webrtc_sessions, args.webrtc),
        ("webrtc-noise", webrtc_noise_sessions_factory(args.window * 2 + 60), args.webrtc_noise),
        ("webrtc-dtx", webrtc_dtx_sessions, args.webrtc_dtx),
        (
            "webrtc-browser-noise",
            webrtc_browser_noise_sessions_factory(args.window * 2 + 60),
            args.webrtc_browser_noise,
        ),
        ("sip", sip_sessions_factory(hook_port, sip_port, tmp, args.window * 2 + 60), args.sip),
    ]
    for transport, sessions, count in plan:
        if count <= 0:
            continue
        if transport == "sip" and shutil.which("baresip") is None:
            print("baresip is not installed: SIP skipped", flush=True)
            continue
        cost = await measure(server, transport, sessions, count, window_s=args.window)  # type: ignore[arg-type]
        print(json.dumps(cost.as_dict()), flush=True)
        found.append(cost.as_dict())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--websocket", type=int, default=50)
    parser.add_argument("--webrtc", type=int, default=50)
    parser.add_argument("--webrtc-noise", type=int, default=50)
    parser.add_argument("--webrtc-dtx", type=int, default=50)
    parser.add_argument(
        "--webrtc-browser-noise",
        type=int,
        default=0,
        help="callers with an open microphone at a browser's Opus settings (32 kb/s mono, DTX asked)",
    )
    parser.add_argument("--sip", type=int, default=50)
    parser.add_argument("--window", type=float, default=20.0, help="CPU measuring window, s")
    args = parser.parse_args()
    hook_port, sip_port = free_port(), free_port()
    total = (
        args.websocket
        + args.webrtc
        + args.webrtc_noise
        + args.webrtc_dtx
        + args.webrtc_browser_noise
        + args.sip
        + 10
    )
    env = {
        "OPENREALTIME_MAX_SESSIONS_PER_KEY": str(total),
        "OPENREALTIME_MAX_SESSIONS": str(total),
        "OPENREALTIME_SIP_ENABLED": "true",
        "OPENREALTIME_SIP_PORT": str(sip_port),
        "OPENREALTIME_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "OPENREALTIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with (
        tempfile.TemporaryDirectory(prefix="openrealtime-idle-") as tmp,
        run_server(Path(tmp), env=env) as server,
    ):
        results = asyncio.run(run(args, server, Path(tmp), hook_port, sip_port))
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "idle_sessions.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
