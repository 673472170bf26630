"""A short load and leak run against the real server (bench/soak.py runs the long one):
text and voice sessions at once, then connect → respond → abort cycles, with the server's
file descriptors, threads and memory compared before and after."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from openrealtime.benchmark.server import BenchServer
from openrealtime.benchmark.soak import ProcessStats, connect_abort_cycles, mixed_load
from tests.support import ServerProcess, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"OPENREALTIME_MAX_SESSIONS_PER_KEY": "100"}
    with run_server(tmp_path_factory.mktemp("soak"), env=env) as server:
        yield server


def bench_server(server: ServerProcess) -> BenchServer:
    return BenchServer(url=server.url, api_key=server.api_key, log_path=server.log_path)


def active_sessions(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.api_key}"}).text
    return sum(float(v) for v in re.findall(r"^openrealtime_active_sessions\{[^}]*\} (\S+)$", text, re.M))


def settle(server: ServerProcess, timeout: float = 60.0) -> None:
    """Wait (bounded) until the server has let go of every session."""
    deadline = time.monotonic() + timeout
    while active_sessions(server) > 0:
        assert time.monotonic() < deadline, "sessions were never released"
        time.sleep(0.2)


async def test_text_and_voice_sessions_at_once(soak_server: ServerProcess) -> None:
    report = await mixed_load(bench_server(soak_server), text_sessions=12, voice_sessions=2, seconds=30)
    assert report["text_errors"] == [], report
    assert report["text_responses"] >= 12, report
    assert report["voice_answered"] >= 2 and report["voice_errors"] == [], report
    settle(soak_server)


async def test_connect_abort_cycles_leak_nothing(soak_server: ServerProcess) -> None:
    server = bench_server(soak_server)
    pid = soak_server.process.pid
    assert await connect_abort_cycles(server, 10) == 10  # warm every code path once
    settle(soak_server)
    before = ProcessStats.of(pid)
    assert await connect_abort_cycles(server, 60) == 60
    settle(soak_server)
    growth = ProcessStats.of(pid).growth_since(before)
    assert growth["fds"] <= 3 and growth["threads"] <= 1 and growth["rss_mb"] <= 40, growth
