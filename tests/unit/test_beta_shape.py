"""The beta shape translated at the edge (``protocol.beta``): every GA server event the server
can emit becomes valid beta events (against the openai SDK's ``openai.types.beta.realtime``
union) or is dropped as documented; every beta client event becomes a GA event the session core
accepts; session configs survive the round trip; errors on beta input name beta parameters.

The harness runs a real ``SessionCore`` behind a ``BetaShape``, the way a transport does:
frames in through ``shape.receive``, events out through ``shape.send``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.beta.realtime.realtime_client_event import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime.session_create_response import SessionCreateResponse
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from openrealtime.core.commands import StartResponse
from openrealtime.core.events import GenerationFinished, SpeechGenerated, TextGenerated
from openrealtime.core.session import SessionCore
from openrealtime.protocol import beta
from openrealtime.protocol import server_events as se
from openrealtime.protocol.client_events import validate_client_event
from openrealtime.protocol.errors import RealtimeError
from openrealtime.protocol.session import RealtimeSession, TranscriptionSession
from openrealtime.protocol.shape import GA_SHAPE, FilteredShape
from openrealtime.transports.wire import EventWire
from tests.json_edge import pcm_of
from tests.support import validate_beta_server_event

GA_EVENT = TypeAdapter(RealtimeServerEvent)
BETA_CLIENT_EVENT = TypeAdapter(BetaClientEvent)


def pcm(ms: int) -> bytes:
    return bytes(range(1, 97)) * (ms // 2)


class BetaHarness:
    """A ``SessionCore`` reached through a ``BetaShape``; every frame out is checked against
    the beta union and kept in ``log``."""

    def __init__(self, session: RealtimeSession | TranscriptionSession | None = None) -> None:
        self.core = SessionCore(
            session or RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0
        )
        self.shape = beta.BetaShape(conversation_id=self.core.responses.conversation_id)
        self.wire = EventWire(lambda: self.core.input_format, shape=self.shape)
        self.log: list[dict[str, Any]] = []
        self.commands: list[Any] = []
        self.sent: list[dict[str, Any]] = []
        self.core.start()
        self.events()

    def pump(self) -> None:
        """Send what the core emitted through the shape, as a transport does after each frame."""
        for output in self.core.take_events():
            for event in self.wire.events(output):  # GA events, audio as base64 deltas
                GA_EVENT.validate_json(event.to_json())
                for frame in self.shape.send(event):
                    self.sent.append(validate_beta_server_event(frame))
        self.commands.extend(self.core.take_commands())

    def events(self) -> list[dict[str, Any]]:
        self.pump()
        out, self.sent = self.sent, []
        self.log.extend(out)
        return out

    def frame(self, frame: str | bytes) -> list[dict[str, Any]]:
        def deliver(ga: str | bytes) -> None:
            try:
                events = self.wire.inputs(ga)
            except RealtimeError as err:
                self.core.reject(err)
            else:
                for event in events:
                    self.core.handle(event)
            self.pump()

        def refuse(error: RealtimeError) -> None:
            self.core.reject(error)
            self.pump()

        self.shape.receive(frame, deliver, refuse)
        return self.events()

    def send(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return self.frame(json.dumps({"type": kind, **fields}))

    def update(self, event_id: str | None = None, **session: Any) -> list[dict[str, Any]]:
        return self.send("session.update", session=session, **({"event_id": event_id} if event_id else {}))

    def errors(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e["error"] for e in events if e["type"] == "error"]

    def start_response(self, **params: Any) -> str:
        events = self.send("response.create", **({"response": params} if params else {}))
        assert not self.errors(events), events
        starts = [c for c in self.commands if isinstance(c, StartResponse)]
        self.commands.clear()
        return str(starts[-1].response_id)

    def finish(self, rid: str) -> list[dict[str, Any]]:
        self.core.receive(
            GenerationFinished(rid, "stop", prompt_tokens=10, cached_tokens=0, completion_tokens=3)
        )
        return self.events()


# --------------------------------------------------------------------------- GA → beta


def ga_session(**changes: Any) -> dict[str, Any]:
    session = RealtimeSession(id="sess_1", expires_at=1_700_000_000).model_dump(
        mode="json", exclude_none=False
    )
    return beta_merge(session, changes)


def beta_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    from openrealtime.protocol.session import merge_session_update

    merged = merge_session_update(base, changes)
    return RealtimeSession.model_validate(merged).model_dump(mode="json", exclude_none=False)


def transcription_session(**changes: Any) -> dict[str, Any]:
    from openrealtime.protocol.session import merge_session_update

    base = TranscriptionSession(id="sess_2").model_dump(mode="json", exclude_none=False)
    merged = merge_session_update(base, changes)
    return TranscriptionSession.model_validate(merged).model_dump(mode="json", exclude_none=False)


USER_TEXT = {
    "id": "item_u1",
    "object": "realtime.item",
    "type": "message",
    "status": "completed",
    "role": "user",
    "content": [{"type": "input_text", "text": "hi"}],
}
USER_AUDIO = {**USER_TEXT, "id": "item_u2", "content": [{"type": "input_audio", "transcript": None}]}
USER_IMAGE = {
    **USER_TEXT,
    "id": "item_u3",
    "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "detail": "auto"}],
}
SYSTEM = {**USER_TEXT, "id": "item_s1", "role": "system"}
ASSISTANT_TEXT = {
    "id": "item_a1",
    "object": "realtime.item",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Hello!"}],
}
ASSISTANT_AUDIO = {
    **ASSISTANT_TEXT,
    "id": "item_a2",
    "content": [{"type": "output_audio", "transcript": "Hi."}],
}
ASSISTANT_OPEN = {**ASSISTANT_TEXT, "id": "item_a3", "status": "in_progress", "content": []}
CALL = {
    "id": "item_f1",
    "object": "realtime.item",
    "type": "function_call",
    "status": "completed",
    "name": "get_weather",
    "call_id": "call_1",
    "arguments": '{"city":"Paris"}',
}
CALL_OUTPUT = {
    "id": "item_f2",
    "object": "realtime.item",
    "type": "function_call_output",
    "call_id": "call_1",
    "output": '{"temp":21}',
}
MCP_CALL = {
    "id": "item_m1",
    "object": "realtime.item",
    "type": "mcp_call",
    "server_label": "docs",
    "name": "search",
    "arguments": "{}",
    "output": None,
    "error": None,
    "approval_request_id": None,
}
MCP_LIST = {
    "id": "item_m2",
    "object": "realtime.item",
    "type": "mcp_list_tools",
    "server_label": "docs",
    "tools": [],
}
ITEMS = [
    USER_TEXT,
    USER_AUDIO,
    USER_IMAGE,
    SYSTEM,
    ASSISTANT_TEXT,
    ASSISTANT_AUDIO,
    ASSISTANT_OPEN,
    CALL,
    CALL_OUTPUT,
]

USAGE = {
    "total_tokens": 253,
    "input_tokens": 180,
    "output_tokens": 73,
    "input_token_details": {
        "text_tokens": 160,
        "audio_tokens": 20,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 13, "audio_tokens": 60},
}


def response(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "object": "realtime.response",
        "id": "resp_1",
        "status": "in_progress",
        "status_details": None,
        "output": [],
        "conversation_id": "conv_core",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
        "usage": None,
        "metadata": None,
    }
    return {**base, **changes}


PART = {"response_id": "resp_1", "item_id": "item_a2", "output_index": 0, "content_index": 0}

GA_SAMPLES: dict[str, list[Any]] = {
    "session.created": [
        se.SessionCreated(session=ga_session()),
        se.SessionCreated(session=transcription_session()),
    ],
    "session.updated": [
        se.SessionUpdated(session=ga_session(output_modalities=["text"])),
        se.SessionUpdated(
            session=ga_session(
                audio={
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "noise_reduction": {"type": "near_field"},
                        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                    },
                    "output": {"format": {"type": "audio/pcma"}, "voice": {"id": "voice_123"}, "speed": 1.2},
                },
                tools=[
                    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
                    {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example"},
                ],
                tool_choice={"type": "function", "name": "get_weather"},
                max_output_tokens=300,
                tracing="auto",
                include=["item.input_audio_transcription.logprobs"],
                model="my-azure-deployment",
            )
        ),
        se.SessionUpdated(
            session=ga_session(
                audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}},
                tool_choice={"type": "mcp", "server_label": "docs"},
            )
        ),
        se.SessionUpdated(session=ga_session(audio={"input": {"turn_detection": None}})),
        se.SessionUpdated(
            session=transcription_session(
                audio={"input": {"transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": None}}
            )
        ),
    ],
    "conversation.created": [
        se.ConversationCreated(conversation={"id": "conv_x", "object": "realtime.conversation"})
    ],
    "error": [
        se.ErrorEvent(
            error={
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "Invalid 'session.audio.output.voice': unknown voice.",
                "param": "session.audio.output.voice",
                "event_id": "evt_1",
            }
        )
    ],
    "rate_limits.updated": [
        se.RateLimitsUpdated(
            rate_limits=[
                se.RateLimit(name="tokens", limit=15_000_000, remaining=14_999_000, reset_seconds=0.001)
            ]
        )
    ],
    "input_audio_buffer.speech_started": [
        se.InputAudioBufferSpeechStarted(audio_start_ms=1000, item_id="item_u2")
    ],
    "input_audio_buffer.speech_stopped": [
        se.InputAudioBufferSpeechStopped(audio_end_ms=2000, item_id="item_u2")
    ],
    "input_audio_buffer.committed": [
        se.InputAudioBufferCommitted(item_id="item_u2", previous_item_id=None),
        se.InputAudioBufferCommitted(item_id="item_u4", previous_item_id="item_u2"),
    ],
    "input_audio_buffer.cleared": [se.InputAudioBufferCleared()],
    "input_audio_buffer.timeout_triggered": [
        se.InputAudioBufferTimeoutTriggered(audio_start_ms=0, audio_end_ms=5000, item_id="item_u5")
    ],
    "input_audio_buffer.dtmf_event_received": [
        se.InputAudioBufferDtmfEventReceived(event="5", received_at=1)
    ],
    "output_audio_buffer.started": [se.OutputAudioBufferStarted(response_id="resp_1")],
    "output_audio_buffer.stopped": [se.OutputAudioBufferStopped(response_id="resp_1")],
    "output_audio_buffer.cleared": [se.OutputAudioBufferCleared(response_id="resp_1")],
    "conversation.item.added": [se.ConversationItemAdded(item=item, previous_item_id=None) for item in ITEMS]
    + [se.ConversationItemAdded(item=MCP_CALL)],
    "conversation.item.done": [
        se.ConversationItemDone(item=item, previous_item_id="item_u1") for item in ITEMS
    ]
    + [se.ConversationItemDone(item=MCP_LIST)],
    "conversation.item.created": [se.ConversationItemCreated(item=USER_TEXT)],
    "conversation.item.retrieved": [
        se.ConversationItemRetrieved(
            item={**USER_AUDIO, "content": [{"type": "input_audio", "audio": "AAAA", "transcript": "hi"}]}
        ),
        se.ConversationItemRetrieved(
            item={
                **ASSISTANT_AUDIO,
                "content": [{"type": "output_audio", "audio": "AAAA", "transcript": "Hi."}],
            }
        ),
        se.ConversationItemRetrieved(item=MCP_CALL),
    ],
    "conversation.item.truncated": [
        se.ConversationItemTruncated(item_id="item_a2", content_index=0, audio_end_ms=1500)
    ],
    "conversation.item.deleted": [se.ConversationItemDeleted(item_id="item_u1")],
    "conversation.item.input_audio_transcription.delta": [
        se.TranscriptionDelta(item_id="item_u2", delta="Hi")
    ],
    "conversation.item.input_audio_transcription.completed": [
        se.TranscriptionCompleted(
            item_id="item_u2",
            transcript="Hi there.",
            usage={
                "type": "tokens",
                "total_tokens": 24,
                "input_tokens": 16,
                "output_tokens": 8,
                "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
            },
        ),
        se.TranscriptionCompleted(
            item_id="item_u2", transcript="Hi.", usage={"type": "duration", "seconds": 1.5}
        ),
    ],
    "conversation.item.input_audio_transcription.failed": [
        se.TranscriptionFailed(
            item_id="item_u2",
            error={
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": "x",
                "param": None,
            },
        )
    ],
    "conversation.item.input_audio_transcription.segment": [
        se.TranscriptionSegment(id="seg_1", item_id="item_u2", text="Hi", speaker="A", start=0.0, end=0.5)
    ],
    "response.created": [
        response(),
        response(conversation_id=None, metadata={"purpose": "summary"}, output_modalities=["text"]),
    ],
    "response.done": [
        response(status="completed", output=[ASSISTANT_AUDIO, CALL, MCP_CALL], usage=USAGE),
        response(
            status="cancelled",
            status_details={"type": "cancelled", "reason": "turn_detected"},
            output=[{**ASSISTANT_AUDIO, "status": "incomplete"}],
            usage=USAGE,
            audio={"output": {"format": {"type": "audio/pcmu"}, "voice": "ash"}},
        ),
        response(
            status="failed",
            status_details={
                "type": "failed",
                "error": {"type": "server_error", "code": "engine_failed", "message": "x"},
            },
            usage=USAGE,
            max_output_tokens=200,
        ),
    ],
    "response.output_item.added": [
        se.ResponseOutputItemAdded(response_id="resp_1", output_index=0, item=ASSISTANT_OPEN),
        se.ResponseOutputItemAdded(
            response_id="resp_1", output_index=1, item={**CALL, "status": "in_progress", "arguments": ""}
        ),
        se.ResponseOutputItemAdded(response_id="resp_1", output_index=2, item=MCP_CALL),
    ],
    "response.output_item.done": [
        se.ResponseOutputItemDone(response_id="resp_1", output_index=0, item=ASSISTANT_AUDIO),
        se.ResponseOutputItemDone(response_id="resp_1", output_index=1, item=CALL),
        se.ResponseOutputItemDone(response_id="resp_1", output_index=2, item=MCP_CALL),
    ],
    "response.content_part.added": [
        se.ResponseContentPartAdded(**PART, part={"type": "audio", "transcript": ""}),
        se.ResponseContentPartAdded(**PART, part={"type": "text", "text": ""}),
    ],
    "response.content_part.done": [
        se.ResponseContentPartDone(**PART, part={"type": "audio", "transcript": "Hi."})
    ],
    "response.output_text.delta": [se.ResponseOutputTextDelta(**PART, delta="Hel")],
    "response.output_text.done": [se.ResponseOutputTextDone(**PART, text="Hello!")],
    "response.output_audio.delta": [
        se.ResponseOutputAudioDelta(**PART, delta=base64.b64encode(pcm(20)).decode())
    ],
    "response.output_audio.done": [se.ResponseOutputAudioDone(**PART)],
    "response.output_audio_transcript.delta": [se.ResponseOutputAudioTranscriptDelta(**PART, delta="Hi")],
    "response.output_audio_transcript.done": [se.ResponseOutputAudioTranscriptDone(**PART, transcript="Hi.")],
    "response.function_call_arguments.delta": [
        se.ResponseFunctionCallArgumentsDelta(
            response_id="resp_1", item_id="item_f1", output_index=1, call_id="call_1", delta="{"
        )
    ],
    "response.function_call_arguments.done": [
        se.ResponseFunctionCallArgumentsDone(
            response_id="resp_1",
            item_id="item_f1",
            output_index=1,
            call_id="call_1",
            name="get_weather",
            arguments="{}",
        )
    ],
    "mcp_list_tools.in_progress": [se.McpListToolsInProgress(item_id="item_m2")],
    "mcp_list_tools.completed": [se.McpListToolsCompleted(item_id="item_m2")],
    "mcp_list_tools.failed": [se.McpListToolsFailed(item_id="item_m2")],
    "response.mcp_call_arguments.delta": [
        se.ResponseMcpCallArgumentsDelta(response_id="resp_1", item_id="item_m1", output_index=2, delta="{")
    ],
    "response.mcp_call_arguments.done": [
        se.ResponseMcpCallArgumentsDone(
            response_id="resp_1", item_id="item_m1", output_index=2, arguments="{}"
        )
    ],
    "response.mcp_call.in_progress": [se.ResponseMcpCallInProgress(item_id="item_m1", output_index=2)],
    "response.mcp_call.completed": [se.ResponseMcpCallCompleted(item_id="item_m1", output_index=2)],
    "response.mcp_call.failed": [se.ResponseMcpCallFailed(item_id="item_m1", output_index=2)],
}
for _kind in ("response.created", "response.done"):
    _model = se.ResponseCreated if _kind == "response.created" else se.ResponseDone
    GA_SAMPLES[_kind] = [_model(response=r) for r in GA_SAMPLES[_kind]]


def test_every_ga_server_event_type_has_samples() -> None:
    assert set(GA_SAMPLES) == set(se.SERVER_EVENT_TYPES)
    assert set(GA_SAMPLES) == (
        beta.UNCHANGED_SERVER_EVENTS
        | beta.DROPPED_SERVER_EVENTS
        | set(beta._RENAMED)
        | {
            "session.created",
            "session.updated",
            "error",
            "conversation.created",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.created",
            "conversation.item.retrieved",
            "conversation.item.deleted",
            "response.output_item.added",
            "response.output_item.done",
            "response.created",
            "response.done",
        }
    )


SAMPLES = [(kind, index, event) for kind, events in GA_SAMPLES.items() for index, event in enumerate(events)]


@pytest.mark.parametrize(("kind", "index", "event"), SAMPLES, ids=[f"{k}-{i}" for k, i, _ in SAMPLES])
def test_each_ga_event_becomes_valid_beta_events_or_is_dropped(kind: str, index: int, event: Any) -> None:
    GA_EVENT.validate_json(event.to_json())  # the sample is a real GA event
    shape = beta.BetaShape(conversation_id="conv_core")
    frames = shape.send(event)
    out = [validate_beta_server_event(frame) for frame in frames]
    if kind in beta.DROPPED_SERVER_EVENTS:
        assert out == []
        return
    if kind in beta.UNCHANGED_SERVER_EVENTS:
        assert out == [json.loads(event.to_json())]
    for produced in out:
        assert not produced["type"].startswith(("response.output_text", "response.output_audio", "mcp"))
        dumped = json.dumps(produced)
        for ga_only in (
            '"output_text"',
            '"output_audio"',
            '"input_image"',
            '"output_modalities"',
            '"image_tokens"',
        ):
            assert ga_only not in dumped, (ga_only, produced)


def test_renamed_events_keep_their_fields() -> None:
    shape = beta.BetaShape()
    for kind, renamed in beta._RENAMED.items():
        event = GA_SAMPLES[kind][0]
        (frame,) = shape.send(event)
        data = json.loads(frame)
        assert data == {**json.loads(event.to_json()), "type": renamed}


def test_session_shape_in_detail() -> None:
    shape = beta.BetaShape(conversation_id="conv_core", temperature=0.9)
    created = [json.loads(f) for f in shape.send(GA_SAMPLES["session.created"][0])]
    assert [e["type"] for e in created] == ["session.created", "conversation.created"]
    assert created[1]["conversation"] == {"id": "conv_core", "object": "realtime.conversation"}
    session = created[0]["session"]
    assert session == {
        "id": "sess_1",
        "object": "realtime.session",
        "expires_at": 1_700_000_000,
        "model": "gpt-realtime",
        "modalities": ["audio", "text"],
        "instructions": RealtimeSession().instructions,
        "voice": "marin",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 200,
            "create_response": True,
            "interrupt_response": True,
        },
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.9,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
        "include": None,
        "client_secret": None,
    }
    # a second session.created (never sent in practice) does not announce the conversation again
    assert [json.loads(f)["type"] for f in shape.send(GA_SAMPLES["session.created"][0])] == [
        "session.created"
    ]
    rich = json.loads(shape.send(GA_SAMPLES["session.updated"][1])[0])["session"]
    assert rich["input_audio_format"] == "g711_ulaw" and rich["output_audio_format"] == "g711_alaw"
    assert rich["voice"] == "voice_123" and rich["speed"] == 1.2
    assert rich["input_audio_transcription"] == {"model": "whisper-1", "language": "en", "prompt": None}
    assert rich["input_audio_noise_reduction"] == {"type": "near_field"}
    assert rich["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    assert rich["tools"] == [
        {"type": "function", "name": "get_weather", "description": None, "parameters": {"type": "object"}}
    ]  # the MCP tool has no beta form
    assert rich["tool_choice"] == "get_weather"
    assert rich["max_response_output_tokens"] == 300
    assert rich["model"] == "gpt-realtime"  # a deployment name the beta shape cannot carry
    idle = json.loads(shape.send(GA_SAMPLES["session.updated"][2])[0])["session"]
    assert idle["turn_detection"]["idle_timeout_ms"] == 5000
    assert json.loads(shape.send(GA_SAMPLES["session.updated"][3])[0])["session"]["turn_detection"] is None


def test_transcription_sessions_get_their_own_events() -> None:
    shape = beta.BetaShape()
    created = [json.loads(f) for f in shape.send(GA_SAMPLES["session.created"][1])]
    assert [e["type"] for e in created] == ["transcription_session.created"]  # no conversation.created
    assert created[0]["session"] == {
        "id": "sess_2",
        "object": "realtime.transcription_session",
        "expires_at": 0,
        "input_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 200,
        },
        "include": None,
        "client_secret": None,
    }
    updated = json.loads(shape.send(GA_SAMPLES["session.updated"][4])[0])
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
    assert updated["session"]["turn_detection"] is None


def test_items_are_announced_once_as_created() -> None:
    """``added`` → ``created``; the ``done`` that follows is dropped; a ``done`` for an item
    never announced (none in practice) is announced then; a deleted id may come back."""
    shape = beta.BetaShape()
    added = [
        json.loads(f)
        for f in shape.send(se.ConversationItemAdded(item=ASSISTANT_OPEN, previous_item_id="item_u1"))
    ]
    assert [e["type"] for e in added] == ["conversation.item.created"]
    assert added[0]["item"] == ASSISTANT_OPEN and added[0]["previous_item_id"] == "item_u1"
    assert shape.send(se.ConversationItemDone(item=ASSISTANT_TEXT | {"id": "item_a3"})) == []
    late = [json.loads(f) for f in shape.send(se.ConversationItemDone(item=ASSISTANT_TEXT))]
    assert late[0]["type"] == "conversation.item.created"
    assert late[0]["item"]["content"] == [{"type": "text", "text": "Hello!"}]
    assert shape.send(se.ConversationItemDeleted(item_id="item_a3"))
    assert len(shape.send(se.ConversationItemAdded(item=ASSISTANT_OPEN))) == 1
    assert shape.send(se.ConversationItemAdded(item=MCP_CALL)) == []


def test_item_and_response_shapes() -> None:
    assert beta.item_to_beta(ASSISTANT_AUDIO) == {
        **ASSISTANT_AUDIO,
        "content": [{"type": "audio", "transcript": "Hi."}],
    }
    assert beta.item_to_beta(USER_IMAGE)["content"] == [{"type": "input_text", "text": "look"}]  # type: ignore[index]
    assert beta.item_to_beta(CALL) == CALL and beta.item_to_beta(CALL_OUTPUT) == CALL_OUTPUT
    assert beta.item_to_beta(MCP_CALL) is None and beta.item_to_beta(MCP_LIST) is None
    done = beta.response_to_beta(
        GA_SAMPLES["response.done"][1].response, temperature=0.7, conversation_id="conv_beta"
    )
    assert done["modalities"] == ["audio", "text"] and done["voice"] == "ash"
    assert done["output_audio_format"] == "g711_ulaw" and done["temperature"] == 0.7
    assert done["conversation_id"] == "conv_beta" and done["max_output_tokens"] == "inf"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["content"] == [{"type": "audio", "transcript": "Hi."}]
    assert done["usage"]["input_token_details"] == {
        "text_tokens": 160,
        "audio_tokens": 20,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0},
    }
    out_of_band = beta.response_to_beta(
        GA_SAMPLES["response.created"][1].response, conversation_id="conv_beta"
    )
    assert out_of_band["conversation_id"] is None and out_of_band["modalities"] == ["text"]
    assert out_of_band["metadata"] == {"purpose": "summary"}


def test_filtered_shape_keeps_only_the_listed_types() -> None:
    shape = FilteredShape(GA_SHAPE, {"response.output_audio_transcript.delta"})
    assert shape.send(GA_SAMPLES["session.created"][0]) == []
    assert shape.send(GA_SAMPLES["response.output_audio_transcript.delta"][0]) == [
        GA_SAMPLES["response.output_audio_transcript.delta"][0].to_json()
    ]


# --------------------------------------------------------------------------- beta → GA

FULL_SESSION = {
    "model": "gpt-4o-realtime-preview",
    "modalities": ["text", "audio"],
    "instructions": "Be brief.",
    "voice": "verse",
    "input_audio_format": "g711_ulaw",
    "output_audio_format": "g711_alaw",
    "input_audio_transcription": {"model": "whisper-1", "language": "en", "prompt": "weather"},
    "input_audio_noise_reduction": {"type": "far_field"},
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": False,
    },
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "tool_choice": "get_weather",
    "temperature": 1.5,
    "max_response_output_tokens": 512,
    "speed": 1.1,
    "tracing": "auto",
}

CLIENT_SAMPLES: list[dict[str, Any]] = [
    {"type": "session.update", "session": FULL_SESSION},
    {
        "type": "session.update",
        "event_id": "evt_1",
        "session": {"modalities": ["text"], "turn_detection": None},
    },
    {
        "type": "session.update",
        "session": {"input_audio_transcription": None, "input_audio_noise_reduction": None},
    },
    {
        "type": "session.update",
        "session": {"turn_detection": {"silence_duration_ms": 800}, "tool_choice": "required"},
    },
    {"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}},
    {
        "type": "session.update",
        "session": {"max_response_output_tokens": "inf", "voice": "alloy", "tools": []},
    },
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm(200)).decode()},
    {"type": "input_audio_buffer.commit", "event_id": "evt_c"},
    {"type": "input_audio_buffer.clear"},
    {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    },
    {
        "type": "conversation.item.create",
        "item": {
            "id": "item_client",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": base64.b64encode(pcm(200)).decode()}],
        },
    },
    {
        "type": "conversation.item.create",
        "previous_item_id": "item_client",
        "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Be polite."}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{}"},
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_9", "output": '{"temp": 20}'},
    },
    {"type": "conversation.item.retrieve", "item_id": "item_client"},
    {"type": "conversation.item.delete", "item_id": "item_client"},
    {"type": "response.create"},
    {"type": "response.cancel"},
    {
        "type": "response.create",
        "event_id": "evt_r",
        "response": {
            "conversation": "none",
            "modalities": ["text"],
            "instructions": "Summarize.",
            "voice": "sage",
            "output_audio_format": "pcm16",
            "temperature": 0.7,
            "max_response_output_tokens": "inf",
            "metadata": {"purpose": "summary"},
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            "tool_choice": "none",
            "input": [
                {"type": "item_reference", "id": "item_x"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Sum up."}]},
                {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Earlier."}]},
            ],
        },
    },
    {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 10},
    {"type": "output_audio_buffer.clear"},
]


def test_client_samples_cover_every_beta_client_event() -> None:
    assert {s["type"] for s in CLIENT_SAMPLES} | {"transcription_session.update"} == set(
        beta.BETA_CLIENT_EVENTS
    )


@pytest.mark.parametrize(
    "event", CLIENT_SAMPLES, ids=[f"{s['type']}-{i}" for i, s in enumerate(CLIENT_SAMPLES)]
)
def test_each_beta_client_event_becomes_a_valid_ga_event(event: dict[str, Any]) -> None:
    BETA_CLIENT_EVENT.validate_python(event)  # the sample is a real beta event
    translated, _, _ = beta.BetaShape().client_event(event)
    ga = translated if translated is not None else event
    parsed = validate_client_event(json.loads(json.dumps(ga)))  # strict GA parsing
    assert parsed.type == (
        "session.update" if event["type"] == "transcription_session.update" else event["type"]
    )
    if "event_id" in event:
        assert parsed.event_id == event["event_id"]


def test_full_session_update_maps_every_field() -> None:
    patch, temperature, secret = beta.session_to_ga(FULL_SESSION)
    assert temperature == beta.MAX_TEMPERATURE and secret is None  # 1.5 clamped to 1.2
    assert patch == {
        "type": "realtime",
        "model": "gpt-4o-realtime-preview",
        "output_modalities": ["audio"],
        "instructions": "Be brief.",
        "tools": [FULL_SESSION["tools"][0]],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 512,
        "tracing": "auto",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "whisper-1", "language": "en", "prompt": "weather"},
                "noise_reduction": {"type": "far_field"},
                "turn_detection": FULL_SESSION["turn_detection"],
            },
            "output": {"format": {"type": "audio/pcma"}, "voice": "verse", "speed": 1.1},
        },
    }


def test_the_core_accepts_translated_events_in_a_conversation() -> None:
    """A beta client's whole conversation through the shape into a real core: no errors, and
    it sees each item once, with beta content types."""
    h = BetaHarness()
    assert [e["type"] for e in h.log] == ["session.created", "conversation.created"]
    for index, event in enumerate(CLIENT_SAMPLES[:6]):
        assert not h.errors(h.frame(json.dumps(event))), event
        session = h.log[-1]["session"]
        if index == 3:  # turn detection without a type, after it was off: server VAD
            assert session["turn_detection"]["type"] == "server_vad"
            assert session["turn_detection"]["silence_duration_ms"] == 800
    assert session["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": True,
    }
    # without a type, the current type is kept: fields of another VAD are refused
    (error,) = h.errors(h.update(turn_detection={"silence_duration_ms": 500}))
    assert error["param"] == "session.turn_detection.silence_duration_ms"
    h.update(turn_detection=None, modalities=["text"], temperature=0.9)
    assert h.log[-1]["session"]["temperature"] == 0.9
    h.send("input_audio_buffer.append", audio=base64.b64encode(pcm(300)).decode())
    committed = h.send("input_audio_buffer.commit")
    assert [e["type"] for e in committed] == ["input_audio_buffer.committed", "conversation.item.created"]
    user_audio = committed[1]["item"]
    assert user_audio["content"] == [{"type": "input_audio", "transcript": None}]
    for event in CLIENT_SAMPLES[9:15]:
        events = h.frame(json.dumps(event))
        assert [e["type"] for e in events] == ["conversation.item.created"], events
    assistant = [e for e in h.log if e["type"] == "conversation.item.created"][-4]["item"]
    assert assistant["role"] == "assistant" and assistant["content"] == [{"type": "text", "text": "Hello."}]
    retrieved = h.send("conversation.item.retrieve", item_id="item_client")
    assert retrieved[0]["type"] == "conversation.item.retrieved"
    assert retrieved[0]["item"]["content"][0]["audio"]  # audio bytes on retrieve
    assert h.send("conversation.item.delete", item_id="item_client")[0]["type"] == "conversation.item.deleted"

    # a text response with a per-response temperature, echoed in created and done
    rid = h.start_response(modalities=["text"], temperature=0.65, metadata={"k": "v"})
    created = [e for e in h.log if e["type"] == "response.created"][-1]["response"]
    assert (
        created["temperature"] == 0.65
        and created["modalities"] == ["text"]
        and created["metadata"] == {"k": "v"}
    )
    h.core.receive(TextGenerated(rid, "Sunny and warm."))
    done_events = h.finish(rid)
    types = [e["type"] for e in done_events]
    assert types == [
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
        "response.text.delta",
        "response.text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ], types
    done = done_events[-2]["response"]
    assert done["temperature"] == 0.65 and done["output"][0]["content"] == [
        {"type": "text", "text": "Sunny and warm."}
    ]
    assert done["conversation_id"] == h.core.responses.conversation_id
    # the next response uses the session's temperature again
    rid = h.start_response(modalities=["text"])
    assert [e for e in h.log if e["type"] == "response.created"][-1]["response"]["temperature"] == 0.9
    h.send("response.cancel")
    # every announced item was announced once
    ids = [e["item"]["id"] for e in h.log if e["type"] == "conversation.item.created"]
    assert len(ids) == len(set(ids))


def test_an_audio_response_in_beta_names() -> None:
    h = BetaHarness()
    h.update(modalities=["audio", "text"], output_audio_format="g711_ulaw")
    rid = h.start_response()
    h.core.receive(TextGenerated(rid, "Hello there."))
    h.core.receive(SpeechGenerated(rid, pcm_of(b"\xff" * 1600)))
    types = [e["type"] for e in h.finish(rid)]
    assert "response.audio.delta" in types and "response.audio_transcript.delta" in types
    assert "response.audio.done" in types and "response.audio_transcript.done" in types
    done = h.log[-2]["response"]
    assert done["output_audio_format"] == "g711_ulaw" and done["modalities"] == ["audio", "text"]
    assert done["output"][0]["content"][0]["type"] == "audio"


def test_a_transcription_session_through_the_beta_shape() -> None:
    h = BetaHarness(TranscriptionSession())
    assert [e["type"] for e in h.log] == ["transcription_session.created"]
    events = h.send(
        "transcription_session.update",
        event_id="evt_t",
        session={
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": None,
            "input_audio_noise_reduction": {"type": "near_field"},
            "include": ["item.input_audio_transcription.logprobs"],
            "modalities": ["text"],
        },
    )
    assert [e["type"] for e in events] == ["transcription_session.updated"]
    session = events[0]["session"]
    assert session["input_audio_transcription"] == {
        "model": "gpt-4o-transcribe",
        "language": "en",
        "prompt": None,
    }
    assert session["turn_detection"] is None and session["include"] == [
        "item.input_audio_transcription.logprobs"
    ]
    # the realtime session.update is not the way to configure it
    (error,) = h.errors(h.update(event_id="evt_w", instructions="x"))
    assert error["param"] == "type" and error["event_id"] == "evt_w"


def test_transcription_update_on_a_realtime_session_is_refused() -> None:
    h = BetaHarness()
    (error,) = h.errors(h.send("transcription_session.update", event_id="evt_t", session={}))
    assert error["param"] == "type" and error["event_id"] == "evt_t"
    assert "transcription" in error["message"]


# --------------------------------------------------------------------------- round trips

VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"]
server_vad = st.fixed_dictionaries(
    {"type": st.just("server_vad")},
    optional={
        "threshold": st.floats(0.0, 1.0),
        "prefix_padding_ms": st.integers(0, 2000),
        "silence_duration_ms": st.integers(0, 2000),
        "create_response": st.booleans(),
        "interrupt_response": st.booleans(),
    },
)
semantic_vad = st.fixed_dictionaries(
    {"type": st.just("semantic_vad")},
    optional={
        "eagerness": st.sampled_from(["low", "medium", "high", "auto"]),
        "create_response": st.booleans(),
        "interrupt_response": st.booleans(),
    },
)
names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.just("function"), "name": names},
        optional={
            "description": st.text(max_size=20),
            "parameters": st.just({"type": "object", "properties": {}}),
        },
    ),
    max_size=3,
    unique_by=lambda tool: tool["name"],
)
beta_sessions = st.fixed_dictionaries(
    {},
    optional={
        "modalities": st.sampled_from([["text"], ["audio", "text"], ["text", "audio"]]),
        "instructions": st.text(max_size=40),
        "voice": st.sampled_from(VOICES),
        "input_audio_format": st.sampled_from(list(beta.BETA_FORMATS)),
        "output_audio_format": st.sampled_from(list(beta.BETA_FORMATS)),
        "input_audio_transcription": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "model": st.sampled_from(["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]),
                "language": st.sampled_from(["en", "de", "fr"]),
                "prompt": st.text(max_size=20),
            },
        ),
        "input_audio_noise_reduction": st.none()
        | st.fixed_dictionaries({"type": st.sampled_from(["near_field", "far_field"])}),
        "turn_detection": st.none() | server_vad | semantic_vad,
        "tools": tools,
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "temperature": st.floats(0.6, 1.2),
        "max_response_output_tokens": st.integers(1, 4096) | st.just("inf"),
        "speed": st.floats(0.25, 1.5),
    },
)
OUTPUT_ONLY = ("id", "object", "expires_at", "client_secret", "model")


def expected_echo(field: str, sent: Any) -> Any:
    if field == "modalities":
        return ["text"] if sent == ["text"] else ["audio", "text"]
    if field == "input_audio_transcription" and sent is not None:
        return {"model": None, "language": None, "prompt": None, **sent}
    if field == "tools":
        return [{"description": None, "parameters": None, **tool} for tool in sent]
    return sent


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=beta_sessions)
def test_session_config_round_trip(config: dict[str, Any]) -> None:
    """What a beta client sets comes back in its beta ``session.updated`` as it was sent; and
    sending that echoed session back changes nothing (beta → GA → beta → GA is stable)."""
    h = BetaHarness()
    events = h.update(**config)
    assert not h.errors(events), (config, events)
    echoed = events[-1]["session"]
    for field, sent in config.items():
        if field == "turn_detection" and sent is not None:
            assert {k: echoed[field][k] for k in sent} == sent
        else:
            assert echoed[field] == expected_echo(field, sent), field
    again = h.update(**{k: v for k, v in echoed.items() if k not in OUTPUT_ONLY})
    assert not h.errors(again)
    assert again[-1]["session"] == echoed


@settings(max_examples=60, deadline=None)
@given(config=beta_sessions)
def test_rest_session_bodies_validate_as_the_sdk_response(config: dict[str, Any]) -> None:
    """The beta session of a ``/realtime/sessions`` answer is the SDK's ``SessionCreateResponse``."""
    patch, temperature, _ = beta.session_to_ga(config, param="")
    from openrealtime.server.sessions import build_session

    wire = build_session(patch).model_dump(mode="json", exclude_none=False)
    body = {
        **beta.session_to_beta(wire, temperature=temperature or beta.DEFAULT_TEMPERATURE),
        "client_secret": {"value": "ek_x", "expires_at": 1},
    }
    SessionCreateResponse.model_validate(body)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"voice": 5}, "invalid_type", "session.voice"),
        ({"input_audio_format": "mp3"}, "invalid_value", "session.input_audio_format"),
        ({"turn_detection": {"type": "bogus"}}, "invalid_value", "session.turn_detection.type"),
        ({"turn_detection": {"threshold": "high"}}, "invalid_type", "session.turn_detection.threshold"),
        (
            {"input_audio_transcription": {"model": "whisper-1", "lang": "en"}},
            "unknown_parameter",
            "session.input_audio_transcription.lang",
        ),
        ({"foo": 1}, "unknown_parameter", "session.foo"),
        ({"audio": {"output": {"voice": "ash"}}}, "unknown_parameter", "session.audio"),
        ({"output_modalities": ["text"]}, "unknown_parameter", "session.output_modalities"),
        (
            {"max_response_output_tokens": 5000},
            "integer_above_max_value",
            "session.max_response_output_tokens",
        ),
        ({"modalities": []}, "array_below_min_length", "session.modalities"),
        (
            {"tools": [{"type": "function", "name": "x", "strict": True}]},
            "unknown_parameter",
            "session.tools[0].strict",
        ),
        ({"temperature": "warm"}, "invalid_type", "session.temperature"),
        # these pass the beta check and are refused by the GA session: their params come back in beta terms
        ({"speed": 3.0}, "decimal_above_max_value", "session.speed"),
        (
            {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}},
            "unknown_parameter",
            "session.turn_detection.threshold",
        ),
        ({"tools": [{"name": "bad name!"}]}, "invalid_value", "session.tools[0].name"),
    ],
)
def test_errors_on_beta_input_name_beta_params(session: dict[str, Any], code: str, param: str) -> None:
    h = BetaHarness()
    events = h.update(event_id="evt_bad", **session)
    assert [e["type"] for e in events] == ["error"], events
    error = events[0]["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"], error["event_id"]) == (code, param, "evt_bad"), error
    assert "audio.output" not in error["message"] and "audio.input" not in error["message"]
    # the session goes on
    assert h.update(instructions="fine")[-1]["type"] == "session.updated"


