"""The sans-I/O session core (``SessionCore``) driven without sockets or engines.

Client events go in as JSON text, engine results through the ``response_*`` / ``vad_frames`` /
``transcription_*`` methods; every event the core emits is validated against the openai SDK's
``RealtimeServerEvent`` union by the harness.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from openrealtime.core.commands import (
    CancelResponse,
    HeldSpeechDropped,
    PredictEndOfTurn,
    ResponseFinished,
    StartResponse,
    TranscribeHeld,
    TranscribeItem,
)
from openrealtime.core.commands import SpeechStarted as SpeechStartedCommand
from openrealtime.core.events import (
    CancelRequested,
    EndOfTurnPredicted,
    GenerationFailed,
    GenerationFinished,
    HeldSpeechHeard,
    IdleTimeout,
    PromptRead,
    SpeechGenerated,
    SpeechProbabilities,
    TextGenerated,
    ToolCalled,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    VadFrame,
)
from openrealtime.core.session import SessionCore
from openrealtime.protocol.session import RealtimeSession, TranscriptionSession
from tests.json_edge import JsonCore, pcm_of

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
FRAME_MS = 32
PCM_BYTES_PER_MS = 48  # 24 kHz, 16-bit mono


def pcm(ms: int) -> bytes:
    """``ms`` of PCM16 24 kHz with a recognisable (non-silent) pattern."""
    return bytes(range(1, 97)) * (ms // 2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Harness:
    """One ``SessionCore`` plus helpers; every event taken is SDK-validated and kept in ``log``."""

    def __init__(self, session: RealtimeSession | TranscriptionSession | None = None) -> None:
        self.core = JsonCore(
            SessionCore(session or RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0)
        )
        self.log: list[dict[str, Any]] = []
        self.commands: list[Any] = []
        self.core.start()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for event in self.core.take_events():
            raw = event.to_json()
            SERVER_EVENT.validate_json(raw)
            data = json.loads(raw)
            assert data["event_id"].startswith("event_")
            out.append(data)
        self.log.extend(out)
        self.commands.extend(self.core.take_commands())
        return out

    def send(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        self.core.handle(json.dumps({"type": kind, **fields}))
        return self.events()

    def take_commands(self) -> list[Any]:
        self.events()
        out, self.commands = self.commands, []
        return out

    def update(self, event_id: str | None = None, **session: Any) -> list[dict[str, Any]]:
        extra = {"event_id": event_id} if event_id else {}
        return self.send("session.update", session={"type": "realtime", **session}, **extra)

    def create_response(self, **params: Any) -> str:
        events = self.send("response.create", **({"response": params} if params else {}))
        created = [e for e in events if e["type"] == "response.created"]
        assert len(created) == 1, events
        return str(created[0]["response"]["id"])

    def user_text(self, text: str, **fields: Any) -> dict[str, Any]:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        events = self.send("conversation.item.create", item={**item, **fields})
        assert [e["type"] for e in events] == ["conversation.item.added", "conversation.item.done"], events
        return events[0]

    def finish(self, rid: str, **kw: Any) -> list[dict[str, Any]]:
        args = {"prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 5} | kw
        finish_reason = args.pop("finish_reason", "stop")
        self.core.receive(GenerationFinished(rid, finish_reason, **args))
        return self.events()

    def speak(self, probs: list[float]) -> list[dict[str, Any]]:
        """Append 32 ms of audio per probability, then feed the VAD frames for it."""
        start = self.core.input.total_ms
        self.send("input_audio_buffer.append", audio=b64(pcm(FRAME_MS) * len(probs)))
        frames: list[tuple[float, float, float, float | None]] = [
            (p, start + i * FRAME_MS, start + (i + 1) * FRAME_MS, None) for i, p in enumerate(probs)
        ]
        self.core.receive(SpeechProbabilities(tuple(VadFrame(*frame) for frame in frames)))
        return self.events()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def only(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, types(events)
    return found[0]


def assert_error(
    events: list[dict[str, Any]], code: str, event_id: str | None, param: str | None = None
) -> dict[str, Any]:
    assert types(events) == ["error"], events
    error: dict[str, Any] = events[0]["error"]
    assert error["code"] == code, error
    assert error["event_id"] == event_id, error
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    assert types(harness.events()) == ["session.created"]
    return harness


# A turn of 5 silent, 10 speech and 10 silent 32 ms frames: onset 160 ms, confirmed at 256 ms;
# speech ends at 480 ms, 200 ms of silence are reached at the end of frame 21 (704 ms).
TURN = [0.0] * 5 + [0.9] * 10 + [0.0] * 10


# --------------------------------------------------------------------------- session.update


def test_session_created_is_first_and_complete() -> None:
    harness = Harness()
    events = harness.events()
    assert types(events) == ["session.created"]
    session = events[0]["session"]
    assert session["id"].startswith("sess_")
    assert session["expires_at"] == 3600
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] is None
    assert session["tracing"] is None


def test_update_merges_nested_fields_and_replies_with_the_full_session(h: Harness) -> None:
    h.update(instructions="Be brief.", audio={"output": {"voice": "ash", "speed": 1.2}})
    events = h.update("evt_1", audio={"input": {"noise_reduction": {"type": "near_field"}}})
    assert types(events) == ["session.updated"]
    session = events[0]["session"]
    assert session["audio"]["input"]["noise_reduction"]["type"] == "near_field"
    assert session["audio"]["output"]["voice"] == "ash"
    assert session["audio"]["output"]["speed"] == 1.2
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["instructions"] == "Be brief."
    assert session["id"] == h.core.session.id
    assert "evt_1" not in json.dumps(events)  # the client's event_id is only echoed in errors


def test_update_turn_detection_merges_within_a_type(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 700}}})
    events = h.update(audio={"input": {"turn_detection": {"threshold": 0.8}}})
    detection = events[0]["session"]["audio"]["input"]["turn_detection"]
    assert detection["threshold"] == 0.8
    assert detection["silence_duration_ms"] == 700


def test_update_turn_detection_type_switch_replaces(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.9}}})
    events = h.update(audio={"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}})
    detection = events[0]["session"]["audio"]["input"]["turn_detection"]
    assert detection == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": True,
    }
    events = h.update(audio={"input": {"turn_detection": {"type": "server_vad"}}})
    assert events[0]["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.5


def test_update_null_turns_features_off_and_empty_values_clear(h: Harness) -> None:
    h.update(
        audio={"input": {"transcription": {"model": "whisper-1"}, "noise_reduction": {"type": "far_field"}}},
        tools=[{"type": "function", "name": "get_weather"}],
    )
    events = h.update(
        instructions="",
        tools=[],
        audio={"input": {"turn_detection": None, "transcription": None, "noise_reduction": None}},
    )
    session = events[0]["session"]
    assert session["instructions"] == ""
    assert session["tools"] == []
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["transcription"] is None
    assert session["audio"]["input"]["noise_reduction"] is None
    assert h.core.input.segmenter is None
    # omission leaves things unchanged
    events = h.update(instructions="x")
    assert events[0]["session"]["audio"]["input"]["turn_detection"] is None


def test_update_validation_errors_echo_the_event_id(h: Harness) -> None:
    assert_error(
        h.send("session.update", event_id="e1", session={"instructions": "x"}),
        "missing_required_parameter",
        "e1",
        "session.type",
    )
    assert_error(
        h.send("session.update", event_id="e2", session={"type": "transcription"}),
        "invalid_value",
        "e2",
        "session.type",
    )
    assert_error(h.update("e3", voice="ash"), "unknown_parameter", "e3", "session.voice")
    assert_error(h.update("e4", bogus=1), "unknown_parameter", "e4", "session.bogus")
    assert_error(
        h.update("e5", audio={"output": {"speed": 3}}),
        "decimal_above_max_value",
        "e5",
        "session.audio.output.speed",
    )
    assert_error(h.update("e6", tool_choice="sometimes"), "invalid_value", "e6", "session.tool_choice")
    # nothing was applied
    assert h.core.session.audio.output.speed == 1.0
    # a model name is accepted (agents-python sends one with every update)
    assert types(h.update(model="gpt-realtime-2.1")) == ["session.updated"]


def test_voice_can_change_until_audio_was_produced(h: Harness) -> None:
    assert types(h.update(audio={"output": {"voice": "ash"}})) == ["session.updated"]
    rid = h.create_response()
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(100))))
    h.finish(rid)
    error = assert_error(
        h.update("v1", audio={"output": {"voice": "coral"}}),
        "cannot_update_voice",
        "v1",
        "session.audio.output.voice",
    )
    assert "voice" in error["message"]
    assert h.core.session.audio.output.voice == "ash"
    # re-sending the same voice is not a change
    assert types(h.update(audio={"output": {"voice": "ash", "speed": 1.1}})) == ["session.updated"]


def test_tracing_cannot_be_modified_once_enabled(h: Harness) -> None:
    assert types(h.update(tracing="auto")) == ["session.updated"]
    assert types(h.update(tracing="auto")) == ["session.updated"]
    assert_error(h.update("t1", tracing={"workflow_name": "w"}), "invalid_value", "t1", "session.tracing")
    assert_error(h.update("t2", tracing=None), "invalid_value", "t2", "session.tracing")
    assert types(h.update(instructions="still fine")) == ["session.updated"]
    assert h.core.session.tracing == "auto"


# --------------------------------------------------------------------------- conversation items


def test_item_create_placement_by_previous_item_id(h: Harness) -> None:
    a = h.user_text("a", id="item_a")
    assert a["previous_item_id"] is None
    assert a["item"]["status"] == "completed" and a["item"]["object"] == "realtime.item"
    b = h.user_text("b", id="item_b")
    assert b["previous_item_id"] == "item_a"
    first = h.send(
        "conversation.item.create",
        previous_item_id="root",
        item={
            "id": "item_r",
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "r"}],
        },
    )
    assert [e["previous_item_id"] for e in first] == [None, None]
    middle = h.send(
        "conversation.item.create",
        previous_item_id="item_a",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "m"}]},
    )
    assert middle[0]["previous_item_id"] == "item_a"
    assert middle[0]["item"]["id"].startswith("item_")
    assert h.core.conversation.ids() == ["item_r", "item_a", middle[0]["item"]["id"], "item_b"]
    assert_error(
        h.send(
            "conversation.item.create",
            event_id="c1",
            previous_item_id="item_nope",
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
        ),
        "item_create_invalid_previous_item_id",
        "c1",
        "previous_item_id",
    )
    assert len(h.core.conversation) == 4


def test_item_create_rejects_duplicates_bad_items_and_unknown_calls(h: Harness) -> None:
    h.user_text("a", id="item_dup")
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "b"}]}
    assert_error(
        h.send("conversation.item.create", event_id="d1", item={**user, "id": "item_dup"}),
        "item_create_duplicate_item_id",
        "d1",
    )
    assert_error(
        h.send(
            "conversation.item.create",
            event_id="d2",
            item={
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_audio", "audio": "AAAA"}],
            },
        ),
        "unsupported_content_type",
        "d2",
    )
    assert_error(
        h.send(
            "conversation.item.create",
            event_id="d3",
            item={"type": "function_call_output", "call_id": "call_missing", "output": "{}"},
        ),
        "item_create_invalid_call_id",
        "d3",
    )
    assert_error(
        h.send("conversation.item.create", event_id="d4", item={"type": "message", "content": []}),
        "missing_required_parameter",
        "d4",
        "item.role",
    )
    h.send(
        "conversation.item.create",
        item={"type": "function_call", "name": "f", "arguments": "{}", "call_id": "call_1"},
    )
    events = h.send(
        "conversation.item.create", item={"type": "function_call_output", "call_id": "call_1", "output": "ok"}
    )
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    assert len(h.core.conversation) == 3


def test_retrieve_returns_audio_only_in_retrieved_and_delete_removes(h: Harness) -> None:
    audio = pcm(200)
    events = h.send(
        "conversation.item.create",
        item={
            "id": "item_au",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": b64(audio)}],
        },
    )
    assert "audio" not in events[0]["item"]["content"][0]
    assert events[0]["item"]["content"][0]["transcript"] is None
    h.user_text("hello", id="item_tx")
    retrieved = only(h.send("conversation.item.retrieve", item_id="item_au"), "conversation.item.retrieved")
    assert base64.b64decode(retrieved["item"]["content"][0]["audio"]) == audio
    text = only(h.send("conversation.item.retrieve", item_id="item_tx"), "conversation.item.retrieved")
    assert text["item"]["content"] == [{"type": "input_text", "text": "hello"}]
    assert_error(
        h.send("conversation.item.retrieve", event_id="r1", item_id="item_zz"),
        "item_retrieve_invalid_item_id",
        "r1",
        "item_id",
    )
    assert h.send("conversation.item.delete", item_id="item_au") == [
        {"type": "conversation.item.deleted", "event_id": h.log[-1]["event_id"], "item_id": "item_au"}
    ]
    assert_error(
        h.send("conversation.item.delete", event_id="r2", item_id="item_au"),
        "item_delete_invalid_item_id",
        "r2",
    )
    assert_error(
        h.send("conversation.item.retrieve", event_id="r3", item_id="item_au"),
        "item_retrieve_invalid_item_id",
        "r3",
    )
    assert h.core.conversation.ids() == ["item_tx"]


def test_retrieve_committed_buffer_audio(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": None}})
    audio = pcm(300)
    assert h.send("input_audio_buffer.append", audio=b64(audio)) == []
    item_id = only(h.send("input_audio_buffer.commit"), "input_audio_buffer.committed")["item_id"]
    retrieved = only(h.send("conversation.item.retrieve", item_id=item_id), "conversation.item.retrieved")
    assert retrieved["item"]["content"][0]["type"] == "input_audio"
    assert base64.b64decode(retrieved["item"]["content"][0]["audio"]) == audio


# --------------------------------------------------------------------------- truncate


def spoken_response(h: Harness, chunks: list[tuple[str, int]]) -> str:
    """A completed audio response of (transcript text, audio ms) chunks; returns its item id."""
    rid = h.create_response()
    for text, ms in chunks:
        h.core.receive(TextGenerated(rid, text))
        h.core.receive(SpeechGenerated(rid, pcm_of(pcm(ms))))
    done = only(h.finish(rid), "response.done")
    return str(done["response"]["output"][0]["id"])


def test_truncate_only_assistant_audio_within_its_length(h: Harness) -> None:
    h.user_text("hi", id="item_user")
    item_id = spoken_response(h, [("Hello", 100), (" world", 100)])
    assert_error(
        h.send(
            "conversation.item.truncate", event_id="t1", item_id="item_user", content_index=0, audio_end_ms=0
        ),
        "unsupported_content_type",
        "t1",
    )
    rid = h.create_response(output_modalities=["text"])
    h.core.receive(TextGenerated(rid, "text only"))
    text_item = only(h.finish(rid), "response.done")["response"]["output"][0]["id"]
    assert_error(
        h.send(
            "conversation.item.truncate", event_id="t2", item_id=text_item, content_index=0, audio_end_ms=0
        ),
        "unsupported_content_type",
        "t2",
    )
    error = assert_error(
        h.send(
            "conversation.item.truncate", event_id="t3", item_id=item_id, content_index=0, audio_end_ms=202
        ),
        "invalid_value",
        "t3",
        "audio_end_ms",
    )
    assert "200ms is already shorter than 202ms" in error["message"]
    assert_error(
        h.send(
            "conversation.item.truncate", event_id="t4", item_id="item_x", content_index=0, audio_end_ms=1
        ),
        "item_truncate_invalid_item_id",
        "t4",
    )
    assert_error(
        h.send("conversation.item.truncate", event_id="t5", item_id=item_id, content_index=1, audio_end_ms=1),
        "unsupported_content_type",
        "t5",
    )
    # 1 ms over is a client's rounding of its float sum, not a claim to more audio: all is kept
    events = h.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=201)
    assert types(events) == ["conversation.item.truncated"]
    assert (events[0]["item_id"], events[0]["content_index"], events[0]["audio_end_ms"]) == (item_id, 0, 201)
    item = only(h.send("conversation.item.retrieve", item_id=item_id), "conversation.item.retrieved")["item"]
    assert len(base64.b64decode(item["content"][0]["audio"])) == 200 * PCM_BYTES_PER_MS
    assert item["content"][0]["transcript"] == "Hello world"
    events = h.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=200)
    assert types(events) == ["conversation.item.truncated"]
    assert (events[0]["item_id"], events[0]["content_index"], events[0]["audio_end_ms"]) == (item_id, 0, 200)


@pytest.mark.parametrize(
    ("audio_end_ms", "transcript"),
    [(0, ""), (50, "Hello"), (100, "Hello"), (101, "Hello world"), (150, "Hello world")],
)
def test_truncate_trims_transcript_and_audio_by_alignment(
    h: Harness, audio_end_ms: int, transcript: str
) -> None:
    item_id = spoken_response(h, [("Hello", 100), (" world", 100)])
    events = h.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=audio_end_ms)
    assert types(events) == ["conversation.item.truncated"]
    item = only(h.send("conversation.item.retrieve", item_id=item_id), "conversation.item.retrieved")["item"]
    assert item["content"][0]["transcript"] == transcript
    assert len(base64.b64decode(item["content"][0]["audio"])) == audio_end_ms * PCM_BYTES_PER_MS
    # the model now reads only what was heard
    h.user_text("next")
    rid = h.create_response()
    request = h.core.chat_request(rid)
    assert request is not None
    assistant = [m.content for m in request.messages if m.role == "assistant"]
    assert assistant == ([transcript] if transcript else [])


# --------------------------------------------------------------------------- responses


def test_text_response_event_sequence_and_response_object(h: Harness) -> None:
    user = h.user_text("hi", id="item_u")
    events = h.send("response.create", event_id="rc", response={"output_modalities": ["text"]})
    created = only(events, "response.created")["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert created["conversation_id"] == h.core.responses.conversation_id
    assert created["output_modalities"] == ["text"]
    assert created["metadata"] is None and created["status_details"] is None
    assert created["max_output_tokens"] == "inf"
    assert created["audio"]["output"]["voice"] == "marin"
    rid = created["id"]
    start = [c for c in h.take_commands() if isinstance(c, StartResponse)]
    assert start == [
        StartResponse(
            response_id=rid,
            context_item_ids=("item_u",),
            modality="text",
            voice="marin",
            speed=1.0,
            output_format="audio/pcm",
        )
    ]
    for piece in ["Hi", " there", "!"]:
        h.core.receive(TextGenerated(rid, piece))
    h.core.receive(TextGenerated(rid, ""))  # empty deltas are dropped
    events = h.events() + h.finish(rid, prompt_tokens=20, cached_tokens=8, completion_tokens=3)
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    item_id = events[0]["item"]["id"]
    assert events[0]["item"]["status"] == "in_progress" and events[0]["item"]["content"] == []
    assert events[1]["previous_item_id"] == user["item"]["id"]
    assert events[2]["part"] == {"type": "text", "text": ""}
    assert events[6]["text"] == "Hi there!"
    assert events[7]["part"] == {"type": "text", "text": "Hi there!"}
    final = {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Hi there!"}],
    }
    assert events[8]["item"] == final and events[9]["item"] == final
    done = events[10]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"] == [final]
    assert h.core.conversation.ids() == ["item_u", item_id]
    assert [c for c in h.take_commands() if isinstance(c, ResponseFinished)] == [
        ResponseFinished(response_id=rid, audio_ms=0, out_of_band=False)
    ]


def test_audio_response_event_sequence(h: Harness) -> None:
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "Hello"))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(100))))
    h.core.receive(SpeechGenerated(rid, pcm_of(b"")))  # dropped
    events = h.events() + h.finish(rid)
    assert types(events) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[2]["part"] == {"type": "audio", "transcript": ""}
    assert base64.b64decode(events[4]["delta"]) == pcm(100)
    assert events[7]["part"] == {"type": "audio", "transcript": "Hello"}
    assert events[8]["item"]["content"] == [{"type": "output_audio", "transcript": "Hello"}]
    assert "audio" not in json.dumps(events[10]["response"]["output"]).replace("output_audio", "")


def test_audio_is_ignored_for_text_responses(h: Harness) -> None:
    rid = h.create_response(output_modalities=["text"])
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(100))))
    assert h.events() == []
    assert not h.core.responses.audio_output_started


def test_response_overrides_apply_to_one_response_only(h: Harness) -> None:
    h.update(
        instructions="session instructions",
        tools=[{"type": "function", "name": "session_tool", "description": "s"}],
    )
    h.user_text("hello")
    metadata = {"client_event_id": "abc", "purpose": "test"}
    events = h.send(
        "response.create",
        response={
            "instructions": "response instructions",
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "lookup"},
            "output_modalities": ["text"],
            "metadata": metadata,
            "max_output_tokens": 64,
            "audio": {"output": {"voice": "ash", "format": {"type": "audio/pcmu"}}},
        },
    )
    assert types(events) == ["response.created"]
    created = events[0]["response"]
    assert created["metadata"] == metadata
    assert created["output_modalities"] == ["text"]
    assert created["max_output_tokens"] == 64
    assert created["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "ash"}
    request = h.core.chat_request(created["id"])
    assert request is not None
    assert request.messages[0].role == "system" and request.messages[0].content == "response instructions"
    assert [t.name for t in request.tools] == ["lookup"]
    assert request.tool_choice == "lookup"
    assert request.max_output_tokens == 64
    h.core.receive(TextGenerated(created["id"], "ok"))
    done = only(h.finish(created["id"]), "response.done")["response"]
    assert done["metadata"] == metadata
    # nothing persisted to the session
    assert h.core.session.instructions == "session instructions"
    assert h.core.session.output_modalities == ["audio"]
    assert [t.name for t in h.core.session.tools] == ["session_tool"]
    rid = h.create_response(tools=[])
    request = h.core.chat_request(rid)
    assert request is not None and request.tools == () and request.tool_choice == "none"
    assert request.messages[0].content == "session instructions"


def test_out_of_band_response_stays_out_of_the_conversation(h: Harness) -> None:
    h.user_text("talk", id="item_1")
    default = h.create_response(output_modalities=["text"])
    oob = h.create_response(conversation="none", metadata={"purpose": "summary"})
    h.core.receive(TextGenerated(oob, "Summary"))
    h.core.receive(SpeechGenerated(oob, pcm_of(pcm(50))))
    h.core.receive(ToolCalled(oob, "f", "call_oob", '{"a": 1}'))
    events = h.events() + h.finish(oob)
    assert not [e for e in events if e["type"].startswith("conversation.")], types(events)
    done = only(events, "response.done")["response"]
    assert done["conversation_id"] is None and done["metadata"] == {"purpose": "summary"}
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    assert h.core.conversation.ids() == ["item_1"]
    assert h.core.responses.active_default == default
    # its items are not retrievable or truncatable
    assert_error(
        h.send("conversation.item.retrieve", event_id="o1", item_id=done["output"][0]["id"]),
        "item_retrieve_invalid_item_id",
        "o1",
    )


def test_out_of_band_response_with_input_and_item_reference(h: Harness) -> None:
    h.user_text("first words", id="item_1")
    h.user_text("second words", id="item_2")
    rid = h.create_response(
        conversation="none",
        output_modalities=["text"],
        input=[
            {"type": "item_reference", "id": "item_1"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Summarize"}]},
        ],
    )
    created = only(h.log, "response.created")["response"]
    assert created["conversation_id"] is None
    request = h.core.chat_request(rid)
    assert request is not None
    assert [(m.role, m.content) for m in request.messages[1:]] == [
        ("user", "first words"),
        ("user", "Summarize"),
    ]
    start = next(c for c in h.take_commands() if isinstance(c, StartResponse))
    assert start.context_item_ids[0] == "item_1"
    assert_error(
        h.send(
            "response.create",
            event_id="ref",
            response={"conversation": "none", "input": [{"type": "item_reference", "id": "item_none"}]},
        ),
        "invalid_value",
        "ref",
        "response.input[0].id",
    )
    assert_error(
        h.send("conversation.item.create", event_id="ref2", item={"type": "item_reference", "id": "item_1"}),
        "invalid_value",
        "ref2",
        "item.type",
    )


def test_one_default_response_at_a_time(h: Harness) -> None:
    rid = h.create_response()
    error = assert_error(
        h.send("response.create", event_id="evt_9"), "conversation_already_has_active_response", "evt_9"
    )
    assert rid in error["message"]
    # an out-of-band response may overlap
    oob = h.create_response(conversation="none")
    h.finish(rid)
    rid2 = h.create_response()
    assert len({rid, oob, rid2}) == 3


def test_cancel_errors_when_nothing_is_active(h: Harness) -> None:
    error = assert_error(h.send("response.cancel", event_id="c0"), "response_cancel_not_active", "c0")
    assert error["message"].startswith("Cancellation failed")
    rid = h.create_response()
    h.finish(rid)
    assert_error(h.send("response.cancel", event_id="c1"), "response_cancel_not_active", "c1")
    assert_error(
        h.send("response.cancel", event_id="c2", response_id=rid), "response_cancel_not_active", "c2"
    )
    assert_error(
        h.send("response.cancel", event_id="c3", response_id="resp_unknown"),
        "response_cancel_not_active",
        "c3",
    )


def test_cancel_closes_what_is_open_in_order(h: Harness) -> None:
    h.user_text("tell me a story")
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "Once upon"))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(120))))
    h.core.receive(TextGenerated(rid, " a time"))
    h.events()
    h.take_commands()
    events = h.send("response.cancel", event_id="cx")
    assert types(events) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[1]["transcript"] == "Once upon a time"
    assert events[3]["item"]["status"] == "incomplete"
    assert events[4]["item"]["status"] == "incomplete"
    response = events[5]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert response["output"][0]["status"] == "incomplete"
    usage = response["usage"]
    assert usage["output_token_details"] == {"text_tokens": 4, "audio_tokens": 2}
    assert usage["input_tokens"] > 0
    commands = h.take_commands()
    assert CancelResponse(rid) in commands
    assert ResponseFinished(response_id=rid, audio_ms=120, out_of_band=False) in commands
    assert commands.index(CancelResponse(rid)) < commands.index(
        ResponseFinished(response_id=rid, audio_ms=120, out_of_band=False)
    )
    assert h.core.responses.active_default is None
    # a new response can start
    h.create_response()


def test_cancel_without_output_and_by_response_id(h: Harness) -> None:
    oob = h.create_response(conversation="none")
    default = h.create_response()
    events = h.send("response.cancel", response_id=oob)
    assert types(events) == ["response.done", "rate_limits.updated"]
    assert events[0]["response"]["id"] == oob and events[0]["response"]["output"] == []
    assert h.core.responses.active_default == default
    events = h.send("response.cancel")
    assert events[0]["response"]["id"] == default


def test_results_after_cancel_are_ignored(h: Harness) -> None:
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "a"))
    h.send("response.cancel")
    h.core.receive(TextGenerated(rid, "late"))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(50))))
    h.core.receive(ToolCalled(rid, "f", "call_late", "{}"))
    h.core.receive(PromptRead(rid, 10, 0))
    h.core.receive(GenerationFinished(rid, "stop", prompt_tokens=1, cached_tokens=0, completion_tokens=1))
    h.core.receive(GenerationFailed(rid, "boom", "late failure"))
    h.core.receive(CancelRequested(rid, "client_cancelled"))
    assert h.core.chat_request(rid) is None
    assert h.events() == []
    assert not h.core.conversation.has_call("call_late")
    assert not [c for c in h.take_commands() if isinstance(c, CancelResponse) and c != CancelResponse(rid)]


def test_max_output_tokens_gives_incomplete(h: Harness) -> None:
    rid = h.create_response(max_output_tokens=5, output_modalities=["text"])
    h.core.receive(TextGenerated(rid, "one two three four five"))
    events = h.finish(rid, finish_reason="length", completion_tokens=5)
    response = only(events, "response.done")["response"]
    assert response["status"] == "incomplete"
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert response["max_output_tokens"] == 5
    assert only(events, "response.output_item.done")["item"]["status"] == "incomplete"
    assert only(events, "response.output_text.done")["text"] == "one two three four five"


def test_failed_response_closes_its_items(h: Harness) -> None:
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "partial"))
    h.events()
    h.core.receive(GenerationFailed(rid, "llm_error", "The language model failed."))
    events = h.events()
    assert types(events) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    response = events[5]["response"]
    assert response["status"] == "failed"
    assert response["status_details"]["type"] == "failed"
    assert response["status_details"]["error"]["code"] == "llm_error"
    assert response["status_details"]["error"]["message"] == "The language model failed."
    assert h.core.responses.active_default is None


def test_function_call_round_trip(h: Harness) -> None:
    h.update(tools=[{"type": "function", "name": "get_weather"}])
    h.user_text("weather in Paris?")
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "Let me check."))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(60))))
    arguments = json.dumps({"city": "Paris", "padding": "x" * 40})
    h.core.receive(ToolCalled(rid, "get_weather", "call_X", arguments))
    events = h.events() + h.finish(rid)
    kinds = types(events)
    call_start = kinds.index("response.output_item.added", 1)
    n_deltas = kinds.count("response.function_call_arguments.delta")
    assert n_deltas >= 2  # long arguments are streamed in pieces
    assert kinds[call_start:] == [
        "response.output_item.added",
        "conversation.item.added",
        *["response.function_call_arguments.delta"] * n_deltas,
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    # the spoken preamble was closed before the call began
    assert kinds[call_start - 1] == "response.output_item.done"
    added = events[call_start]
    assert added["output_index"] == 1
    assert added["item"]["status"] == "in_progress" and added["item"]["arguments"] == ""
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == arguments
    args_done = only(events, "response.function_call_arguments.done")
    assert (args_done["name"], args_done["call_id"], args_done["arguments"]) == (
        "get_weather",
        "call_X",
        arguments,
    )
    item_done = [e for e in events if e["type"] == "response.output_item.done"][-1]["item"]
    assert item_done["status"] == "completed" and item_done["arguments"] == arguments
    output = only(events, "response.done")["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call"]
    events = h.send(
        "conversation.item.create",
        item={"type": "function_call_output", "call_id": "call_X", "output": '{"t":21}'},
    )
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    rid2 = h.create_response()
    request = h.core.chat_request(rid2)
    assert request is not None
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "assistant", "tool"]
    assert request.messages[3].tool_calls[0].call_id == "call_X"


def test_mcp_tools_need_a_url_and_a_session_entry(h: Harness) -> None:
    connector = {"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"}
    assert_error(
        h.update("m1", tools=[connector]), "unsupported_tool_type", "m1", "session.tools[0].server_url"
    )
    mcp = {"type": "mcp", "server_label": "x", "server_url": "http://localhost"}
    assert_error(
        h.send("response.create", event_id="m2", response={"tools": [mcp]}),
        "unsupported_tool_type",
        "m2",
        "response.tools[0]",
    )


# --------------------------------------------------------------------------- usage


def test_usage_shape_and_arithmetic(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": None}})
    h.send("input_audio_buffer.append", audio=b64(pcm(1000)))
    h.send("input_audio_buffer.commit")
    h.user_text("and some text")
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "Hi"))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(500))))
    usage = only(h.finish(rid, prompt_tokens=40, cached_tokens=100, completion_tokens=3), "response.done")[
        "response"
    ]["usage"]
    assert usage == {
        "total_tokens": 63,
        "input_tokens": 50,
        "output_tokens": 13,
        "input_token_details": {
            "text_tokens": 40,
            "audio_tokens": 10,  # 1000 ms of user audio: 1 token / 100 ms
            "image_tokens": 0,
            "cached_tokens": 50,  # never more than the input; the audio sits in the cached prefix
            "cached_tokens_details": {"text_tokens": 40, "audio_tokens": 10, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 3, "audio_tokens": 10},  # 500 ms: 1 token / 50 ms
    }
    rate = only(h.log, "rate_limits.updated")["rate_limits"][0]
    assert rate["name"] == "tokens" and rate["remaining"] <= rate["limit"] - 63


def test_context_audio_is_billed_as_audio_and_cached_with_its_prefix(h: Harness) -> None:
    """Earlier user audio (1 token / 100 ms) and assistant audio (1 / 50 ms) are input audio of
    every later response; the part inside the LLM's cached prefix counts as cached audio, and
    the transcripts the LLM read in its place leave the text counts."""
    h.update(instructions="Be brief.", audio={"input": {"turn_detection": None}})
    h.send("input_audio_buffer.append", audio=b64(pcm(2000)))
    item_id = only(h.send("input_audio_buffer.commit"), "input_audio_buffer.committed")["item_id"]
    h.core.receive(TranscriptCompleted(item_id, "one two three four", {"type": "duration", "seconds": 2}))
    h.events()
    first = h.create_response()
    h.core.receive(TextGenerated(first, "five six"))
    h.core.receive(SpeechGenerated(first, pcm_of(pcm(1000))))
    h.finish(first, prompt_tokens=30, cached_tokens=0, completion_tokens=2)
    h.user_text("seven")
    second = h.create_response()
    usage = only(h.finish(second, prompt_tokens=45, cached_tokens=40, completion_tokens=1), "response.done")[
        "response"
    ]["usage"]
    details = usage["input_token_details"]
    assert details["audio_tokens"] == 20 + 20  # 2 s of user audio + 1 s of assistant audio
    assert details["text_tokens"] == 45 - 4 - 2  # the two transcripts are billed as audio
    assert details["cached_tokens_details"]["audio_tokens"] == 40  # both inside the cached prefix
    assert details["cached_tokens_details"]["text_tokens"] == 40 - 4 - 2
    assert usage["input_tokens"] == details["text_tokens"] + 40


def test_usage_audio_tokens_round_down_and_prompt_report_wins_on_cancel(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": None}})
    h.send("input_audio_buffer.append", audio=b64(pcm(250)))
    h.send("input_audio_buffer.commit")
    rid = h.create_response()
    h.core.receive(PromptRead(rid, 77, 12))
    h.core.receive(TextGenerated(rid, "two words"))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(120))))
    usage = only(h.send("response.cancel"), "response.done")["response"]["usage"]
    assert usage["input_token_details"]["audio_tokens"] == 2
    assert usage["input_token_details"]["text_tokens"] == 77
    assert usage["input_token_details"]["cached_tokens"] == 12
    assert usage["output_token_details"] == {"text_tokens": 2, "audio_tokens": 2}
    assert usage["input_tokens"] == 79 and usage["output_tokens"] == 4 and usage["total_tokens"] == 83


# --------------------------------------------------------------------------- input audio buffer


def test_append_commit_clear(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": None}})
    h.user_text("before", id="item_before")
    assert h.send("input_audio_buffer.append", audio=b64(pcm(60))) == []
    assert h.send("input_audio_buffer.append", audio=b64(pcm(60))) == []
    events = h.send("input_audio_buffer.commit", event_id="commit_1")
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    item_id = events[0]["item_id"]
    assert events[0]["previous_item_id"] == "item_before"
    assert events[1]["item"] == {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    transcribe = [c for c in h.take_commands() if isinstance(c, TranscribeItem)]
    assert len(transcribe) == 1 and transcribe[0].item_id == item_id
    assert transcribe[0].pcm.tobytes() == pcm(60) * 2 and transcribe[0].model is None
    error = assert_error(
        h.send("input_audio_buffer.commit", event_id="e"), "input_audio_buffer_commit_empty", "e"
    )
    assert "0.00ms" in error["message"]
    h.send("input_audio_buffer.append", audio=b64(pcm(200)))
    assert types(h.send("input_audio_buffer.clear")) == ["input_audio_buffer.cleared"]
    assert_error(h.send("input_audio_buffer.commit", event_id="e2"), "input_audio_buffer_commit_empty", "e2")
    # a commit never creates a response
    assert not [e for e in h.log if e["type"] == "response.created"]


def test_commit_needs_100_ms(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": None}})
    h.send("input_audio_buffer.append", audio=b64(b"\0\0" * (48 * 99 // 2)))
    error = assert_error(
        h.send("input_audio_buffer.commit", event_id="s"), "input_audio_buffer_commit_empty", "s"
    )
    assert "99.00ms" in error["message"]
    h.send("input_audio_buffer.append", audio=b64(b"\0" * 48))
    assert types(h.send("input_audio_buffer.commit"))[0] == "input_audio_buffer.committed"


def test_commit_with_vad_on_does_not_create_a_response(h: Harness) -> None:
    h.send("input_audio_buffer.append", audio=b64(pcm(200)))
    events = h.send("input_audio_buffer.commit")
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        (b64(b"\x01\x02\x03"), "invalid_value"),  # odd number of bytes for PCM16
        ("not base64!", "invalid_value"),
        ("QUJD\n", "invalid_value"),
        ("A" * (15 * 1024 * 1024 * 4 // 3 + 8), "input_audio_buffer_append_too_large"),
    ],
)
def test_append_rejects_bad_audio(h: Harness, audio: str, code: str) -> None:
    assert_error(h.send("input_audio_buffer.append", event_id="ap", audio=audio), code, "ap", "audio")
    assert len(h.core.input.buffer) == 0
    assert not [c for c in h.take_commands() if type(c).__name__ == "InputAppended"]


def test_append_accepts_15_mib_and_odd_g711(h: Harness) -> None:
    assert h.send("input_audio_buffer.append", audio=b64(b"\0" * (15 * 1024 * 1024))) == []
    h.send("input_audio_buffer.clear")
    h.update(audio={"input": {"format": {"type": "audio/pcmu"}}})
    assert h.send("input_audio_buffer.append", audio=b64(b"\xff" * 801)) == []
    # the last 4 ms wait for the audio after them; a commit takes all 801 bytes (3 samples each)
    assert h.core.input.buffer_ms == pytest.approx(100.125 - 4)
    committed = only(h.send("input_audio_buffer.commit"), "input_audio_buffer.committed")
    retrieved = only(
        h.send("conversation.item.retrieve", item_id=committed["item_id"]), "conversation.item.retrieved"
    )
    assert len(base64.b64decode(retrieved["item"]["content"][0]["audio"])) == 801


# --------------------------------------------------------------------------- VAD turns


def test_vad_turn_order_and_auto_response(h: Harness) -> None:
    h.user_text("earlier", id="item_prev")
    events = h.speak(TURN)
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    item_id = events[0]["item_id"]
    assert {e.get("item_id") for e in events[:3]} == {item_id}
    assert events[3]["item"]["id"] == item_id == events[4]["item"]["id"]
    assert events[2]["previous_item_id"] == "item_prev"
    assert events[0]["audio_start_ms"] == 0  # onset 160 ms minus 300 ms padding, clamped to the buffer
    assert events[1]["audio_end_ms"] <= 480
    # the turn's audio up to the decision point (a frame boundary after the end of speech) was
    # committed; the rest stays buffered
    retrieved = only(h.send("conversation.item.retrieve", item_id=item_id), "conversation.item.retrieved")
    committed_ms = len(base64.b64decode(retrieved["item"]["content"][0]["audio"])) / PCM_BYTES_PER_MS
    assert committed_ms % FRAME_MS == 0
    assert events[1]["audio_end_ms"] < committed_ms <= len(TURN) * FRAME_MS
    assert h.core.input.buffer_ms == pytest.approx(len(TURN) * FRAME_MS - committed_ms)
    start = [c for c in h.take_commands() if isinstance(c, StartResponse)]
    assert len(start) == 1 and start[0].context_item_ids == ("item_prev", item_id)
    h.finish(start[0].response_id)
    # a second turn later in the stream gets its own item and padding from the buffer start
    events = h.speak(TURN)
    assert types(events)[:2] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
    assert events[0]["audio_start_ms"] == max(800 + 160 - 300, committed_ms)


def test_the_core_says_while_it_hears_speech_and_times_the_pause_after_it(h: Harness) -> None:
    """What a media transport asks before filling a gap of its caller's stream in real time."""
    assert not h.core.hearing_speech
    h.speak([0.0] * 3)
    assert not h.core.hearing_speech
    assert types(h.speak([0.9] * 6)) == ["input_audio_buffer.speech_started"]
    assert h.core.hearing_speech
    h.speak([0.0] * 3)  # a pause being timed
    assert h.core.hearing_speech
    assert "input_audio_buffer.speech_stopped" in types(h.speak([0.0] * 20))
    assert not h.core.hearing_speech


