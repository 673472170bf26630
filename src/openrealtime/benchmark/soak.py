"""Load and leak checks against a running server: many text sessions and a few voice sessions
at once for a while, and connect → start a response → abort cycles, with the server process's
file descriptors, threads and resident memory measured before and after (from ``/proc``)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from .audio import bundled_utterances
from .caller import CallerSettings, run_session
from .server import BenchServer
from .stats import summarize

TEXT_SESSION = json.dumps(
    {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (from ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStats:
    fds: int
    threads: int
    rss_mb: float

    @classmethod
    def of(cls, pid: int) -> ProcessStats:
        proc = Path(f"/proc/{pid}")
        rss_kb = next(
            int(line.split()[1])
            for line in (proc / "status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        return cls(
            fds=len(list((proc / "fd").iterdir())),
            threads=len(list((proc / "task").iterdir())),
            rss_mb=round(rss_kb / 1024, 1),
        )

    def growth_since(self, before: ProcessStats) -> dict[str, float]:
        return {
            "fds": self.fds - before.fds,
            "threads": self.threads - before.threads,
            "rss_mb": round(self.rss_mb - before.rss_mb, 1),
        }


def _connect(server: BenchServer) -> Any:
    return websockets.connect(
        server.realtime_url, additional_headers={"Authorization": f"Bearer {server.api_key}"}, max_size=None
    )


async def _until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(await ws.recv())
        if event["type"] == kind:
            return event


def _user(text: str) -> str:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return json.dumps({"type": "conversation.item.create", "item": item})


async def connect_abort_cycle(server: BenchServer) -> None:
    """Open a session, start a long response and drop the TCP connection once it streams."""
    async with _connect(server) as ws:
        await _until(ws, "session.created")
        await ws.send(TEXT_SESSION)
        await ws.send(_user("Tell me a long story about the sea."))
        await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 400}}))
        await _until(ws, "response.created")
        ws.transport.abort()  # no close handshake: the way a crashed client disappears


async def connect_abort_cycles(server: BenchServer, cycles: int, concurrency: int = 4) -> int:
    """Run ``cycles`` abort cycles, ``concurrency`` at a time; returns how many completed."""
    done = 0
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal done
        async with gate:
            try:
                await asyncio.wait_for(connect_abort_cycle(server), 120)
                done += 1
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass

    await asyncio.gather(*(one() for _ in range(cycles)))
    return done


@dataclass
class TextLoad:
    latencies_ms: list[float] = field(default_factory=list)
    """response.create → first text delta, per response."""
    responses: int = 0
    refused: int = 0
    """``response.create`` refused with ``server_overloaded`` (retried after ``reset_seconds``)."""
    errors: list[str] = field(default_factory=list)


async def text_session(server: BenchServer, until: float, load: TextLoad, index: int) -> None:
    """Turn after turn until ``until`` (monotonic seconds)."""
    try:
        async with _connect(server) as ws:
            await _until(ws, "session.created")
            await ws.send(TEXT_SESSION)
            await _until(ws, "session.updated")
            turn = 0
            while time.monotonic() < until:
                turn += 1
                await ws.send(_user(f"Caller {index}, question {turn}: name a colour."))
                create = json.dumps({"type": "response.create", "response": {"max_output_tokens": 16}})
                sent = time.monotonic()
                await ws.send(create)
                first: float | None = None
                retry_after = 1.0
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "response.output_text.delta" and first is None:
                        first = time.monotonic()
                    elif event["type"] == "rate_limits.updated":
                        retry_after = float(event["rate_limits"][0].get("reset_seconds") or 1.0)
                    elif event["type"] == "error" and event["error"]["code"] == "server_overloaded":
                        # refused at capacity: wait as told, then ask again (the wait counts)
                        load.refused += 1
                        if time.monotonic() >= until and turn > 1:
                            return  # every session still gets its first answer
                        await asyncio.sleep(min(max(retry_after, 0.2), 5.0))
                        await ws.send(create)
                    elif event["type"] == "error":
                        load.errors.append(event["error"]["code"])
                    elif event["type"] == "response.done":
                        break
                load.responses += 1
                if first is not None:
                    load.latencies_ms.append((first - sent) * 1000)
    except (OSError, websockets.WebSocketException) as exc:
        load.errors.append(type(exc).__name__)


async def mixed_load(
    server: BenchServer, *, text_sessions: int, voice_sessions: int, seconds: float
) -> dict[str, Any]:
    """``text_sessions`` text callers and ``voice_sessions`` real-speech callers at once."""
    until = time.monotonic() + seconds
    text = TextLoad()
    utterances = bundled_utterances()
    voice_turns = max(1, int(seconds // 8))
    caller = CallerSettings(turns=voice_turns)
    started = time.monotonic()
    results = await asyncio.gather(
        *(text_session(server, until, text, i) for i in range(text_sessions)),
        *(
            run_session(server, utterances, caller, session=i, start_delay_s=i * 0.7)
            for i in range(voice_sessions)
        ),
    )
    voice = [turn for batch in results[text_sessions:] if batch for turn in batch]
    v2v = [t.voice_to_voice_ms for t in voice if t.voice_to_voice_ms is not None]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "text_sessions": text_sessions,
        "text_responses": text.responses,
        "text_first_token_ms": summarize(text.latencies_ms),
        "text_refused": text.refused,
        "text_errors": text.errors,
        "voice_sessions": voice_sessions,
        "voice_turns": len(voice),
        "voice_answered": len(v2v),
        "voice_to_voice_ms": summarize(v2v),
        "voice_underruns": sum(t.underruns for t in voice),
        "voice_errors": [t.error for t in voice if t.error],
    }