def test_other_beta_input_errors() -> None:
    h = BetaHarness()
    (error,) = h.errors(h.send("session.create", event_id="evt_1"))
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "type", "evt_1")
    assert "'transcription_session.update'" in error["message"] and "'session.update'" in error["message"]
    (error,) = h.errors(
        h.frame(json.dumps({"type": "response.create", "response": {"modalities": ["video"]}}))
    )
    assert (error["code"], error["param"]) == ("invalid_value", "response.modalities[0]")
    (error,) = h.errors(
        h.frame(json.dumps({"type": "response.create", "response": {"max_response_output_tokens": 0}}))
    )
    assert error["param"] == "response.max_response_output_tokens"
    (error,) = h.errors(
        h.frame(
            json.dumps(
                {"type": "response.create", "response": {"voice": "nope", "output_audio_format": "wav"}}
            )
        )
    )
    assert error["param"] == "response.output_audio_format"
    (error,) = h.errors(h.frame(json.dumps({"type": "session.update"})))
    assert (error["code"], error["param"]) == ("missing_required_parameter", "session")
    (error,) = h.errors(
        h.frame(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "audio", "audio": "AAAA"}],
                    },
                }
            )
        )
    )
    assert error["param"] == "item.content[0].type"
    # frames that are not beta events are reported exactly as in GA
    assert h.errors(h.frame("{not json"))[0]["code"] == "invalid_json"
    assert h.errors(h.frame(b"\x00"))[0]["code"] == "invalid_event"
    assert h.errors(h.frame(json.dumps({"event_id": "e"})))[0]["param"] == "type"
    assert h.errors(h.frame(json.dumps({"type": "input_audio_buffer.append", "audio": "***"})))
    # and the session is still there
    assert h.update(instructions="still here")[-1]["type"] == "session.updated"