def test_vad_barge_in_cancels_the_active_response(h: Harness) -> None:
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "A long answer"))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(200))))
    h.events()
    events = h.speak(TURN)
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    done = only(events, "response.done")["response"]
    assert done["id"] == rid and done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert CancelResponse(rid) in h.take_commands()
    assert h.core.responses.active_default == only(events, "response.created")["response"]["id"]


def test_vad_barge_in_leaves_out_of_band_responses_alone(h: Harness) -> None:
    oob = h.create_response(conversation="none")
    events = h.speak(TURN)
    assert "response.done" not in types(events)
    assert oob in h.core.responses.live


def test_vad_without_interrupt_response_refuses_the_auto_response(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}})
    rid = h.create_response()
    events = h.speak(TURN)
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "error",
    ]
    assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
    assert events[-1]["error"]["event_id"] is None
    assert h.core.responses.active_default == rid


def test_vad_without_create_response(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "server_vad", "create_response": False}}})
    rid = h.create_response()
    events = h.speak(TURN)
    assert "response.created" not in types(events)
    assert types(events)[0] == "input_audio_buffer.speech_started"
    assert only(events, "response.done")["response"]["id"] == rid  # interrupt_response still applies
    assert types(events)[-3:] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]


def test_vad_off_ignores_frames(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": None}})
    assert h.speak(TURN) == []


def test_short_clicks_and_silence_never_start_a_turn(h: Harness) -> None:
    assert h.speak([0.0] * 10 + [0.9, 0.9] + [0.0] * 20) == []


def test_semantic_vad_asks_the_turn_detector(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "semantic_vad"}}})
    events = h.speak([0.9] * 10 + [0.0] * 10)
    assert types(events) == ["input_audio_buffer.speech_started"]
    requests = [c for c in h.take_commands() if isinstance(c, PredictEndOfTurn)]
    assert len(requests) == 1
    h.core.receive(EndOfTurnPredicted(requests[0].request_id + 100, 0.99))  # unknown request: ignored
    assert h.events() == []
    h.core.receive(EndOfTurnPredicted(requests[0].request_id, 0.99, text=0.9, text_pending=False))
    assert h.events() == []  # sure, but under auto no turn ends inside a second of silence
    events = h.speak([0.0] * 25)
    assert types(events) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]


