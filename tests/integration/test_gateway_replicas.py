"""Two gateway processes sharing one Redis and one PostgreSQL act as one server: ephemeral keys,
per-key session limits, call control, sidebands and the usage ledger span both; a Redis outage
gives clear errors and the gateways recover when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from tests.postgres_support import run_postgres
from tests.support import ServerProcess, free_port, run_server, validate_server_event
from tests.webrtc_client import Caller

pytestmark = pytest.mark.slow

KEY = "sk-replicas-" + os.urandom(6).hex()
LIMITED_KEY = "sk-limited-" + os.urandom(6).hex()  # only the session-limit test uses it
DYING_KEY = "sk-dying-" + os.urandom(6).hex()  # only the dead-gateway test uses it
RATE_KEY = "sk-rate-" + os.urandom(6).hex()  # only the event-rate test uses it
EVENTS_PER_SECOND, EVENT_BURST = 50, 100
PER_KEY_LIMIT = 3
LEASE_SECONDS = 3.0


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port (no persistence), restartable on that port."""

    def __init__(self, root: Path) -> None:
        found = shutil.which("redis-server")
        if found is None:
            message = "redis-server not found (scripts/system-deps.sh installs it)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.binary = found
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket_to(self.port) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "redis.log").read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextlib.contextmanager
def socket_to(port: int) -> Iterator[Any]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        yield sock


@dataclasses.dataclass
class Replicas:
    a: ServerProcess
    b: ServerProcess
    redis: RedisServer
    postgres_url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    try:
        with run_postgres() as postgres_url:
            env = {
                "OPENREALTIME_API_KEYS": f"{KEY},{LIMITED_KEY},{DYING_KEY},{RATE_KEY}",
                "OPENREALTIME_MAX_EVENTS_PER_SECOND": str(EVENTS_PER_SECOND),
                "OPENREALTIME_EVENT_BURST": str(EVENT_BURST),
                "OPENREALTIME_REDIS_URL": redis.url,
                "OPENREALTIME_DATABASE_URL": postgres_url,
                "OPENREALTIME_MAX_SESSIONS_PER_KEY": str(PER_KEY_LIMIT),
                "OPENREALTIME_GATEWAY_LEASE_SECONDS": str(LEASE_SECONDS),
                "OPENREALTIME_WARM_UP": "false",
            }
            with (
                run_server(tmp_path_factory.mktemp("gateway-a"), args=["--text-only"], env=env) as a,
                run_server(tmp_path_factory.mktemp("gateway-b"), args=["--text-only"], env=env) as b,
            ):
                yield Replicas(
                    dataclasses.replace(a, api_key=KEY),
                    dataclasses.replace(b, api_key=KEY),
                    redis,
                    postgres_url,
                    env,
                )
    finally:
        redis.stop()


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def recv(ws: Any, kind: str, timeout: float = 60.0) -> dict[str, Any]:
    """The next event of type ``kind`` (every event on the way is validated)."""
    while True:
        event = validate_server_event(await asyncio.wait_for(ws.recv(), timeout))
        if event["type"] == kind:
            return event


