"""A small WebSocket caller for the usage tests: text turns, with every event SDK-validated."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from openrealtime.storage import UsageRecord
from openrealtime.telemetry.prices import PriceTable
from tests.support import ServerProcess, validate_server_event

TEXT_SESSION = {
    "type": "realtime",
    "output_modalities": ["text"],
    "instructions": "Answer in one short sentence.",
}


class Caller:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def until(self, *kinds: str, limit: int = 5000) -> list[dict[str, Any]]:
        """Events up to and including the first whose type is one of ``kinds``."""
        got = []
        for _ in range(limit):
            event = validate_server_event(await self.ws.recv())
            self.events.append(event)
            got.append(event)
            if event["type"] in kinds:
                return got
        raise AssertionError(f"none of {kinds} in {limit} events")

    async def say(self, text: str) -> None:
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
        await self.until("conversation.item.done")

    async def text_turn(self, text: str, max_tokens: int = 16) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A user message and a response; returns ``response.done`` and everything up to
        the ``rate_limits.updated`` that follows it."""
        await self.say(text)
        await self.send({"type": "response.create", "response": {"max_output_tokens": max_tokens}})
        events = await self.until("rate_limits.updated")
        done = next(e for e in events if e["type"] == "response.done")
        return done, events


@contextlib.asynccontextmanager
async def connect(
    server: ServerProcess, key: str, session: dict[str, Any] | None = None
) -> AsyncIterator[Caller]:
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        caller = Caller(ws)
        created = (await caller.until("session.created", "error"))[-1]
        assert created["type"] == "session.created", created
        if session is not None:
            await caller.send({"type": "session.update", "session": session})
            await caller.until("session.updated")
        yield caller


def usage(server: ServerProcess, key: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(server.base_url + "/usage", params=params, headers=headers, timeout=30)


def mint(server: ServerProcess, key: str, seconds: int = 600) -> str:
    reply = httpx.post(
        server.base_url + "/realtime/client_secrets",
        headers={"Authorization": f"Bearer {key}"},
        json={"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": TEXT_SESSION},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    value: str = reply.json()["value"]
    return value


def assert_row_matches(row: UsageRecord, wire: dict[str, Any]) -> None:
    """A ledger row holds exactly the ``response.done`` usage, priced at the list prices."""
    details, out = wire["input_token_details"], wire["output_token_details"]
    assert (row.input_text_tokens, row.input_audio_tokens, row.input_image_tokens) == (
        details["text_tokens"],
        details["audio_tokens"],
        details["image_tokens"],
    )
    assert (row.cached_text_tokens, row.cached_audio_tokens) == (
        details["cached_tokens_details"]["text_tokens"],
        details["cached_tokens_details"]["audio_tokens"],
    )
    assert (row.output_text_tokens, row.output_audio_tokens) == (out["text_tokens"], out["audio_tokens"])
    assert row.total_tokens == wire["total_tokens"]
    assert row.cost_usd == pytest.approx(PriceTable().cost(row)) and row.cost_usd > 0