def test_speech_in_progress_is_forgotten_by_clear(h: Harness) -> None:
    events = h.speak([0.9] * 10)
    assert types(events) == ["input_audio_buffer.speech_started"]
    started_id = events[0]["item_id"]
    h.send("input_audio_buffer.clear")
    events = h.speak([0.0] * 10)
    assert events == []
    events = h.speak(TURN)
    assert events[0]["item_id"] != started_id


def test_idle_timeout_prompts_a_response(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}})
    h.speak([0.0] * 10)
    h.core.receive(IdleTimeout())
    events = h.events()
    assert types(events) == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    item_id = events[0]["item_id"]
    assert events[0]["audio_start_ms"] == 0 and events[0]["audio_end_ms"] == 320
    assert events[1]["item_id"] == item_id == events[2]["item"]["id"]
    # not while a response is running
    h.core.receive(IdleTimeout())
    assert h.events() == []


def test_idle_timeout_is_ignored_without_server_vad(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "semantic_vad"}}})
    h.core.receive(IdleTimeout())
    h.update(audio={"input": {"turn_detection": None}})
    h.core.receive(IdleTimeout())
    assert h.events() == []


# --------------------------------------------------------------------------- input transcription


def committed_item(h: Harness) -> str:
    h.send("input_audio_buffer.append", audio=b64(pcm(200)))
    return str(only(h.send("input_audio_buffer.commit"), "input_audio_buffer.committed")["item_id"])


