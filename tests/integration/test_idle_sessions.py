"""Connected idle sessions stay cheap on the real server: resident memory and CPU per
session for WebSocket, WebRTC (aiortc callers with a muted microphone, sending digital
silence, with an open one, sending quiet room noise, and muted ones sending Opus DTX as a
browser does when the answer asks for it) and SIP (baresip callers sending room
noise). CPU is the server process's CPU time, not wall clock, so a busy machine
slows the test but does not move the figure much; the bounds leave room over what
``bench/idle_sessions.py`` measures (README: idle sessions)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_sip_call import WEBHOOK_SECRET
from tests.idle_sessions import (
    measure,
    sip_sessions_factory,
    webrtc_dtx_sessions,
    webrtc_noise_sessions_factory,
    webrtc_sessions,
    websocket_sessions,
)
from tests.support import ServerProcess, free_port, run_server

pytestmark = pytest.mark.slow

SESSIONS = 10
MB_PER_SESSION = 5.0
"""The target for every transport (measured: WebSocket 0.05, WebRTC 0.5-1.2, SIP 0.3-0.8)."""


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int]) -> Iterator[ServerProcess]:
    hook_port, sip_port = ports
    env = {
        "OPENREALTIME_SIP_ENABLED": "true",
        "OPENREALTIME_SIP_PORT": str(sip_port),
        "OPENREALTIME_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "OPENREALTIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with run_server(tmp_path_factory.mktemp("idle"), env=env) as server:
        yield server


async def test_idle_websocket_sessions_cost_little(server: ServerProcess) -> None:
    cost = await measure(server, "websocket", websocket_sessions, SESSIONS, window_s=10)
    assert cost.rss_mb_per_session <= MB_PER_SESSION, cost
    assert cost.core_share_per_session <= 0.01, cost  # measured: 0.0


@pytest.mark.parametrize("microphone", ["muted", "open", "muted-dtx"])
async def test_idle_webrtc_calls_cost_little(server: ServerProcess, microphone: str) -> None:
    sessions = {
        "muted": webrtc_sessions,
        "open": webrtc_noise_sessions_factory(120),
        "muted-dtx": webrtc_dtx_sessions,
    }[microphone]
    cost = await measure(server, f"webrtc-{microphone}", sessions, SESSIONS, window_s=10)
    assert cost.rss_mb_per_session <= MB_PER_SESSION, cost
    if microphone == "muted-dtx":
        # a muted browser microphone sent with Opus DTX (the answer asks for it): measured
        # 0.60-0.64 % of a core per call on a quiet Zen 5 EPYC (1.3-1.5 % without DTX); held
        # to 2 %, room for a loaded machine (about twice, as the other bounds)
        assert cost.core_share_per_session <= 0.02, cost
        return
    # measured on a quiet Zen 5 EPYC: 1.4-1.7 % of a core per call with a muted microphone and
    # 1.7-1.8 % with an open one (2.1-2.3 % and 2.3-2.5 % before the answer's silence went out
    # as Opus DTX and the caller's Opus was decoded straight to 24 kHz); 3.1-4.8 % at load
    # average 3-12 for the code before those changes. What is left is aiortc's per-packet
    # receive path, the session's per-packet work and the shared VAD: above the 1 % target.
    # Held to about twice the worst measured under load, which still catches a call that
    # polls, decodes or sends without need.
    assert cost.core_share_per_session <= 0.07, cost


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")
async def test_idle_sip_calls_cost_little(
    server: ServerProcess, ports: tuple[int, int], tmp_path: Path
) -> None:
    sessions = sip_sessions_factory(*ports, tmp_path, seconds=120)
    cost = await measure(server, "sip", sessions, SESSIONS, window_s=10)
    assert cost.rss_mb_per_session <= MB_PER_SESSION, cost
    # measured 0.98-1.7 % at load average 3-12 (0.56-1.4 % for the code before the silence
    # fast path and the shared media clock, alternating runs: the VAD worker's share grew while
    # the event loop's fell; a later alternating series at load 8-13 gave 1.19-1.46 % against
    # 0.99-1.41 % before, the same within noise) and 1.2-2.1 % on a quiet machine before those
    # changes (fewer callers already awake, so more wake-ups and cache misses per packet); held
    # to about twice the worst measured, which still catches a call that polls or decodes
    # without need.
    assert cost.core_share_per_session <= 0.04, cost