def test_a_failed_update_does_not_change_the_temperature() -> None:
    h = BetaHarness()
    h.update(temperature=0.7)
    assert h.errors(h.update(temperature=1.0, voice=5))
    assert h.errors(h.update(temperature=1.0, speed=9.0))  # refused by the GA session
    assert h.update(instructions="x")[-1]["session"]["temperature"] == 0.7


def test_param_paths_map_back_to_beta_names() -> None:
    assert beta.param_to_beta("session.audio.output.voice") == "session.voice"
    assert beta.param_to_beta("session.audio.input.turn_detection.type") == "session.turn_detection.type"
    assert (
        beta.param_to_beta("session.audio.input.transcription.model")
        == "session.input_audio_transcription.model"
    )
    assert beta.param_to_beta("response.audio.output.format.type") == "response.output_audio_format.type"
    assert beta.param_to_beta("session.audio.inputs") == "session.audio.inputs"  # not a prefix match
    assert (
        beta.param_to_beta(None) is None
        and beta.param_to_beta("item.content[0].type") == "item.content[0].type"
    )
    assert beta.error_to_beta(
        {"param": "session.audio.output.speed", "message": "Invalid 'session.audio.output.speed'."}
    ) == {
        "param": "session.speed",
        "message": "Invalid 'session.speed'.",
    }