TRANSCRIPTION_USAGE = {
    "type": "tokens",
    "total_tokens": 24,
    "input_tokens": 16,
    "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
    "output_tokens": 8,
}


def test_transcription_events_only_when_enabled(h: Harness) -> None:
    item_id = committed_item(h)
    h.core.receive(TranscriptDelta(item_id, "Hi"))
    h.core.receive(TranscriptCompleted(item_id, "Hi there.", TRANSCRIPTION_USAGE))
    h.core.receive(TranscriptFailed(item_id, "nope"))
    assert h.events() == []
    # the transcript still reaches the item (and so the model)
    item = only(h.send("conversation.item.retrieve", item_id=item_id), "conversation.item.retrieved")["item"]
    assert item["content"][0]["transcript"] == "Hi there."


def test_transcription_events_when_enabled(h: Harness) -> None:
    h.update(audio={"input": {"transcription": {"model": "whisper-1", "language": "en"}}})
    item_id = committed_item(h)
    transcribe = [c for c in h.take_commands() if isinstance(c, TranscribeItem)]
    assert transcribe[0].model == "whisper-1" and transcribe[0].language == "en"
    h.core.receive(TranscriptDelta(item_id, "Hi"))
    h.core.receive(TranscriptDelta(item_id, ""))
    h.core.receive(TranscriptCompleted(item_id, "Hi there.", TRANSCRIPTION_USAGE))
    h.core.receive(TranscriptFailed(item_id, "The audio could not be transcribed."))
    h.core.receive(TranscriptDelta("item_unknown", "x"))
    h.core.receive(TranscriptCompleted("item_unknown", "x", TRANSCRIPTION_USAGE))
    events = h.events()
    assert types(events) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
    ]
    assert events[0] == {**events[0], "item_id": item_id, "content_index": 0, "delta": "Hi"}
    assert events[1]["transcript"] == "Hi there." and events[1]["usage"] == TRANSCRIPTION_USAGE
    assert events[2]["error"]["type"] == "transcription_error"
    assert events[2]["error"]["code"] == "audio_unintelligible"


