"""Asynchronous function calls end to end: the client withholds a ``function_call_output``
while the conversation goes on, then sends it late; interruptions while the call is pending.
The real server, the real 0.5B model, every received event validated against the openai SDK
union (the ``client`` fixture)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import Client

pytestmark = pytest.mark.slow

SESSION = {
    "type": "realtime",
    "output_modalities": ["text"],
    "instructions": "You are terse. Answer in one short sentence.",
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        }
    ],
    "tool_choice": "auto",
}
FORCE_WEATHER = {"type": "function", "name": "get_weather"}
RESULT = json.dumps({"city": "Paris", "temperature_c": 21, "sky": "sunny"})


async def say(client: Client, text: str) -> str:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await client.send({"type": "conversation.item.create", "item": item})
    return str((await client.until("conversation.item.done"))[-1]["item"]["id"])


async def respond(client: Client, **params: Any) -> list[dict[str, Any]]:
    await client.send({"type": "response.create", "response": {"max_output_tokens": 80, **params}})
    return await client.until("response.done")


def text_of(events: list[dict[str, Any]]) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "response.output_text.done")


async def start_pending_call(client: Client) -> dict[str, Any]:
    await client.send({"type": "session.update", "session": SESSION})
    await client.until("session.updated")
    await say(client, "What's the weather like in Paris right now?")
    events = await respond(client, tool_choice=FORCE_WEATHER)
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    call: dict[str, Any] = next(item for item in calls if item["type"] == "function_call")
    assert call["name"] == "get_weather" and events[-1]["response"]["status"] == "completed"
    return call


async def send_output(client: Client, call_id: str, output: str) -> None:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    await client.send({"type": "conversation.item.create", "item": item})
    await client.until("conversation.item.done")


async def conversation_items(client: Client, ids: list[str]) -> list[dict[str, Any]]:
    items = []
    for item_id in ids:
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        items.append((await client.until("conversation.item.retrieved"))[-1]["item"])
    return items


async def test_caller_keeps_talking_while_a_call_is_pending(client: Client) -> None:
    call = await start_pending_call(client)

    # the function is slow: the client withholds its output; the caller asks something else
    await say(client, "While we wait: what is the capital of Italy?")
    meanwhile = await respond(client, tool_choice="none")
    assert meanwhile[-1]["response"]["status"] == "completed"
    answer = text_of(meanwhile)
    assert "rome" in answer.lower(), answer

    # the late output arrives; the next response uses it
    await send_output(client, call["call_id"], RESULT)
    late = await respond(client)
    assert late[-1]["response"]["status"] == "completed"
    text = text_of(late).lower()
    assert "21" in text or "sunny" in text, text

    # an output for a call that does not exist is refused clearly; the session goes on
    await client.send(
        {
            "type": "conversation.item.create",
            "event_id": "evt_orphan",
            "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"},
        }
    )
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "item_create_invalid_call_id" and error["event_id"] == "evt_orphan"
    assert "call_nope" in error["message"]


async def test_interruption_during_a_pending_call_keeps_the_conversation_consistent(client: Client) -> None:
    call = await start_pending_call(client)

    # the caller talks over the next answer, which the client cancels
    user_id = await say(client, "Tell me a long story about a dragon.")
    await client.send({"type": "response.create"})
    await client.send({"type": "response.cancel"})
    events = await client.until("response.done")
    status = events[-1]["response"]["status"]
    assert status in ("cancelled", "completed")  # the model may have finished first
    if status == "cancelled":
        assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"

    # the result arrives after the interruption; the next turn works and uses it
    await send_output(client, call["call_id"], RESULT)
    late = await respond(client)
    assert late[-1]["response"]["status"] == "completed"
    text = text_of(late).lower()
    assert "21" in text or "sunny" in text, text

    # the conversation holds every item in order, each retrievable
    added = [e for e in client.seen if e["type"] == "conversation.item.added"]
    ids = [e["item"]["id"] for e in added]
    assert ids.index(call["id"]) < ids.index(user_id)
    items = await conversation_items(client, ids[-6:])
    kinds = [item["type"] for item in items]
    assert "function_call_output" in kinds
    output_item = next(item for item in items if item["type"] == "function_call_output")
    assert output_item["call_id"] == call["call_id"] and output_item["output"] == RESULT

    # and an ordinary turn still works afterwards
    await say(client, "Thanks. Say goodbye.")
    final = await respond(client, tool_choice="none")
    assert final[-1]["response"]["status"] == "completed" and text_of(final).strip()
