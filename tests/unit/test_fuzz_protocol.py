"""Fuzzing the parser and the core with arbitrary and mutated client frames.

Whatever a client sends, the core answers with events that serialise and match the openai
SDK's server-event union; an ``error`` names the client's ``event_id`` when it sent a usable
one; no exception escapes. Run longer with ``OPENREALTIME_FUZZ_EXAMPLES=20000``
(``python -m pytest tests/unit/test_fuzz_protocol.py -q``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from openrealtime.core.session import SessionCore
from openrealtime.protocol.session import RealtimeSession
from tests.json_edge import JsonCore

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
EXAMPLES = int(os.environ.get("OPENREALTIME_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)

VALID_EVENTS: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}},
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
        },
    },
    {"type": "input_audio_buffer.append", "audio": "AAAAAAAAAAAAAAAA"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c", "output": "1"},
    },
    {"type": "conversation.item.retrieve", "item_id": "item_x"},
    {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 100},
    {"type": "conversation.item.delete", "item_id": "item_x"},
    {"type": "response.create", "response": {"output_modalities": ["text"], "instructions": "x"}},
    {"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "v"}}},
    {"type": "response.cancel"},
    {"type": "output_audio_buffer.clear"},
]


def new_core() -> JsonCore:
    core = JsonCore(
        SessionCore(RealtimeSession(), count_tokens=lambda text: len(text.split()), created_at=1_700_000_000)
    )
    core.start()
    core.take_events()
    return core


def check_answer(core: JsonCore, sent_event_id: Any) -> None:
    core.take_commands()  # engines are not part of this test
    for event in core.take_events():
        wire = json.loads(event.to_json())
        SERVER_EVENT.validate_python(wire)
        if wire["type"] == "error" and isinstance(sent_event_id, str):
            assert wire["error"]["event_id"] in (sent_event_id, None), wire


def mutate(event: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    """Delete, replace or add a field somewhere in the event."""
    mutated: dict[str, Any] = json.loads(json.dumps(event))
    target = mutated
    while True:
        nested = [k for k, v in target.items() if isinstance(v, dict)]
        if not nested or draw(st.booleans()):
            break
        target = target[draw(st.sampled_from(nested))]
    action = draw(st.sampled_from(["delete", "replace", "add"]))
    keys = list(target)
    if action == "delete" and keys:
        del target[draw(st.sampled_from(keys))]
    elif action == "replace" and keys:
        target[draw(st.sampled_from(keys))] = draw(JSON)
    else:
        target[draw(st.text(max_size=10))] = draw(JSON)
    return mutated


@FUZZ
@given(st.data())
def test_mutated_events_never_break_the_session(data: st.DataObject) -> None:
    core = new_core()
    for _ in range(data.draw(st.integers(1, 6))):
        event = data.draw(st.sampled_from(VALID_EVENTS))
        if data.draw(st.booleans()):
            event = mutate(event, data.draw)
        event = {**event, "event_id": data.draw(st.sampled_from(["evt_1", "", None, 7]))}
        core.handle(json.dumps(event))
        check_answer(core, event["event_id"])


@FUZZ
@given(JSON)
def test_arbitrary_json_is_answered_with_an_error_or_handled(value: Any) -> None:
    core = new_core()
    core.handle(json.dumps(value))
    check_answer(core, value.get("event_id") if isinstance(value, dict) else None)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_raw_frames_of_any_bytes_or_text(frame: bytes | str) -> None:
    core = new_core()
    core.handle(frame)
    check_answer(core, None)


def test_unpaired_surrogate_escapes_are_refused() -> None:
    core = new_core()
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a\ud800b"}]}
    frame = json.dumps({"type": "conversation.item.create", "item": item, "event_id": "evt_s"})
    assert "\\ud800" in frame
    core.handle(frame)
    events = core.take_events()
    assert [e.type for e in events] == ["error"]
    assert events[0].error["code"] == "invalid_json" and events[0].error["event_id"] == "evt_s"  # type: ignore[attr-defined]
    paired = json.dumps(
        {
            "type": "conversation.item.create",
            "item": {**item, "content": [{"type": "input_text", "text": "\U0001f600"}]},
        }
    )
    core.handle(paired)
    assert [e.type for e in core.take_events()] == ["conversation.item.added", "conversation.item.done"]