def test_transcription_of_a_deleted_item_is_dropped(h: Harness) -> None:
    h.update(audio={"input": {"transcription": {"model": "whisper-1"}}})
    item_id = committed_item(h)
    h.send("conversation.item.delete", item_id=item_id)
    h.core.receive(TranscriptDelta(item_id, "Hi"))
    h.core.receive(TranscriptCompleted(item_id, "Hi", TRANSCRIPTION_USAGE))
    assert h.events() == []


# --------------------------------------------------------------------------- client frames


def test_bad_frames_become_errors_with_the_event_id(h: Harness) -> None:
    h.core.handle("{not json")
    assert h.events()[0]["error"]["code"] == "invalid_json"
    h.core.handle(b"\x00binary")
    assert h.events()[0]["error"]["code"] == "invalid_event"
    assert_error(h.send("response.explode", event_id="u1"), "invalid_value", "u1", "type")
    h.core.handle(json.dumps({"event_id": "u2"}))
    assert_error(h.events(), "invalid_event", "u2", "type")
    assert_error(h.send("response.create", event_id="u3", bogus=True), "unknown_parameter", "u3", "bogus")
    assert_error(
        h.send("response.create", event_id="u4", response={"output_modalities": ["audio", "text"]}),
        "array_above_max_length",
        "u4",
    )
    assert_error(h.send("output_audio_buffer.clear", event_id="u5"), "invalid_request_error", "u5", "type")


