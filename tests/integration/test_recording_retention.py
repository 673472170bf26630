"""The server's retention sweeper (started in its lifespan) deletes expired recordings: a
``metadata`` recording of a real session on a text-only server, with a retention of seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from openrealtime.recording import generate_key
from tests.support import ServerProcess, run_server, validate_server_event

pytestmark = pytest.mark.slow

RETENTION_S = 6.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "OPENREALTIME_RECORDING": "metadata",
        "OPENREALTIME_RECORDING_KEY": generate_key(),
        "OPENREALTIME_RETENTION_DAYS": str(RETENTION_S / 86_400),
        "OPENREALTIME_RECORDING_SWEEP_MINUTES": "0.02",
    }
    with run_server(tmp_path_factory.mktemp("retention"), args=["--text-only"], env=env) as running:
        yield running


async def listed(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    answer = await http.get("/recordings", params={"session_id": session_id})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


async def test_the_sweeper_deletes_an_expired_recording(server: ServerProcess) -> None:
    client = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key)
    async with client.realtime.connect(model="gpt-realtime") as connection:
        created = validate_server_event(await connection.recv_bytes())
        await connection.send(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "Hi."}}
        )
        assert validate_server_event(await connection.recv_bytes())["type"] == "session.updated"
    session_id = created["session"]["id"]
    root = Path(server.log_path.parent / "data" / "recordings")
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as http:
        deadline = time.monotonic() + 30
        while not (found := await listed(http, session_id)) or found[0]["status"] != "complete":
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.2)
        [meta] = found
        assert meta["mode"] == "metadata" and meta["caller_audio_ms"] == 0
        assert any(p.name == "events.orec" for p in root.rglob("*"))
        deadline = time.monotonic() + RETENTION_S + 60
        while await listed(http, session_id):
            assert time.monotonic() < deadline, "the expired recording was not swept"
            await asyncio.sleep(0.5)
        assert time.time() - meta["started_at"] >= RETENTION_S  # not before it expired
    assert not any(p.name == "events.orec" for p in root.rglob("*"))
    assert "retention: deleted 1 recording(s)" in server.log()
