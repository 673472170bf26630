"""The bad-input battery over a real socket: every kind of malformed client event gets the
right ``error`` (type, code, param, event_id) and the same session then holds a normal turn."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import websockets

from tests.support import ServerProcess, validate_server_event

pytestmark = pytest.mark.slow

USER_HI = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}

# (frame, error code, error param) — the frame is sent as is when it is a str
CASES: list[tuple[Any, str, str | None]] = [
    ("{not json", "invalid_json", None),
    ("[" * 100_000 + "]" * 100_000, "invalid_json", None),
    ("[1, 2]", "invalid_event", None),
    ('"text"', "invalid_event", None),
    ({"event_id": "evt_x"}, "invalid_event", "type"),
    ({"type": "no.such.event"}, "invalid_value", "type"),
    ({"type": 7}, "invalid_value", "type"),
    ({"type": "response.create", "surprise": 1}, "unknown_parameter", "surprise"),
    ({"type": "session.update"}, "missing_required_parameter", "session"),
    (
        {"type": "session.update", "session": {"instructions": "x"}},
        "missing_required_parameter",
        "session.type",
    ),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value", "session.type"),
    (
        {"type": "session.update", "session": {"type": "realtime", "voice": "marin"}},
        "unknown_parameter",
        "session.voice",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "instructions": 5}},
        "invalid_type",
        "session.instructions",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"speed": 9}}}},
        "decimal_above_max_value",
        "session.audio.output.speed",
    ),
    (
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
            },
        },
        "decimal_above_max_value",
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "tool_choice": "sometimes"}},
        "invalid_value",
        "session.tool_choice",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 0}},
        "integer_below_min_value",
        "session.max_output_tokens",
    ),
    (
        {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 4097}},
        "integer_above_max_value",
        "session.max_output_tokens",
    ),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "input_audio_buffer.append", "audio": 123}, "invalid_type", "audio"),
    ({"type": "input_audio_buffer.append", "audio": "!!!not base64"}, "invalid_value", "audio"),
    (
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00").decode()},
        "invalid_value",
        "audio",
    ),
    ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
    ({"type": "input_audio_buffer.clear", "extra": True}, "unknown_parameter", "extra"),
    ({"type": "conversation.item.create"}, "missing_required_parameter", "item"),
    (
        {"type": "conversation.item.create", "item": {**USER_HI, "role": "wizard"}},
        "invalid_value",
        "item.role",
    ),
    (
        {"type": "conversation.item.create", "item": {**USER_HI, "content": [{"type": "input_text"}]}},
        "missing_required_parameter",
        "item.content[0].text",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {**USER_HI, "content": [{"type": "input_text", "text": "a\ud800"}]},
        },
        "invalid_json",
        None,
    ),
    (
        {"type": "conversation.item.create", "previous_item_id": "item_nope", "item": USER_HI},
        "item_create_invalid_previous_item_id",
        "previous_item_id",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_nope", "output": "1"},
        },
        "item_create_invalid_call_id",
        "item.call_id",
    ),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        "item_truncate_invalid_item_id",
        "item_id",
    ),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": -1,
        },
        "integer_below_min_value",
        "audio_end_ms",
    ),
    ({"type": "conversation.item.delete", "item_id": "item_nope"}, "item_delete_invalid_item_id", "item_id"),
    (
        {"type": "conversation.item.retrieve", "item_id": "item_nope"},
        "item_retrieve_invalid_item_id",
        "item_id",
    ),
    (
        {"type": "response.create", "response": {"output_modalities": ["video"]}},
        "invalid_value",
        "response.output_modalities[0]",
    ),
    ({"type": "response.cancel", "response_id": "resp_nope"}, "response_cancel_not_active", None),
    ({"type": "response.create", "event_id": 5}, "invalid_type", "event_id"),
]


def frame_of(case: Any) -> str:
    return case if isinstance(case, str) else json.dumps(case)


async def test_every_bad_event_gets_its_error_and_the_session_goes_on(text_server: ServerProcess) -> None:
    async with websockets.connect(
        f"{text_server.ws_url}/v1/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {text_server.api_key}"},
        max_size=None,
    ) as ws:
        assert validate_server_event(await ws.recv())["type"] == "session.created"
        for index, (case, code, param) in enumerate(CASES):
            event_id = f"evt_bad_{index}"
            if isinstance(case, dict) and "event_id" not in case:
                case = {**case, "event_id": event_id}
            await ws.send(frame_of(case))
            answer = validate_server_event(await ws.recv())
            assert answer["type"] == "error", (case, answer)
            error = answer["error"]
            assert (error["code"], error["param"]) == (code, param), (str(case)[:200], error)
            assert error["type"] == "invalid_request_error"
            expected_id = case.get("event_id") if isinstance(case, dict) else None
            assert error["event_id"] == (expected_id if isinstance(expected_id, str) else None), error
        # then a normal text turn works in the same session
        await ws.send(
            json.dumps(
                {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
            )
        )
        assert validate_server_event(await ws.recv())["type"] == "session.updated"
        await ws.send(json.dumps({"type": "conversation.item.create", "item": USER_HI}))
        await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 20}}))
        while True:
            event = validate_server_event(await ws.recv())
            assert event["type"] != "error", event
            if event["type"] == "response.done":
                assert event["response"]["status"] in ("completed", "incomplete")
                break


async def test_an_overlong_text_is_refused_and_the_session_goes_on(text_server: ServerProcess) -> None:
    async with websockets.connect(
        f"{text_server.ws_url}/v1/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {text_server.api_key}"},
        max_size=None,
    ) as ws:
        assert validate_server_event(await ws.recv())["type"] == "session.created"
        huge = {**USER_HI, "content": [{"type": "input_text", "text": "word " * 2_000_000}]}  # 10 MB
        await ws.send(json.dumps({"type": "conversation.item.create", "item": huge, "event_id": "evt_huge"}))
        error = validate_server_event(await ws.recv())
        assert error["type"] == "error", error
        assert error["error"]["code"] == "string_above_max_length"
        assert error["error"]["param"] == "item.content[0].text" and error["error"]["event_id"] == "evt_huge"
        # a long but acceptable text still works
        long_ok = {**USER_HI, "content": [{"type": "input_text", "text": "word " * 50_000}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": long_ok}))
        assert validate_server_event(await ws.recv())["type"] == "conversation.item.added"
        assert validate_server_event(await ws.recv())["type"] == "conversation.item.done"