# --------------------------------------------------------------------------- regressions
# Core bugs found by these tests (and the fuzzing in test_core_ordering.py), fixed in 1988cc7.


def test_bug_transcription_session_turns_do_not_try_to_create_responses() -> None:
    """A transcription session (create_response defaults to true) must not emit an error per turn."""
    harness = Harness(TranscriptionSession())
    harness.events()
    events = harness.speak(TURN)
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]


def test_bug_truncating_twice_at_the_same_point_keeps_the_transcript(h: Harness) -> None:
    item_id = spoken_response(h, [("Hello", 100), (" world", 100)])
    for _ in range(2):
        h.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=150)
        item = only(h.send("conversation.item.retrieve", item_id=item_id), "conversation.item.retrieved")[
            "item"
        ]
        assert item["content"][0]["transcript"] == "Hello world"


def test_bug_client_audio_is_kept_at_its_content_index(h: Harness) -> None:
    audio = pcm(200)
    h.send(
        "conversation.item.create",
        item={
            "id": "item_mixed",
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "listen:"},
                {"type": "input_audio", "audio": b64(audio)},
            ],
        },
    )
    item = only(h.send("conversation.item.retrieve", item_id="item_mixed"), "conversation.item.retrieved")[
        "item"
    ]
    assert base64.b64decode(item["content"][1].get("audio") or "") == audio