@contextlib.asynccontextmanager
async def session(
    server: ServerProcess, key: str = KEY, query: str = "model=gpt-realtime"
) -> AsyncIterator[Any]:
    async with websockets.connect(f"{server.ws_url}/v1/realtime?{query}", additional_headers=auth(key)) as ws:
        yield ws


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds (state converging through Redis or the ledger)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def mint(server: ServerProcess, instructions: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post(
            "/v1/realtime/client_secrets",
            headers=auth(),
            json={"session": {"type": "realtime", "model": "gpt-realtime", "instructions": instructions}},
        )


async def test_ephemeral_key_minted_on_a_opens_a_session_on_b(replicas: Replicas) -> None:
    minted = await mint(replicas.a, "Answer like a pirate.")
    assert minted.status_code == 200, minted.text
    ek = minted.json()["value"]
    assert ek.startswith("ek_")
    async with session(replicas.b, key=ek) as ws:
        created = await recv(ws, "session.created")
    assert created["session"]["instructions"] == "Answer like a pirate."
    # an unknown ek_ is still refused on either gateway
    async with session(replicas.b, key="ek_" + "x" * 32) as ws:
        error = await recv(ws, "error")
    assert error["error"]["code"] == "invalid_api_key"


async def test_per_key_session_limit_counts_both_gateways(replicas: Replicas) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first_on_a = await stack.enter_async_context(session(replicas.a, key=LIMITED_KEY))
        await recv(first_on_a, "session.created")
        for server in (replicas.a, replicas.b):
            ws = await stack.enter_async_context(session(server, key=LIMITED_KEY))
            await recv(ws, "session.created")
        # three sessions of the key are open (two on A, one on B): a fourth is refused on B
        async with session(replicas.b, key=LIMITED_KEY) as refused:
            error = await recv(refused, "error")
            assert error["error"]["code"] == "session_limit_reached"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(refused.recv(), 10)
        assert refused.close_code == 1013
        # a WebRTC offer on A is refused too (429), counted against the same key
        async with httpx.AsyncClient(base_url=replicas.a.url, timeout=30) as http:
            offer = await http.post(
                "/v1/realtime/calls",
                headers={**auth(LIMITED_KEY), "Content-Type": "application/sdp"},
                content="v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
            )
        assert offer.status_code == 429 and offer.json()["error"]["code"] == "session_limit_reached"

        await first_on_a.close()  # one session on A ends: B admits one again

        async def b_admits() -> bool:
            async with session(replicas.b, key=LIMITED_KEY) as ws:
                event = validate_server_event(await asyncio.wait_for(ws.recv(), 30))
                return bool(event["type"] == "session.created")

        await eventually(b_admits)


async def test_event_rate_is_shared_by_both_gateways(replicas: Replicas) -> None:
    """Both gateways flood for two seconds at ten times the key's rate: together they accept
    about what one bucket allows (each alone would accept a burst plus its own refill)."""
    clear = json.dumps({"type": "input_audio_buffer.clear"})
    async with session(replicas.a, key=RATE_KEY) as on_a, session(replicas.b, key=RATE_KEY) as on_b:
        for ws in (on_a, on_b):
            await recv(ws, "session.created")
        started = time.monotonic()

        async def flood(ws: Any) -> int:
            sent = 0
            while time.monotonic() - started < 2.0:
                for _ in range(5):
                    await ws.send(clear)
                sent += 5
                await asyncio.sleep(0.02)
            accepted = 0
            for _ in range(sent):
                event = validate_server_event(await asyncio.wait_for(ws.recv(), 60))
                if event["type"] == "input_audio_buffer.cleared":
                    accepted += 1
                else:
                    assert event["type"] == "error" and event["error"]["code"] == "rate_limit_exceeded", event
            return accepted

        accepted = sum(await asyncio.gather(flood(on_a), flood(on_b)))
        elapsed = time.monotonic() - started
    # one shared bucket (its burst and its refill meanwhile) plus, per gateway, a leased batch
    # and a batch spent ahead of its lease (batch: a quarter of the burst here)
    slack = 2 * 2 * (EVENT_BURST // 4)
    local_only = 2 * (EVENT_BURST + EVENTS_PER_SECOND * 2.0)  # what two separate buckets accept
    bound = EVENT_BURST + EVENTS_PER_SECOND * elapsed + slack
    print(
        f"accepted {accepted} events in {elapsed:.2f}s (bound {bound:.0f}, two local buckets {local_only:.0f})"
    )
    assert EVENT_BURST // 2 <= accepted <= bound, (accepted, elapsed)
    assert accepted < local_only, (accepted, elapsed)


async def live_webrtc_sessions(server: ServerProcess) -> float:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics", headers=auth())).text
    for line in text.splitlines():
        if line.startswith('openrealtime_active_sessions{transport="webrtc"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_webrtc_call_on_a_is_controlled_through_b(replicas: Replicas) -> None:
    caller = Caller()
    try:
        call_id = await caller.connect(replicas.a, session={"type": "realtime", "model": "gpt-realtime"})
        await caller.until("session.created", timeout=30)
        assert await live_webrtc_sessions(replicas.a) == 1

        # a sideband WebSocket reaching B is relayed to A, both ways
        url = f"{replicas.b.ws_url}/v1/realtime?call_id={call_id}"
        async with websockets.connect(url, additional_headers=auth()) as sideband:
            update = {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
            await sideband.send(json.dumps(update))
            on_sideband = await recv(sideband, "session.updated", timeout=30)
            on_channel = (await caller.until("session.updated", timeout=30))[-1]
            assert on_sideband["event_id"] == on_channel["event_id"]

            async with httpx.AsyncClient(base_url=replicas.b.url, timeout=30) as http:
                # forwarded with the client's key, which the owner checks
                wrong_key = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth("sk-nope"))
                assert wrong_key.status_code == 401
                # a SIP control route for a WebRTC call: the owner answers (no such SIP call)
                accept = await http.post(
                    f"/v1/realtime/calls/{call_id}/accept", headers=auth(), json={"type": "realtime"}
                )
                assert accept.status_code == 404 and accept.json()["error"]["code"] == "call_not_found"
                hangup = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth())
                assert hangup.status_code == 200 and hangup.content == b""
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(sideband.recv(), 15)
        assert await live_webrtc_sessions(replicas.a) == 0  # A's call ended

        async def forgotten() -> bool:
            async with httpx.AsyncClient(base_url=replicas.b.url, timeout=30) as http:
                again = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth())
            return again.status_code == 404

        await eventually(forgotten)
    finally:
        await caller.close()


async def one_response(ws: Any) -> str:
    created = await recv(ws, "session.created")
    await ws.send(json.dumps({
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
    }))  # fmt: skip
    await ws.send(
        json.dumps(
            {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 2}}
        )
    )
    done = await recv(ws, "response.done", timeout=180)
    assert done["response"]["status"] in ("completed", "incomplete")
    return str(created["session"]["id"])


