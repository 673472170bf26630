"""What a connected idle session costs the server: resident memory and CPU per session, for
WebSocket, WebRTC (aiortc callers sending silence) and SIP (baresip callers sending quiet
room noise). Memory is the server's RSS growth per session once they are all connected; CPU is
the server process's CPU time (user + system, from ``/proc``, not wall clock) over a window,
beyond what the same server spends with no session, divided by the window and the sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from tests.support import ServerProcess

IdleSessions = Callable[[ServerProcess, int], contextlib.AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class IdleCost:
    transport: str
    sessions: int
    window_s: float
    rss_mb_per_session: float
    core_share_per_session: float
    """Fraction of one core each idle session costs (0.01 is 1 %)."""
    baseline_core_share: float
    """The server with no session over the same kind of window."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def cpu_share(pid: int, window_s: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(window_s)
    return (cpu_seconds(pid) - before) / window_s


async def measure(
    server: ServerProcess,
    transport: str,
    sessions: IdleSessions,
    count: int,
    *,
    window_s: float = 20.0,
    settle_s: float = 3.0,
) -> IdleCost:
    """Baseline, then ``count`` idle sessions of one transport at once."""
    pid = server.process.pid
    async with sessions(server, 1):  # warm the path once: lazy imports, first-use caches
        await asyncio.sleep(settle_s)
    await asyncio.sleep(settle_s)
    baseline = await cpu_share(pid, window_s)
    rss_before = rss_mb(pid)
    async with sessions(server, count):
        await asyncio.sleep(settle_s)
        rss_after = rss_mb(pid)
        loaded = await cpu_share(pid, window_s)
    return IdleCost(
        transport=transport,
        sessions=count,
        window_s=window_s,
        rss_mb_per_session=round((rss_after - rss_before) / count, 3),
        core_share_per_session=round(max(0.0, loaded - baseline) / count, 5),
        baseline_core_share=round(baseline, 4),
    )


# ------------------------------------------------------------------ the transports


@contextlib.asynccontextmanager
async def websocket_sessions(server: ServerProcess, count: int) -> AsyncIterator[None]:
    """``count`` connected sessions with the default configuration that send nothing."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            ws = await stack.enter_async_context(
                websockets.connect(
                    f"{server.ws_url}/v1/realtime?model=gpt-realtime",
                    additional_headers={"Authorization": f"Bearer {server.api_key}"},
                    max_size=None,
                )
            )
            event = json.loads(await ws.recv())
            assert event["type"] == "session.created", event
        yield


@contextlib.asynccontextmanager
async def webrtc_sessions(server: ServerProcess, count: int) -> AsyncIterator[None]:
    """``count`` aiortc callers whose microphones send digital silence (a muted microphone;
    Opus, 50 packets/s)."""
    async with _webrtc_callers(server, count, noise_seconds=0.0):
        yield


@contextlib.asynccontextmanager
async def webrtc_dtx_sessions(server: ServerProcess, count: int) -> AsyncIterator[None]:
    """Muted microphones sent as a browser sends them when the answer asks for Opus DTX
    (libopus with DTX: a packet every 400 ms once the microphone gives digital silence)."""
    async with _webrtc_callers(server, count, noise_seconds=0.0, dtx=True):
        yield


def webrtc_browser_noise_sessions_factory(seconds: float) -> IdleSessions:
    """Open microphones sent as a browser sends them (libopus at 48 kHz mono, 32 kb/s, VoIP,
    DTX asked for): the room noise keeps libopus out of DTX, so 50 packets/s, as with
    ``webrtc_noise_sessions_factory`` but at a browser's bit rate instead of aiortc's."""

    @contextlib.asynccontextmanager
    async def webrtc_browser_noise_sessions(server: ServerProcess, count: int) -> AsyncIterator[None]:
        async with _webrtc_callers(server, count, noise_seconds=seconds, dtx=True):
            yield

    return webrtc_browser_noise_sessions


def webrtc_noise_sessions_factory(seconds: float) -> IdleSessions:
    """Idle aiortc callers with an open microphone: quiet room noise (the SIP callers' level,
    about -60 dBFS) for ``seconds``, Opus at 50 packets/s."""

    @contextlib.asynccontextmanager
    async def webrtc_noise_sessions(server: ServerProcess, count: int) -> AsyncIterator[None]:
        async with _webrtc_callers(server, count, noise_seconds=seconds):
            yield

    return webrtc_noise_sessions


@contextlib.asynccontextmanager
async def _webrtc_callers(
    server: ServerProcess, count: int, *, noise_seconds: float, dtx: bool = False
) -> AsyncIterator[None]:
    from tests.webrtc_client import RATE, Caller

    callers = [Caller(dtx=dtx) for _ in range(count)]
    try:
        for index, caller in enumerate(callers):
            if noise_seconds > 0:
                rng = np.random.default_rng(index + 1)
                caller.mic.play(rng.normal(0, 30, int(RATE * noise_seconds)).astype(np.int16))
            await caller.connect(server, session={"type": "realtime", "model": "gpt-realtime"})
            await caller.until("session.created", 60)
            assert not dtx or caller.encoder is not None, "the answer did not ask for Opus DTX"
        yield
    finally:
        await asyncio.gather(*(caller.close() for caller in callers), return_exceptions=True)


def sip_sessions_factory(hook_port: int, sip_port: int, tmp: Path, seconds: float) -> IdleSessions:
    """Idle phone calls: baresip callers (one per call) sending quiet room noise."""

    @contextlib.asynccontextmanager
    async def sip_sessions(server: ServerProcess, count: int) -> AsyncIterator[None]:
        from openai import AsyncOpenAI

        from tests.e2e.test_sip_call import SESSION, Baresip, webhook_app

        run = tmp / f"sip-{count}-{time.monotonic_ns()}"
        run.mkdir(parents=True)
        wav = run / "noise.wav"
        noise = np.random.default_rng(1).normal(0, 30, int(8000 * seconds)).astype("<i2")
        with wave.open(str(wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(noise.tobytes())
        async with (
            AsyncOpenAI(base_url=server.base_url, api_key=server.api_key) as client,
            webhook_app(client, hook_port) as app,
        ):
            phones = [Baresip(run / f"phone{i}", wav) for i in range(count)]
            await asyncio.gather(*(phone.start() for phone in phones))
            call_ids: list[str] = []
            try:
                for phone in phones:
                    await phone.command("dial", f"sip:test@127.0.0.1:{sip_port}")
                    call_ids.append((await app.next_call(60)).data.call_id)
                await asyncio.gather(
                    *(client.realtime.calls.accept(cid, type="realtime", **SESSION) for cid in call_ids)
                )
                yield
            finally:
                await asyncio.gather(
                    *(client.realtime.calls.hangup(cid) for cid in call_ids), return_exceptions=True
                )
                await asyncio.gather(*(phone.stop() for phone in phones), return_exceptions=True)

    return sip_sessions