def test_bug_session_output_modalities_allows_only_one(h: Harness) -> None:
    assert_error(
        h.update("om", output_modalities=["audio", "text"]),
        "array_above_max_length",
        "om",
        "session.output_modalities",
    )


def test_bug_usage_counts_audio_of_every_message_in_a_response(h: Harness) -> None:
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "Checking."))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(100))))
    h.core.receive(ToolCalled(rid, "f", "call_1", "{}"))
    h.core.receive(TextGenerated(rid, "Done."))
    h.core.receive(SpeechGenerated(rid, pcm_of(pcm(100))))
    usage = only(h.finish(rid), "response.done")["response"]["usage"]
    assert usage["output_token_details"]["audio_tokens"] == 4  # 200 ms at 1 token / 50 ms
    finished = [c for c in h.take_commands() if isinstance(c, ResponseFinished)]
    assert finished[0].audio_ms == 200


def test_bug_cancel_estimate_counts_the_response_context_not_the_conversation(h: Harness) -> None:
    h.user_text("one two three four five six")
    rid = h.create_response(conversation="none", input=[], instructions="")
    h.core.receive(CancelRequested(rid, "client_cancelled"))
    usage = only(h.events(), "response.done")["response"]["usage"]
    assert usage["input_token_details"]["text_tokens"] == 0  # it read nothing


