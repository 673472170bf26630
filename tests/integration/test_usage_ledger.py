"""The usage ledger through the real server: what ``response.done`` reported is what the
ledger stored (and priced), ``/v1/usage`` and ``openrealtime usage`` aggregate it, budgets
refuse new responses, and rows and ephemeral keys survive a restart and a ``kill -9``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openrealtime.server.auth import key_id
from openrealtime.storage import UsageRecord
from openrealtime.storage.sqlite import SqliteStorage
from tests.integration.usage_client import TEXT_SESSION, assert_row_matches, connect, mint, usage
from tests.postgres_support import run_postgres
from tests.support import ServerProcess, run_server

pytestmark = pytest.mark.slow

ADMIN = "sk-admin-" + os.urandom(6).hex()
USER = "sk-user-" + os.urandom(6).hex()
BUDGETED = "sk-budget-" + os.urandom(6).hex()
BUDGET_USD = 0.00002  # one short text turn costs more: its question alone is ~8 new input tokens (32 µ$)


@pytest.fixture(scope="module")
def usage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("usage-server")
    env = {
        "OPENREALTIME_API_KEYS": f"{ADMIN},{USER},{BUDGETED}",
        "OPENREALTIME_USAGE_ADMIN_KEYS": ADMIN,
        "OPENREALTIME_KEY_BUDGETS_USD": json.dumps({BUDGETED: BUDGET_USD}),
    }
    with run_server(tmp, args=["--text-only"], env=env) as server:
        yield server


def database(server: ServerProcess) -> Path:
    return Path(server.log_path).parent / "data" / "openrealtime.db"


async def ledger_rows(path: Path, **where: str) -> list[UsageRecord]:
    storage = SqliteStorage(path)
    await storage.open()
    try:
        return await storage.usage_records(**where)
    finally:
        await storage.close()


async def test_text_turns_land_in_the_ledger_as_reported(usage_server: ServerProcess) -> None:
    async with connect(usage_server, USER, TEXT_SESSION) as caller:
        first, _ = await caller.text_turn("What is the capital of France?")
        second, _ = await caller.text_turn("And what is the capital of Spain?")
        session_id = caller.events[0]["session"]["id"]
    usages = [first["response"]["usage"], second["response"]["usage"]]
    # the whole conversation is input to each response; the second reuses the first's prompt
    assert usages[1]["input_tokens"] > usages[0]["input_tokens"]
    assert usages[1]["input_token_details"]["cached_tokens"] > 0

    reply = usage(usage_server, USER, group_by="session")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "list" and body["group_by"] == ["session"]
    [aggregate] = [a for a in body["data"] if a["session_id"] == session_id]
    assert aggregate["key_id"] == key_id(USER) and aggregate["responses"] == 2
    for field in ("input_tokens", "output_tokens", "total_tokens"):
        assert aggregate[field] == sum(u[field] for u in usages)
    assert aggregate["input_token_details"]["cached_tokens"] == sum(
        u["input_token_details"]["cached_tokens"] for u in usages
    )

    rows = await ledger_rows(database(usage_server), session_id=session_id)
    assert [r.id for r in rows] == [first["response"]["id"], second["response"]["id"]]
    for row, wire in zip(rows, usages, strict=True):
        assert (row.kind, row.status, row.key_id, row.model) == (
            "response",
            "completed",
            key_id(USER),
            "gpt-realtime",
        )
        assert_row_matches(row, wire)
    assert aggregate["amount"] == {"value": round(sum(r.cost_usd for r in rows), 6), "currency": "usd"}

    # the CLI reads the same database directly
    data_dir = database(usage_server).parent
    cli = [
        sys.executable,
        "-m",
        "openrealtime.cli",
        "usage",
        "--data-dir",
        str(data_dir),
        "--key-id",
        key_id(USER),
    ]
    listed = subprocess.run(
        [*cli, "--group-by", "session", "--json"], capture_output=True, text=True, check=True
    )
    [printed] = [a for a in json.loads(listed.stdout) if a["session_id"] == session_id]
    assert printed["cost_usd"] == pytest.approx(sum(r.cost_usd for r in rows))
    table = subprocess.run([*cli, "--group-by", "key,day"], capture_output=True, text=True, check=True)
    assert key_id(USER) in table.stdout and "cost $" in table.stdout


async def test_usage_route_is_for_api_keys_and_each_key_sees_its_own(usage_server: ServerProcess) -> None:
    async with connect(usage_server, ADMIN, TEXT_SESSION) as caller:
        await caller.text_turn("Say hi.", max_tokens=4)
    missing = usage(usage_server, None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert usage(usage_server, "sk-wrong").status_code == 401
    ephemeral = usage(usage_server, mint(usage_server, USER))
    assert ephemeral.status_code == 401 and "Ephemeral" in ephemeral.json()["error"]["message"]

    own = usage(usage_server, USER).json()["data"]
    assert {a["key_id"] for a in own} <= {key_id(USER)}
    denied = usage(usage_server, USER, key_id=key_id(ADMIN))
    assert denied.status_code == 403 and denied.json()["error"]["param"] == "key_id"
    everyone = usage(usage_server, ADMIN).json()["data"]
    assert key_id(ADMIN) in {a["key_id"] for a in everyone}
    filtered = usage(usage_server, ADMIN, key_id=key_id(ADMIN), group_by="day").json()["data"]
    assert [a["day"] for a in filtered] == [time.strftime("%Y-%m-%d", time.gmtime())]
    future = usage(usage_server, ADMIN, start=time.time() + 3600).json()["data"]
    assert future == []
    for params, param in (({"group_by": "model"}, "group_by"), ({"start": "yesterday"}, "start")):
        bad = usage(usage_server, ADMIN, **params)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param


async def test_budget_refuses_new_responses_and_the_session_goes_on(usage_server: ServerProcess) -> None:
    async with connect(usage_server, BUDGETED, TEXT_SESSION) as caller:
        done, events = await caller.text_turn("What is two plus two?")
        assert done["response"]["status"] == "completed"  # under budget when it started
        limits = events[-1]["rate_limits"]
        assert [entry["name"] for entry in limits] == ["tokens", "requests"]
        assert limits[1]["limit"] == round(BUDGET_USD * 1_000_000) and limits[1]["remaining"] == 0
        assert 0 < limits[1]["reset_seconds"] <= 86_400

        await caller.say("And three plus three?")
        await caller.send({"type": "response.create", "event_id": "evt_over_budget"})
        [refused] = await caller.until("error")
        error = refused["error"]
        assert (error["type"], error["code"], error["event_id"]) == (
            "insufficient_quota",
            "insufficient_quota",
            "evt_over_budget",
        )
        assert "quota" in error["message"] and "budget" in error["message"]
        assert not any(e["type"] == "response.created" for e in caller.events[-2:])
        await caller.say("Still connected?")  # the session goes on
    body = usage(usage_server, BUDGETED).json()
    assert body["budget"]["remaining"]["value"] == 0 and body["budget"]["period"] == "day"
    assert body["data"][0]["responses"] == 1
    assert "budget exhausted: key " + key_id(BUDGETED) in usage_server.log()
    assert BUDGETED not in usage_server.log()


# ------------------------------------------------------------------ crashes and restarts


async def hammer(server: ServerProcess, key: str, seen: list[tuple[str, float]], stop: asyncio.Event) -> None:
    """Back-to-back responses on one session until ``stop``; notes each response.done seen."""
    async with connect(server, key, TEXT_SESSION) as caller:
        await caller.say("Count to three.")
        while not stop.is_set():
            await caller.send({"type": "response.create", "response": {"max_output_tokens": 6}})
            for event in await caller.until("response.done"):
                if event["type"] == "response.done":
                    seen.append((event["response"]["id"], time.monotonic()))


async def load_until_killed(
    server: ServerProcess, key: str, sessions: int, responses: int
) -> tuple[list[tuple[str, float]], float]:
    seen: list[tuple[str, float]] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(hammer(server, key, seen, stop)) for _ in range(sessions)]
    deadline = time.monotonic() + 240
    while len(seen) < responses and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if any(task.done() for task in tasks):
            break
    server.process.kill()  # SIGKILL, mid-response
    killed_at = time.monotonic()
    stop.set()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        assert result is None or isinstance(result, Exception)
    return seen, killed_at


async def test_kill_9_under_load_loses_nothing_committed_and_doubles_nothing(tmp_path: Path) -> None:
    key = "sk-load-" + os.urandom(6).hex()
    env = {"OPENREALTIME_API_KEYS": key}
    with run_server(tmp_path, args=["--text-only"], env=env) as server:
        ephemeral = mint(server, key)
        seen, killed_at = await load_until_killed(server, key, sessions=3, responses=24)
    assert len(seen) >= 12, "the load did not get going"
    rows = await ledger_rows(tmp_path / "data" / "openrealtime.db")
    stored = [r.id for r in rows]
    assert len(stored) == len(set(stored))
    seen_ids = {rid for rid, _ in seen}
    settled = {rid for rid, at in seen if at < killed_at - 0.5}
    assert settled <= set(stored), f"lost {len(settled - set(stored))} committed responses"
    in_flight = set(stored) - seen_ids  # recorded, but the client had not read its response.done yet
    assert len(in_flight) <= 3
    assert len(seen_ids - set(stored)) <= 3  # at most the last one per session, sent but not yet committed

    with run_server(tmp_path, args=["--text-only"], env=env) as server:
        async with connect(server, ephemeral) as caller:  # minted before the crash, still valid
            after, _ = await caller.text_turn("Hello again.", max_tokens=4)
        body = usage(server, key).json()
        assert body["data"][0]["responses"] == len(stored) + 1
    # a graceful stop flushes: the last response is stored exactly once, the crash rows unchanged
    final = await ledger_rows(tmp_path / "data" / "openrealtime.db")
    assert [r.id for r in final] == [*stored, after["response"]["id"]]
    assert final[:-1] == rows
    assert_row_matches(final[-1], after["response"]["usage"])


async def test_postgres_backed_server_keeps_usage_and_keys_across_restart(tmp_path: Path) -> None:
    key = "sk-pg-" + os.urandom(6).hex()
    with run_postgres() as url:
        env = {"OPENREALTIME_API_KEYS": key, "OPENREALTIME_DATABASE_URL": url}
        with run_server(tmp_path, args=["--text-only"], env=env) as server:
            ephemeral = mint(server, key)
            async with connect(server, ephemeral) as caller:
                done, _ = await caller.text_turn("Name a colour.", max_tokens=4)
        assert not (tmp_path / "data" / "openrealtime.db").exists()
        with run_server(tmp_path, args=["--text-only"], env=env) as server:
            async with connect(server, ephemeral) as caller:
                await caller.text_turn("Another one.", max_tokens=4)
            [aggregate] = usage(server, key, group_by="key").json()["data"]
            assert aggregate["responses"] == 2 and aggregate["key_id"] == key_id(key)
            assert aggregate["total_tokens"] > done["response"]["usage"]["total_tokens"]
