"""The wire form of the session and of transcription events (spec §5, §8.3, §15): every field
of the GA launch shape present (``null`` where unset), every later addition left out until a
client sets it, and a set later addition echoed back. Clients built against the launch shape
(pipecat 1.14 takes exactly ``model``, ``language`` and ``prompt`` in a transcription config)
break on a later field even when it is ``null``."""

from __future__ import annotations

import json
from typing import Any

from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from openrealtime.core.session import SessionCore
from openrealtime.protocol import server_events as se
from openrealtime.protocol.session import RealtimeSession, TranscriptionSession, merge_session_update
from tests.json_edge import JsonCore

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
LATER_ADDITIONS = {
    "delay",
    "keywords",
    "languages",
    "strength",
    "tunnel_id",
    "defer_loading",
    "allowed_callers",
    "token_limits",
    "post_instructions",
    "parallel_tool_calls",
    "reasoning",
    "effort",
}
"""Fields the openai SDK gained after the GA launch (3.57.0 against 1.103.0) that a session can carry."""


def null_later_additions(value: Any, path: str = "") -> list[str]:
    """Paths of later-addition keys that are present with ``null``."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}" if path else key
            if key in LATER_ADDITIONS and inner is None:
                found.append(here)
            found += null_later_additions(inner, here)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += null_later_additions(inner, f"{path}[{index}]")
    return found


def events(core: JsonCore) -> list[dict[str, Any]]:
    out = []
    for event in core.take_events():
        raw = event.to_json()
        SERVER_EVENT.validate_json(raw)
        out.append(json.loads(raw))
    return out


def update(core: JsonCore, session: dict[str, Any]) -> dict[str, Any]:
    core.handle(json.dumps({"type": "session.update", "session": session}))
    emitted = events(core)
    assert emitted[0]["type"] == "session.updated", emitted  # (MCP tools also start a listing)
    wire: dict[str, Any] = emitted[0]["session"]
    return wire


def test_the_default_session_has_the_launch_shape_and_no_later_fields() -> None:
    core = JsonCore(SessionCore(RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0))
    core.start()
    session = events(core)[0]["session"]
    assert set(session) == {
        "type", "object", "id", "model", "output_modalities", "instructions", "tools", "tool_choice",
        "max_output_tokens", "tracing", "truncation", "prompt", "expires_at", "audio", "include",
    }  # fmt: skip
    assert session["tracing"] is None and session["prompt"] is None and session["include"] is None
    assert session["audio"]["input"]["transcription"] is None
    assert session["audio"]["input"]["noise_reduction"] is None
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] is None  # GA launch field


def test_a_transcription_config_echoes_only_what_the_client_could_send() -> None:
    core = JsonCore(SessionCore(RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0))
    core.start()
    events(core)
    wire = update(
        core,
        {
            "type": "realtime",
            "audio": {
                "input": {"transcription": {"model": "whisper-1"}, "noise_reduction": {"type": "near_field"}}
            },
            "truncation": {"type": "retention_ratio", "retention_ratio": 0.5},
            "tools": [{"type": "mcp", "server_label": "docs", "server_url": "http://127.0.0.1:9/mcp"}],
        },
    )
    assert wire["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": None, "prompt": None}
    assert wire["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert wire["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.5}
    assert not {"tunnel_id", "defer_loading", "allowed_callers"} & set(wire["tools"][0])
    assert "server_description" in wire["tools"][0]  # a GA launch field stays, as null
    assert null_later_additions(wire) == []
    # a later update that does not mention them keeps them out
    assert null_later_additions(update(core, {"type": "realtime", "instructions": "Be brief."})) == []


def test_later_fields_a_client_sets_are_echoed() -> None:
    core = JsonCore(SessionCore(RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0))
    core.start()
    events(core)
    wire = update(
        core,
        {
            "type": "realtime",
            "audio": {
                "input": {
                    "transcription": {"model": "gpt-realtime-whisper", "delay": "low"},
                    "noise_reduction": {"type": "far_field", "strength": 0.4},
                }
            },
            "truncation": {
                "type": "retention_ratio",
                "retention_ratio": 0.8,
                "token_limits": {"post_instructions": 1000},
            },
            "parallel_tool_calls": True,
            "reasoning": {"effort": "low"},
        },
    )
    assert wire["audio"]["input"]["transcription"]["delay"] == "low"
    assert "keywords" not in wire["audio"]["input"]["transcription"]
    assert wire["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.4}
    assert wire["truncation"]["token_limits"] == {"post_instructions": 1000}
    assert wire["parallel_tool_calls"] is True and wire["reasoning"] == {"effort": "low"}
    # and survive an unrelated update (the wire form is what updates merge into)
    again = update(core, {"type": "realtime", "instructions": "Be brief."})
    assert again["audio"]["input"]["transcription"]["delay"] == "low"
    assert again["reasoning"] == {"effort": "low"}


def test_the_wire_form_round_trips() -> None:
    session = RealtimeSession.model_validate(
        {"audio": {"input": {"transcription": {"model": "whisper-1", "keywords": ["openrealtime"]}}}}
    )
    wire = session.model_dump(mode="json")
    assert RealtimeSession.model_validate(merge_session_update(wire, {})) == session
    transcription = TranscriptionSession().model_dump(mode="json")
    assert null_later_additions(transcription) == []


def test_transcription_events_leave_out_logprobs_unless_there_are_some() -> None:
    delta = json.loads(se.TranscriptionDelta(item_id="item_1", delta="Hel").to_json())
    assert set(delta) == {"event_id", "type", "item_id", "content_index", "delta"}
    usage = {"type": "duration", "seconds": 1.5}
    completed = json.loads(
        se.TranscriptionCompleted(item_id="item_1", transcript="Hello", usage=usage).to_json()
    )
    assert set(completed) == {"event_id", "type", "item_id", "content_index", "transcript", "usage"}
    with_logprobs = se.TranscriptionDelta(
        item_id="item_1", delta="Hel", logprobs=[{"token": "Hel", "logprob": -0.1, "bytes": [72, 101, 108]}]
    )
    assert json.loads(with_logprobs.to_json())["logprobs"][0]["token"] == "Hel"
    for event in (delta, completed, json.loads(with_logprobs.to_json())):
        SERVER_EVENT.validate_python(event)