def test_clamping_and_rest_errors() -> None:
    assert (
        beta.clamp_temperature(0.1) == 0.6
        and beta.clamp_temperature(2) == 1.2
        and beta.clamp_temperature(0.8) == 0.8
    )
    with pytest.raises(RealtimeError) as caught:
        beta.session_to_ga({"voice": 1}, param="")
    assert caught.value.param == "voice"
    _, _, secret = beta.session_to_ga(
        {"client_secret": {"expires_after": {"anchor": "created_at", "seconds": 30}}}
    )
    assert secret == {"expires_after": {"anchor": "created_at", "seconds": 30}}


def test_a_translation_bug_costs_one_event_not_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    h = BetaHarness()

    def broken(self: beta.BetaShape, data: dict[str, Any]) -> Any:
        raise KeyError("bug")

    with monkeypatch.context() as patched:
        patched.setattr(beta.BetaShape, "client_event", broken)
        (error,) = h.errors(h.update(event_id="evt_b", instructions="x"))
    assert (error["type"], error["code"], error["event_id"]) == ("server_error", "server_error", "evt_b")
    with monkeypatch.context() as patched:
        patched.setattr(beta.BetaShape, "server_event", lambda self, data: 1 / 0)
        assert h.update(instructions="y") == []  # the event is lost, the connection is not
    assert h.update(instructions="z")[-1]["session"]["instructions"] == "z"