async def test_usage_from_both_gateways_lands_in_the_shared_ledger(replicas: Replicas) -> None:
    async with session(replicas.a) as on_a, session(replicas.b) as on_b:
        sessions = {await one_response(on_a), await one_response(on_b)}
    connection = await asyncpg.connect(replicas.postgres_url)
    try:

        async def recorded() -> bool:
            rows = await connection.fetch(
                "SELECT DISTINCT session_id FROM usage_records WHERE session_id = ANY($1::text[])",
                list(sessions),
            )
            return {row["session_id"] for row in rows} == sessions

        await eventually(recorded)
    finally:
        await connection.close()
    # either gateway reports both (usage is read from the shared ledger)
    async with httpx.AsyncClient(base_url=replicas.b.url, timeout=30) as http:
        usage = await http.get("/v1/usage", params={"group_by": "session"}, headers=auth())
    assert usage.status_code == 200, usage.text
    assert sessions <= {row["session_id"] for row in usage.json()["data"]}


async def test_redis_outage_gives_clear_errors_then_recovers(replicas: Replicas) -> None:
    minted = await mint(replicas.a, "Be kind.")
    ek = minted.json()["value"]
    async with session(replicas.a) as survivor:
        await recv(survivor, "session.created")
        replicas.redis.stop()
        try:
            unavailable = await mint(replicas.a, "Be kind.")
            assert unavailable.status_code == 503
            assert unavailable.json()["error"] == {
                "message": unavailable.json()["error"]["message"],
                "type": "server_error",
                "param": None,
                "code": "shared_state_unavailable",
            }
            for key in (ek, KEY):  # key lookup and session admission both need Redis
                async with session(replicas.b, key=key) as ws:
                    error = await recv(ws, "error")
                    assert error["error"]["type"] == "server_error"
                    assert error["error"]["code"] == "shared_state_unavailable"
            async with httpx.AsyncClient(base_url=replicas.b.url, timeout=30) as http:
                hangup = await http.post("/v1/realtime/calls/rtc_elsewhere/hangup", headers=auth())
                assert hangup.status_code == 503
                assert (await http.get("/healthz")).status_code == 200
            # a session already running keeps working
            await survivor.send(json.dumps({
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            }))  # fmt: skip
            await recv(survivor, "conversation.item.added", timeout=30)
        finally:
            replicas.redis.start()  # empty: the gateways republish their counts

    async def recovered() -> bool:
        return (await mint(replicas.a, "Be kind.")).status_code == 200

    await eventually(recovered)
    async with session(replicas.b) as ws:
        await recv(ws, "session.created")
    assert replicas.a.process.poll() is None and replicas.b.process.poll() is None


async def test_a_dead_gateway_ends_only_its_own_sessions(replicas: Replicas, tmp_path: Path) -> None:
    with run_server(tmp_path, args=["--text-only"], env=replicas.env) as c:
        async with session(replicas.a, key=DYING_KEY) as on_a:
            await recv(on_a, "session.created")
            caller = Caller()
            try:
                call_id = await caller.connect(
                    c, session={"type": "realtime", "model": "gpt-realtime"}, key=DYING_KEY
                )
                await caller.until("session.created", timeout=30)
                async with session(c, key=DYING_KEY) as on_c:
                    await recv(on_c, "session.created")
                    async with session(replicas.b, key=DYING_KEY) as refused:  # 1 on A + 2 on C
                        error = await recv(refused, "error")
                        assert error["error"]["code"] == "session_limit_reached"
                    c.process.kill()  # no shutdown: its lease and call entries just stop being renewed
                    c.process.wait(timeout=30)
                    with pytest.raises(websockets.ConnectionClosed):
                        while True:
                            await asyncio.wait_for(on_c.recv(), 30)
            finally:
                await caller.close()

            # A's session lives on
            await on_a.send(json.dumps({
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            }))  # fmt: skip
            await recv(on_a, "conversation.item.added", timeout=30)

            async def c_forgotten() -> bool:
                async with httpx.AsyncClient(base_url=replicas.b.url, timeout=30) as http:
                    hangup = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth(DYING_KEY))
                # until the entry expires the owner is reported unreachable, then the call is unknown
                assert hangup.status_code in (404, 502), hangup.text
                return hangup.status_code == 404

            await eventually(c_forgotten)

            async def b_admits() -> bool:  # C's sessions stopped counting when its lease ran out
                async with session(replicas.b, key=DYING_KEY) as ws:
                    event = validate_server_event(await asyncio.wait_for(ws.recv(), 30))
                    return bool(event["type"] == "session.created")

            await eventually(b_admits)