def test_bug_input_format_change_keeps_the_input_clock_consistent(h: Harness) -> None:
    """Buffered PCM16 must not be re-read as G.711 after ``audio.input.format`` changes."""
    h.send("input_audio_buffer.append", audio=b64(pcm(256)))
    h.update(audio={"input": {"format": {"type": "audio/pcma"}}})
    h.send("input_audio_buffer.append", audio=b64(b"\xd5" * 800))  # 100 ms of G.711
    h.core.receive(IdleTimeout())
    triggered = only(h.events(), "input_audio_buffer.timeout_triggered")
    # the G.711 edge holds its last 4 ms until more audio (or a commit) arrives
    assert 0 <= triggered["audio_start_ms"] <= triggered["audio_end_ms"] == 356 - 4


# --------------------------------------------------------------------------- backchannels


def speak_over_answer(h: Harness, probs: list[float]) -> list[dict[str, Any]]:
    """As ``speak``, with every frame marked as heard while the answer plays."""
    start = h.core.input.total_ms
    h.send("input_audio_buffer.append", audio=b64(pcm(FRAME_MS) * len(probs)))
    frames = tuple(
        VadFrame(p, start + i * FRAME_MS, start + (i + 1) * FRAME_MS, None, assistant_audible=True)
        for i, p in enumerate(probs)
    )
    h.core.receive(SpeechProbabilities(frames))
    return h.events()


def held_speech(h: Harness) -> tuple[str, TranscribeHeld | None]:
    """The held turn's item id, and the transcription of it asked for once it ended."""
    commands = h.take_commands()
    held = [c for c in commands if isinstance(c, SpeechStartedCommand) and c.held]
    assert len(held) == 1
    asked = [c for c in commands if isinstance(c, TranscribeHeld)]
    return held[0].item_id, asked[-1] if asked else None


@pytest.mark.parametrize("detection", ["semantic_vad", "server_vad"])
def test_a_backchannel_interrupts_only_under_server_vad(h: Harness, detection: str) -> None:
    h.update(audio={"input": {"turn_detection": {"type": detection, "create_response": False}}})
    events = speak_over_answer(h, [0.9] * 12 + [0.0] * 6)  # ~0.4 s of speech, then a pause
    if detection == "server_vad":
        assert "input_audio_buffer.speech_started" in types(events)
        return
    assert events == []
    item_id, asked = held_speech(h)
    assert asked is not None and asked.item_id == item_id  # its own span, onset to end
    assert asked.start_ms < 0 + 100 and 12 * FRAME_MS <= asked.end_ms <= 18 * FRAME_MS + 100
    assert speak_over_answer(h, [0.0] * 100) == []  # the turn's end waits for the verdict
    h.core.receive(HeldSpeechHeard(item_id, "Mhm.", asked.end_ms))
    assert h.events() == []
    assert any(isinstance(c, HeldSpeechDropped) for c in h.take_commands())
    assert speak_over_answer(h, [0.0] * 100) == []  # the turn is forgotten: nothing ends it


@pytest.mark.parametrize("detection", ["semantic_vad", "server_vad"])
def test_a_played_answer_pauses_from_the_first_frame_of_speech_that_would_be_held(
    h: Harness, detection: str
) -> None:
    h.update(audio={"input": {"turn_detection": {"type": detection, "create_response": False}}})
    speak_over_answer(h, [0.9])  # the VAD's first frame of speech: not yet an onset
    assert h.core.input.held is None
    assert h.core.holding_speech is (detection == "semantic_vad")
    speak_over_answer(h, [0.0])  # a blip: the answer plays on
    assert not h.core.holding_speech
    speak_over_answer(h, [0.9] * 4)
    if detection == "server_vad":  # any speech interrupts: never paused, never held
        assert not h.core.holding_speech and h.core.input.held is None
        return
    assert h.core.holding_speech and h.core.input.held is not None  # held from the same onset
    held = [c for c in h.take_commands() if isinstance(c, SpeechStartedCommand)]
    assert len(held) == 1 and held[0].held


def test_speech_whose_first_frame_was_heard_over_the_answer_is_held_after_the_pause(h: Harness) -> None:
    """Once paused, the answer is no longer heard; the speech is still judged as held."""
    h.update(audio={"input": {"turn_detection": {"type": "semantic_vad", "create_response": False}}})
    speak_over_answer(h, [0.9])
    assert h.core.holding_speech
    start = h.core.input.total_ms
    h.send("input_audio_buffer.append", audio=b64(pcm(FRAME_MS) * 3))
    frames = tuple(VadFrame(0.9, start + i * FRAME_MS, start + (i + 1) * FRAME_MS, None) for i in range(3))
    h.core.receive(SpeechProbabilities(frames))  # not audible any more: the answer paused
    assert h.events() == []
    assert h.core.input.held is not None


def test_a_partial_transcript_does_not_decide_held_speech(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "semantic_vad", "create_response": False}}})
    assert speak_over_answer(h, [0.9] * 8 + [0.0] * 4) == []
    item_id, first = held_speech(h)
    assert first is not None
    assert speak_over_answer(h, [0.9] * 6 + [0.0] * 4) == []  # the speech went on: a longer span
    _, second = held_speech_asked(h)
    assert second.end_ms > first.end_ms
    h.core.receive(HeldSpeechHeard(item_id, "Okay the courier", first.end_ms))  # stale: ignored
    assert h.events() == []
    h.core.receive(HeldSpeechHeard(item_id, "Okay.", second.end_ms))
    assert h.events() == []
    assert any(isinstance(c, HeldSpeechDropped) for c in h.take_commands())


def held_speech_asked(h: Harness) -> tuple[None, TranscribeHeld]:
    asked = [c for c in h.take_commands() if isinstance(c, TranscribeHeld)]
    assert asked
    return None, asked[-1]


def test_held_speech_with_other_words_interrupts_with_its_own_onset(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "semantic_vad", "create_response": False}}})
    assert speak_over_answer(h, [0.0] * 10 + [0.9] * 8 + [0.0] * 4) == []
    item_id, asked = held_speech(h)
    assert asked is not None
    h.core.receive(HeldSpeechHeard(item_id, "Wait, no", asked.end_ms))
    started = only(h.events(), "input_audio_buffer.speech_started")
    assert started["item_id"] == item_id and started["audio_start_ms"] == 10 * FRAME_MS - 300


def test_held_speech_that_goes_on_for_a_second_interrupts(h: Harness) -> None:
    h.update(audio={"input": {"turn_detection": {"type": "semantic_vad", "create_response": False}}})
    assert speak_over_answer(h, [0.9] * 20) == []
    events = speak_over_answer(h, [0.9] * 15)  # past 1 s with no transcript yet
    assert types(events) == ["input_audio_buffer.speech_started"]
