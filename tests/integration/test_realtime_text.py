"""The text half of a Realtime session, end to end: the official openai SDK against the real
server on the real default LLM, every received event validated against the SDK's union."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from tests.integration.conftest import Client
from tests.support import ServerProcess, validate_beta_server_event, validate_server_event

pytestmark = pytest.mark.slow

TEXT_SESSION = {
    "type": "realtime",
    "output_modalities": ["text"],
    "instructions": "You are terse. Answer in one short sentence.",
}

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}


def user_text(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}], **extra}


async def configure(client: Client, **session: Any) -> dict[str, Any]:
    await client.send({"type": "session.update", "session": {**TEXT_SESSION, **session}})
    events = await client.until("session.updated")
    return events[-1]["session"]


async def say(client: Client, text: str) -> str:
    await client.send({"type": "conversation.item.create", "item": user_text(text)})
    added = await client.until("conversation.item.done")
    return str(added[-1]["item"]["id"])


def check_response_order(events: list[dict[str, Any]]) -> None:
    """Spec §10b: created first, done last; per item added → parts → done, no interleaving."""
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.done"
    rid = events[0]["response"]["id"]
    open_items: list[str] = []
    for event in events[1:-1]:
        if "response_id" in event:
            assert event["response_id"] == rid
        if event["type"] == "response.output_item.added":
            assert not open_items, "items must not interleave"
            open_items.append(event["item"]["id"])
        elif event["type"] == "response.output_item.done":
            assert open_items == [event["item"]["id"]]
            open_items.clear()
        elif event["type"].startswith("response.") and "item_id" in event:
            assert open_items == [event["item_id"]]
    assert not open_items


async def test_text_turn(client: Client) -> None:
    session = await configure(client)
    assert session["output_modalities"] == ["text"]
    await say(client, "Say hello.")
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    check_response_order(events)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert kinds[-6:] == [
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ][-6:] or kinds[-5:] == [
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done_text = next(e["text"] for e in events if e["type"] == "response.output_text.done")
    assert deltas == done_text and done_text.strip()
    final = events[-1]["response"]
    assert final["status"] == "completed"
    usage = final["usage"]
    assert usage["input_tokens"] > 10 and usage["output_tokens"] > 0
    assert usage["input_token_details"]["text_tokens"] == usage["input_tokens"]
    assert usage["input_token_details"]["audio_tokens"] == 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert (await client.recv())["type"] == "rate_limits.updated"

    # the second turn reuses the prompt prefix: cached tokens are reported
    await say(client, "And now say goodbye.")
    await client.send({"type": "response.create"})
    second = (await client.until("response.done"))[-1]["response"]
    assert second["usage"]["input_token_details"]["cached_tokens"] > 0


async def test_function_call_round_trip(client: Client) -> None:
    await configure(client, tools=[WEATHER_TOOL], tool_choice="auto")
    await say(client, "What's the weather like in Paris right now?")
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    check_response_order(events)
    done_items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    calls = [item for item in done_items if item["type"] == "function_call"]
    assert len(calls) == 1, done_items
    call = calls[0]
    assert call["name"] == "get_weather" and call["status"] == "completed"
    assert "paris" in json.loads(call["arguments"])["city"].lower()
    arg_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(arg_done) == 1 and arg_done[0]["call_id"] == call["call_id"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == call["arguments"]
    assert events[-1]["response"]["output"][-1]["call_id"] == call["call_id"]

    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": json.dumps({"city": "Paris", "temperature_c": 21, "sky": "sunny"}),
            },
        }
    )
    await client.until("conversation.item.done")
    await client.send({"type": "response.create", "response": {"max_output_tokens": 80}})
    answer = await client.until("response.done")
    text = next(e["text"] for e in answer if e["type"] == "response.output_text.done")
    assert "21" in text or "sunny" in text.lower(), text


async def test_item_create_retrieve_delete(client: Client) -> None:
    await configure(client)
    first = await say(client, "first")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": user_text("zero", id="item_zero"),
            "previous_item_id": "root",
        }
    )
    added = await client.until("conversation.item.added")
    assert added[-1]["item"]["id"] == "item_zero" and added[-1]["previous_item_id"] is None
    await client.until("conversation.item.done")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": user_text("after first", id="item_mid"),
            "previous_item_id": first,
        }
    )
    added = await client.until("conversation.item.added")
    assert added[-1]["previous_item_id"] == first
    await client.until("conversation.item.done")

    await client.send(
        {"type": "conversation.item.create", "item": user_text("dup", id="item_zero"), "event_id": "evt_dup"}
    )
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "item_create_duplicate_item_id" and error["event_id"] == "evt_dup"

    await client.send(
        {
            "type": "conversation.item.create",
            "item": user_text("x"),
            "previous_item_id": "item_nope",
            "event_id": "evt_prev",
        }
    )
    error = (await client.until("error"))[-1]["error"]
    assert error["param"] == "previous_item_id" and error["event_id"] == "evt_prev"

    await client.send({"type": "conversation.item.retrieve", "item_id": "item_mid"})
    retrieved = (await client.until("conversation.item.retrieved"))[-1]
    assert retrieved["item"]["content"][0]["text"] == "after first"

    await client.send({"type": "conversation.item.delete", "item_id": "item_mid"})
    assert (await client.until("conversation.item.deleted"))[-1]["item_id"] == "item_mid"
    await client.send(
        {"type": "conversation.item.retrieve", "item_id": "item_mid", "event_id": "rci_item_mid"}
    )
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "item_retrieve_invalid_item_id" and error["event_id"] == "rci_item_mid"


async def test_out_of_band_response_with_metadata(client: Client) -> None:
    await configure(client)
    item_id = await say(client, "My favourite colour is green.")
    await client.send(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "metadata": {"purpose": "summary", "client_event_id": "abc"},
                "input": [
                    {"type": "item_reference", "id": item_id},
                    user_text("Summarize the user's message in three words."),
                ],
            },
        }
    )
    events = await client.until("response.done")
    check_response_order(events)
    assert events[0]["response"]["metadata"] == {"purpose": "summary", "client_event_id": "abc"}
    assert events[-1]["response"]["metadata"] == {"purpose": "summary", "client_event_id": "abc"}
    assert events[-1]["response"]["conversation_id"] is None
    assert not [e for e in events if e["type"].startswith("conversation.item.")]
    # the out-of-band answer did not enter the conversation
    out_item = events[-1]["response"]["output"][0]["id"]
    await client.send({"type": "conversation.item.retrieve", "item_id": out_item})
    assert (await client.until("error"))[-1]["error"]["code"] == "item_retrieve_invalid_item_id"


async def test_cancel_mid_stream_then_next_turn(client: Client) -> None:
    await configure(client, instructions="You are a storyteller. Tell long, detailed stories.")
    await say(client, "Tell me a long story about a dragon and a knight.")
    await client.send({"type": "response.create"})
    while (await client.recv())["type"] != "response.output_text.delta":
        pass
    await client.send({"type": "response.cancel", "event_id": "evt_cancel"})
    events = await client.until("response.done")
    final = events[-1]["response"]
    assert final["status"] == "cancelled"
    assert final["status_details"] == {
        "type": "cancelled",
        "reason": "client_cancelled",
        "error": None,
    } or final["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert final["output"][0]["status"] == "incomplete"
    assert final["usage"]["output_tokens"] > 0
    kinds = [e["type"] for e in events]
    assert "response.output_text.done" in kinds and "response.content_part.done" in kinds
    # nothing of the cancelled response arrives afterwards; the next turn works
    await client.send({"type": "response.cancel", "event_id": "evt_again"})
    nothing = await client.until("error")
    assert nothing[-1]["error"]["code"] == "response_cancel_not_active"
    assert all(e.get("response_id") != final["id"] for e in nothing)
    await say(client, "Say yes.")
    await client.send(
        {
            "type": "response.create",
            "response": {"instructions": "Answer with one word.", "max_output_tokens": 20},
        }
    )
    assert (await client.until("response.done"))[-1]["response"]["status"] in ("completed", "incomplete")


async def test_second_response_refused_while_active_and_max_tokens(client: Client) -> None:
    await configure(client)
    await say(client, "Count from one to fifty in words.")
    await client.send({"type": "response.create", "response": {"max_output_tokens": 5}})
    await client.send({"type": "response.create", "event_id": "evt_second"})
    events = await client.until("response.done")
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["conversation_already_has_active_response"]
    assert errors[0]["event_id"] == "evt_second"
    assert sum(1 for e in events if e["type"] == "response.created") == 1
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["status_details"]["reason"] == "max_output_tokens"
    assert final["usage"]["output_tokens"] <= 5


BAD_INPUTS: list[tuple[Any, str, str | None]] = [
    ("not json at all", "invalid_json", None),
    ({"event_id": "e1"}, "invalid_event", "type"),
    ({"type": "session.dance", "event_id": "e2"}, "invalid_value", "type"),
    (
        {"type": "session.update", "event_id": "e3", "session": {"output_modalities": ["text"]}},
        "missing_required_parameter",
        "session.type",
    ),
    (
        {"type": "session.update", "event_id": "e4", "session": {"type": "realtime", "temperature": 0.7}},
        "unknown_parameter",
        "session.temperature",
    ),
    (
        {
            "type": "session.update",
            "event_id": "e5",
            "session": {"type": "realtime", "output_modalities": ["video"]},
        },
        "invalid_value",
        "session.output_modalities[0]",
    ),
    (
        {
            "type": "session.update",
            "event_id": "e6",
            "session": {"type": "realtime", "max_output_tokens": "lots"},
        },
        "invalid_value",
        "session.max_output_tokens",
    ),
    (
        {
            "type": "session.update",
            "event_id": "e7",
            "session": {"type": "realtime", "audio": {"output": {"speed": 3}}},
        },
        "decimal_above_max_value",
        "session.audio.output.speed",
    ),
    ({"type": "conversation.item.create", "event_id": "e8"}, "missing_required_parameter", "item"),
    (
        {
            "type": "conversation.item.create",
            "event_id": "e9",
            "item": {"type": "message", "role": "user", "content": "hi"},
        },
        "invalid_type",
        "item.content",
    ),
    (
        {
            "type": "conversation.item.create",
            "event_id": "e10",
            "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"},
        },
        "item_create_invalid_call_id",
        "item.call_id",
    ),
    (
        {
            "type": "conversation.item.truncate",
            "event_id": "e11",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        "item_truncate_invalid_item_id",
        "item_id",
    ),
    (
        {"type": "conversation.item.delete", "event_id": "e12", "item_id": "item_nope"},
        "item_delete_invalid_item_id",
        "item_id",
    ),
    ({"type": "response.cancel", "event_id": "e13"}, "response_cancel_not_active", None),
    ({"type": "input_audio_buffer.commit", "event_id": "e14"}, "input_audio_buffer_commit_empty", None),
    (
        {"type": "input_audio_buffer.append", "event_id": "e15", "audio": "!!notbase64!!"},
        "invalid_value",
        "audio",
    ),
    ({"type": "input_audio_buffer.append", "event_id": "e16", "audio": "AAAA"}, "invalid_value", "audio"),
    (
        {"type": "response.create", "event_id": "e17", "response": {"modalities": ["text"]}},
        "unknown_parameter",
        "response.modalities",
    ),
    (
        {
            "type": "response.create",
            "event_id": "e18",
            "response": {"metadata": {str(i): "v" for i in range(17)}},
        },
        "array_above_max_length",
        "response.metadata",
    ),
    (
        {
            "type": "response.create",
            "event_id": "e19",
            "response": {"input": [{"type": "item_reference", "id": "item_nope"}]},
        },
        "invalid_value",
        "response.input[0].id",
    ),
]


async def test_bad_inputs_get_errors_and_session_continues(text_server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {text_server.api_key}"}
    async with websockets.connect(
        text_server.ws_url + "/v1/realtime?model=gpt-realtime", additional_headers=headers
    ) as ws:
        assert validate_server_event(await ws.recv())["type"] == "session.created"
        await ws.send(b"\x00binary")
        error = validate_server_event(await ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "invalid_event"
        for payload, code, param in BAD_INPUTS:
            await ws.send(payload if isinstance(payload, str) else json.dumps(payload))
            event = validate_server_event(await ws.recv())
            assert event["type"] == "error", (payload, event)
            err = event["error"]
            assert (err["code"], err["param"]) == (code, param), (payload, err)
            expected_id = payload.get("event_id") if isinstance(payload, dict) else None
            assert err["event_id"] == expected_id
            assert err["type"] == "invalid_request_error" and err["message"]
        # ... and the session still answers a normal turn
        await ws.send(json.dumps({"type": "session.update", "session": TEXT_SESSION}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": user_text("Say OK.")}))
        await ws.send(json.dumps({"type": "response.create"}))
        while True:
            event = validate_server_event(await ws.recv())
            assert event["type"] != "error", event
            if event["type"] == "response.done":
                assert event["response"]["status"] == "completed"
                break


async def test_auth_variants_and_routes(text_server: ServerProcess) -> None:
    url = text_server.ws_url + "/v1/realtime?model=gpt-realtime-2.1"
    # no key: error event then close
    async with websockets.connect(url) as ws:
        event = validate_server_event(await ws.recv())
        assert event["error"]["code"] == "invalid_api_key"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008
    # wrong key
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-wrong"}) as ws:
        assert validate_server_event(await ws.recv())["error"]["code"] == "invalid_api_key"
    # browser subprotocols: key in openai-insecure-api-key.<key>, server answers 'realtime'
    protocols = ["realtime", f"openai-insecure-api-key.{text_server.api_key}"]
    async with websockets.connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        created = validate_server_event(await ws.recv())
        assert created["type"] == "session.created" and created["session"]["model"] == "gpt-realtime-2.1"
    # Azure-style api-key header
    async with websockets.connect(url, additional_headers={"api-key": text_server.api_key}) as ws:
        assert validate_server_event(await ws.recv())["type"] == "session.created"
    # missing model
    async with websockets.connect(
        text_server.ws_url + "/v1/realtime",
        additional_headers={"Authorization": f"Bearer {text_server.api_key}"},
    ) as ws:
        assert validate_server_event(await ws.recv())["error"]["code"] == "missing_model"
    # the beta header selects the beta shape (tests/integration/test_beta_shape.py; refused
    # with close code 4000 when OPENREALTIME_BETA_SHAPE=false)
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {text_server.api_key}", "OpenAI-Beta": "realtime=v1"},
    ) as ws:
        created = validate_beta_server_event(await ws.recv())
        assert created["type"] == "session.created" and created["session"]["modalities"] == ["audio", "text"]

    async with httpx.AsyncClient(base_url=text_server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        refused = await http.get("/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        models = await http.get("/v1/models", headers={"Authorization": f"Bearer {text_server.api_key}"})
        assert "gpt-realtime" in [m["id"] for m in models.json()["data"]]


async def test_session_update_merges_and_echoes(client: Client) -> None:
    session = await configure(
        client, audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}
    )
    vad = session["audio"]["input"]["turn_detection"]
    assert vad["silence_duration_ms"] == 500 and vad["threshold"] == 0.5
    await client.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"speed": 1.2}}}}
    )
    updated = (await client.until("session.updated"))[-1]["session"]
    assert updated["audio"]["output"]["speed"] == 1.2
    assert updated["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert updated["output_modalities"] == ["text"]
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": None}},
                "model": "gpt-realtime-2.1",
            },
        }
    )
    updated = (await client.until("session.updated"))[-1]["session"]
    assert updated["audio"]["input"]["turn_detection"] is None


async def test_sdk_connects_with_model_echo(text_server: ServerProcess) -> None:
    openai = AsyncOpenAI(base_url=text_server.base_url, api_key=text_server.api_key)
    async with openai.realtime.connect(model="gpt-realtime-2025-08-28") as connection:
        event = await connection.recv()
        assert event.type == "session.created"
        assert event.session.model == "gpt-realtime-2025-08-28"  # type: ignore[union-attr]
