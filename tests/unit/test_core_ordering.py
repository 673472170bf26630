"""Stateful fuzzing of ``SessionCore``: random client events, engine results and VAD frames.

MCP is played too: session tools of type ``mcp`` (listed or failing), model calls to MCP tools
(run, failed, cancelled mid-call, or turned into approval requests) and approval responses.

A hypothesis ``RuleBasedStateMachine`` drives the core's entry points (``handle`` through the
JSON edge, ``receive``) and plays client (valid and invalid events), engines (text,
audio, tool calls, done, failed, cancel, transcripts, turn-detector answers) and VAD (speech
probabilities over the audio it appended) against one core, and checks the emitted stream
against the protocol's ordering guarantees (spec §10b rules 1-6 and 8), the reply contract of
§7 (one success reply or one ``error`` carrying the client's ``event_id``), the openai SDK's
server-event union, and that replaying ``conversation.item.added/deleted`` the way clients do
rebuilds the core's conversation.

Run longer with ``OPENREALTIME_FUZZ_EXAMPLES=2000`` (and ``OPENREALTIME_FUZZ_STEPS``).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from openrealtime.audio.formats import bytes_per_ms
from openrealtime.core.commands import CallMcpTool, ListMcpTools, PredictEndOfTurn, TranscribeItem
from openrealtime.core.events import (
    CancelRequested,
    EndOfTurnPredicted,
    GenerationFailed,
    GenerationFinished,
    IdleTimeout,
    McpCallDone,
    McpToolsFailed,
    McpToolsListed,
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
from openrealtime.core.state import ResponsePhase, TurnPhase
from openrealtime.protocol.session import RealtimeSession
from tests.json_edge import JsonCore, pcm_of

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
FRAME_MS = 32

EXAMPLES = int(os.environ.get("OPENREALTIME_FUZZ_EXAMPLES", "120"))
STEPS = int(os.environ.get("OPENREALTIME_FUZZ_STEPS", "60"))


# --------------------------------------------------------------------------- the stream checker


@dataclass
class OutItem:
    response_id: str
    default: bool
    kind: str
    phase: str = "added"
    streams: dict[str, str] = field(default_factory=dict)  # delta stream → accumulated text
    done_streams: set[str] = field(default_factory=set)
    part_type: str | None = None
    arguments: str = ""


@dataclass
class Resp:
    default: bool
    items: list[str] = field(default_factory=list)
    current: str | None = None


_DELTA_STREAM = {
    "response.output_text.delta": "text",
    "response.output_audio.delta": "audio",
    "response.output_audio_transcript.delta": "transcript",
}
_DONE_STREAM = {
    "response.output_text.done": "text",
    "response.output_audio.done": "audio",
    "response.output_audio_transcript.done": "transcript",
}
_SUCCESS_REPLY: dict[str, list[str]] = {
    "session.update": ["session.updated"],
    "input_audio_buffer.append": [],
    "input_audio_buffer.commit": [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ],
    "input_audio_buffer.clear": ["input_audio_buffer.cleared"],
    "conversation.item.create": ["conversation.item.added", "conversation.item.done"],
    "conversation.item.retrieve": ["conversation.item.retrieved"],
    "conversation.item.truncate": ["conversation.item.truncated"],
    "conversation.item.delete": ["conversation.item.deleted"],
    "response.create": ["response.created"],
}
_MCP_LISTING_START = ["conversation.item.added", "mcp_list_tools.in_progress"]
_MCP_CALL_START = {
    "response.output_item.added",
    "conversation.item.added",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.failed",
    "conversation.item.done",
    "response.output_item.done",
}


class StreamChecker:
    """Checks every emitted event, in order, against the protocol's guarantees."""

    def __init__(self) -> None:
        self.count = 0
        self.event_ids: set[str] = set()
        self.open: dict[str, Resp] = {}
        self.closed: set[str] = set()
        self.items: dict[str, OutItem] = {}
        self.oob_items: set[str] = set()
        self.conversation: set[str] = set()
        self.order: list[str] = []  # the conversation as a client rebuilds it from the events
        self.turn: tuple[str, str] | None = None  # (phase, item_id) of the committed-turn sequence
        self.transcription_on = False
        self.list_items: set[str] = set()
        self.broken = False  # set once a check failed: later events prove nothing

    # ---- helpers

    def _response_id(self, event: dict[str, Any]) -> str | None:
        if event["type"] in ("response.created", "response.done"):
            return str(event["response"]["id"])
        rid = event.get("response_id")
        return str(rid) if rid is not None else None

    def _item(self, item_id: str, *phases: str) -> OutItem:
        item = self.items.get(item_id)
        assert item is not None, f"event for an output item never added: {item_id}"
        assert item.phase in phases, f"{item_id} is in phase {item.phase}, expected one of {phases}"
        return item

    def feed(self, events: list[dict[str, Any]], client_event: dict[str, Any] | None) -> None:
        try:
            for event in events:
                self.check(event, client_event)
                self.count += 1
            if client_event is not None:
                self.check_reply(events, client_event)
        except BaseException:
            self.broken = True
            raise

    # ---- §7 / rule 8: every client event gets its reply (or one error), at once

    def check_reply(self, events: list[dict[str, Any]], client_event: dict[str, Any]) -> None:
        kinds = [e["type"] for e in events]
        kind = client_event.get("type")
        if "error" in kinds:
            assert kinds == ["error"], f"{kind}: an error must be the only reply, got {kinds}"
            return
        if kind == "response.cancel":
            assert kinds[-2:] == ["response.done", "rate_limits.updated"], kinds
            assert events[-2]["response"]["status"] == "cancelled"
            assert events[-2]["response"]["status_details"]["reason"] == "client_cancelled"
            return
        assert isinstance(kind, str) and kind in _SUCCESS_REPLY, f"{kind} should have failed: {kinds}"
        if kind == "session.update":  # then one tools listing per new or changed MCP server
            rest = kinds[1:]
            assert kinds[:1] == ["session.updated"] and rest == _MCP_LISTING_START * (len(rest) // 2), kinds
            return
        if kind == "response.create":  # approved MCP calls start at once
            assert kinds[:1] == ["response.created"] and set(kinds[1:]) <= _MCP_CALL_START, kinds
            return
        assert kinds == _SUCCESS_REPLY[kind], f"{kind}: {kinds}"

    # ---- per event

    def check(self, event: dict[str, Any], client_event: dict[str, Any] | None) -> None:
        kind = event["type"]
        # rule 1
        assert (self.count == 0) == (kind == "session.created"), "session.created must come first, once"
        assert event["event_id"] not in self.event_ids, "event ids must be unique"
        self.event_ids.add(event["event_id"])

        if kind == "error":
            expected = client_event.get("event_id") if client_event is not None else None
            if not isinstance(expected, str):
                expected = None
            assert event["error"]["event_id"] == expected, event
        elif kind in ("session.created", "session.updated"):
            self.transcription_on = event["session"]["audio"]["input"]["transcription"] is not None

        self._check_turn(event)

        rid = self._response_id(event)
        if rid is not None:
            self._check_response_event(event, rid)
        elif kind.startswith("response.mcp_call."):
            self._check_mcp_call_state(event)
        elif kind.startswith("mcp_list_tools."):
            assert event["item_id"] in self.list_items, f"{kind} for an unknown listing"
        elif kind.startswith("conversation.item."):
            self._check_conversation_event(event, client_event)

    # ---- rule 6: speech_started → speech_stopped → committed → item.added → item.done

    def _check_turn(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        turn = self.turn
        if turn is not None and turn[0] in ("stopped", "committed", "added"):
            expect = {
                "stopped": "input_audio_buffer.committed",
                "committed": "conversation.item.added",
                "added": "conversation.item.done",
            }[turn[0]]
            assert kind == expect, f"after {turn[0]} of {turn[1]} expected {expect}, got {kind}"
            got = event.get("item_id") or event.get("item", {}).get("id")
            assert got == turn[1], f"{kind} is for {got}, the turn is {turn[1]}"
            self.turn = {"stopped": ("committed", turn[1]), "committed": ("added", turn[1])}.get(turn[0])
            return
        if kind == "input_audio_buffer.speech_started":
            assert event["audio_start_ms"] >= 0
            self.turn = ("started", event["item_id"])
        elif kind == "input_audio_buffer.speech_stopped":
            assert turn == ("started", event["item_id"]), f"speech_stopped without its start: {turn}"
            assert event["audio_end_ms"] >= 0
            self.turn = ("stopped", event["item_id"])
        elif kind == "input_audio_buffer.timeout_triggered":
            assert 0 <= event["audio_start_ms"] <= event["audio_end_ms"]
            self.turn = ("stopped", event["item_id"])
        elif kind == "input_audio_buffer.committed":
            self.turn = ("committed", event["item_id"])
        elif kind == "input_audio_buffer.cleared":
            self.turn = None

    # ---- rules 2-5

    def _check_response_event(self, event: dict[str, Any], rid: str) -> None:
        kind = event["type"]
        if kind == "response.created":
            assert rid not in self.open and rid not in self.closed, "response.created twice"
            response = event["response"]
            assert response["status"] == "in_progress" and response["output"] == []
            assert response["usage"] is None
            default = response["conversation_id"] is not None
            if default:
                others = [r for r, s in self.open.items() if s.default]
                assert not others, f"rule 5: {rid} created while {others} is in progress"
            self.open[rid] = Resp(default=default)
            return
        assert rid in self.open, f"rule 2: {kind} for {rid}, which is not in progress"
        resp = self.open[rid]
        if kind == "response.done":
            assert resp.current is None, f"response.done with output item {resp.current} still open"
            response = event["response"]
            assert response["status"] in ("completed", "cancelled", "incomplete", "failed")
            assert [o["id"] for o in response["output"]] == resp.items
            for out in response["output"]:
                assert out["status"] in ("completed", "incomplete"), out
            self._check_usage(response["usage"])
            del self.open[rid]
            self.closed.add(rid)
            return
        if kind == "response.output_item.added":
            assert resp.current is None, "rule 3: output items must not interleave"
            assert event["output_index"] == len(resp.items), "rule 3: items in output_index order"
            item = event["item"]
            assert item["status"] == "in_progress"
            assert item["id"] not in self.items
            self.items[item["id"]] = OutItem(response_id=rid, default=resp.default, kind=item["type"])
            if not resp.default:
                self.oob_items.add(item["id"])
            resp.items.append(item["id"])
            resp.current = item["id"]
            return
        if kind == "response.output_item.done":
            item_id = event["item"]["id"]
            assert resp.current == item_id, "rule 3: output_item.done for an item that is not open"
            out = self.items[item_id]
            ready = "conv_done" if out.default else _ITEM_READY[out.kind]
            self._item(item_id, ready)
            assert event["item"]["status"] in ("completed", "incomplete")
            out.phase = "done"
            resp.current = None
            return
        item_id = event["item_id"]
        assert resp.current == item_id, f"rule 3: {kind} for {item_id} while {resp.current} is open"
        out = self.items[item_id]
        start = "conv_added" if out.default else "added"
        if kind == "response.content_part.added":
            out = self._item(item_id, start, "part_done")
            out.phase = "part_open"
            out.part_type = event["part"]["type"]
            out.streams = {}
            out.done_streams = set()
        elif kind in _DELTA_STREAM:
            out = self._item(item_id, "part_open")
            stream = _DELTA_STREAM[kind]
            assert stream not in out.done_streams, f"rule 4: {kind} after its done"
            out.streams[stream] = out.streams.get(stream, "") + event["delta"]
        elif kind in _DONE_STREAM:
            out = self._item(item_id, "part_open")
            stream = _DONE_STREAM[kind]
            assert stream not in out.done_streams, f"{kind} twice"
            out.done_streams.add(stream)
            if stream == "text":
                assert event["text"] == out.streams.get("text", "")
            elif stream == "transcript":
                assert event["transcript"] == out.streams.get("transcript", "")
        elif kind == "response.content_part.done":
            out = self._item(item_id, "part_open")
            needed = {"text"} if out.part_type == "text" else {"audio", "transcript"}
            assert set(out.streams) <= out.done_streams, "rule 4: a delta stream without its done"
            assert needed <= out.done_streams, f"part done without {needed - out.done_streams}"
            assert event["part"]["type"] == out.part_type
            out.phase = "part_done"
        elif kind in ("response.function_call_arguments.delta", "response.mcp_call_arguments.delta"):
            out = self._item(item_id, start, "args")
            out.phase = "args"
            out.arguments += event["delta"]
        elif kind in ("response.function_call_arguments.done", "response.mcp_call_arguments.done"):
            out = self._item(item_id, start, "args")
            assert event["arguments"] == out.arguments, "arguments.done must equal the deltas"
            out.phase = "args_done"
        else:
            raise AssertionError(f"unexpected event with a response_id: {kind}")

    def _check_mcp_call_state(self, event: dict[str, Any]) -> None:
        """``response.mcp_call.*`` carry no response_id: the call must be its response's open item."""
        item_id = event["item_id"]
        out = self.items.get(item_id)
        assert out is not None and out.kind == "mcp_call", f"{event['type']} for {item_id}"
        resp = self.open.get(out.response_id)
        assert resp is not None and resp.current == item_id, f"{event['type']} outside its response"
        if event["type"] == "response.mcp_call.in_progress":
            self._item(item_id, "args_done").phase = "calling"
        else:
            self._item(item_id, "calling").phase = "called"

    def _check_usage(self, usage: dict[str, Any]) -> None:
        inp, out = usage["input_token_details"], usage["output_token_details"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["input_tokens"] == inp["text_tokens"] + inp["audio_tokens"] + inp["image_tokens"]
        assert usage["output_tokens"] == out["text_tokens"] + out["audio_tokens"]
        assert 0 <= inp["cached_tokens"] <= usage["input_tokens"]
        assert all(v >= 0 for v in (*inp.values(), *out.values()) if isinstance(v, int))

    def _replay(self, event: dict[str, Any]) -> None:
        """Place or remove an item the way clients do: after ``previous_item_id`` (None: first)."""
        item_id = event.get("item_id") or event["item"]["id"]
        if event["type"] == "conversation.item.deleted":
            assert item_id in self.order, f"deleted {item_id}, which was never added"
            self.order.remove(item_id)
            return
        assert item_id not in self.order, f"{item_id} added twice"
        previous = event["previous_item_id"]
        assert previous is None or previous in self.order, f"previous_item_id {previous} is unknown"
        self.order.insert(0 if previous is None else self.order.index(previous) + 1, item_id)

    def _check_conversation_event(self, event: dict[str, Any], client_event: dict[str, Any] | None) -> None:
        kind = event["type"]
        item_id = event.get("item_id") or event["item"]["id"]
        if kind in ("conversation.item.added", "conversation.item.deleted"):
            self._replay(event)
        by_client = client_event is not None and client_event.get("type") in (
            "conversation.item.create",
            "input_audio_buffer.commit",
        )
        if not by_client:
            assert item_id not in self.oob_items, f"{kind} for an out-of-band response's item"
        if (
            kind in ("conversation.item.added", "conversation.item.done")
            and item_id in self.items
            and not by_client
        ):
            out = self.items[item_id]
            resp = self.open.get(out.response_id)
            assert resp is not None and resp.current == item_id, f"{kind} outside its response"
            if kind == "conversation.item.added":
                self._item(item_id, "added").phase = "conv_added"
                self.conversation.add(item_id)
            else:
                ready = "conv_added" if out.kind == "mcp_approval_request" else _ITEM_READY[out.kind]
                self._item(item_id, ready).phase = "conv_done"
            return
        if kind == "conversation.item.added":
            self.conversation.add(item_id)
            if event["item"]["type"] == "mcp_list_tools":
                self.list_items.add(item_id)
        elif kind == "conversation.item.deleted":
            self.conversation.discard(item_id)
        elif kind.startswith("conversation.item.input_audio_transcription."):
            # rule 7, and only when transcription is configured
            assert self.transcription_on, f"{kind} while audio.input.transcription is null"
            assert item_id in self.conversation, f"{kind} for an item not (or no longer) added"


_ITEM_READY = {
    "message": "part_done",
    "function_call": "args_done",
    "mcp_call": "called",
    "mcp_approval_request": "added",
}
"""The phase an output item of an out-of-band response is in just before ``output_item.done``
(default-conversation items are in ``conv_done``)."""


# --------------------------------------------------------------------------- strategies

PROBS = st.sampled_from([0.0, 0.0, 0.2, 0.45, 0.6, 0.9, 1.0])
FORMATS = st.sampled_from(
    [{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}, {"type": "audio/pcma"}]
)
VOICES = st.sampled_from(["alloy", "ash", "marin"])
TOOLS = st.sampled_from([[], [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]])
MCP_SHOP = {"type": "mcp", "server_label": "shop", "server_url": "https://mcp.example.com/mcp"}
SESSION_TOOLS = st.one_of(
    TOOLS,
    st.sampled_from(
        [
            [MCP_SHOP],
            [{**MCP_SHOP, "require_approval": "never"}],
            [{**MCP_SHOP, "require_approval": {"never": {"tool_names": ["get_order_status"]}}}],
            [
                {"type": "function", "name": "get_weather"},
                {**MCP_SHOP, "allowed_tools": ["get_order_status"]},
            ],
        ]
    ),
)
MCP_LISTED = [
    {"name": "get_order_status", "input_schema": {"type": "object"}, "description": "Status."},
    {"name": "cancel_order", "input_schema": {"type": "object"}},
]
TOOL_CHOICE = st.sampled_from(["auto", "none", "required", {"type": "function", "name": "get_weather"}])

SERVER_VAD = st.fixed_dictionaries(
    {"type": st.just("server_vad")},
    optional={
        "create_response": st.booleans(),
        "interrupt_response": st.booleans(),
        "silence_duration_ms": st.sampled_from([0, 100, 200, 500]),
        "prefix_padding_ms": st.sampled_from([0, 300]),
        "threshold": st.sampled_from([0.3, 0.5, 0.8]),
        "idle_timeout_ms": st.sampled_from([None, 5000]),
    },
)
SEMANTIC_VAD = st.fixed_dictionaries(
    {"type": st.just("semantic_vad")},
    optional={
        "eagerness": st.sampled_from(["low", "high", "auto"]),
        "create_response": st.booleans(),
        "interrupt_response": st.booleans(),
    },
)
TURN_DETECTION = st.one_of(
    st.none(),
    SERVER_VAD,
    SERVER_VAD,
    SEMANTIC_VAD,
    # no type: merges into the current detector (an error when detection is off)
    st.fixed_dictionaries(
        {}, optional={"create_response": st.booleans(), "interrupt_response": st.booleans()}
    ),
)
AUDIO_PATCH = st.fixed_dictionaries(
    {},
    optional={
        "input": st.fixed_dictionaries(
            {},
            optional={
                "turn_detection": TURN_DETECTION,
                "transcription": st.sampled_from([None, {"model": "whisper-1"}]),
                "format": FORMATS,
                "noise_reduction": st.sampled_from([None, {"type": "near_field"}]),
            },
        ),
        "output": st.fixed_dictionaries(
            {}, optional={"voice": VOICES, "format": FORMATS, "speed": st.sampled_from([1.0, 1.4])}
        ),
    },
)
VALID_SESSION_PATCH = st.fixed_dictionaries(
    {"type": st.just("realtime")},
    optional={
        "instructions": st.sampled_from(["", "Be brief."]),
        "output_modalities": st.sampled_from([["audio"], ["text"]]),
        "tools": SESSION_TOOLS,
        "tool_choice": TOOL_CHOICE,
        "max_output_tokens": st.sampled_from([1, 100, "inf"]),
        "model": st.just("gpt-realtime-2.1"),
        "audio": AUDIO_PATCH,
    },
)
INVALID_SESSION_PATCH = st.sampled_from(
    [
        {"instructions": "no type"},
        {"type": "transcription"},
        {"type": "realtime", "voice": "ash"},
        {"type": "realtime", "bogus": 1},
        {"type": "realtime", "audio": None},
        {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "magic_vad"}}}},
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}},
        },
        {"type": "realtime", "audio": {"output": {"speed": 2.0}}},
        {"type": "realtime", "output_modalities": ["video"]},
        {"type": "realtime", "max_output_tokens": 0},
        {"type": "realtime", "tool_choice": "maybe"},
        {"type": "realtime", "tools": [{"type": "function", "name": "bad name!"}]},
        {
            "type": "realtime",
            "tools": [{"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"}],
        },
        {"type": "realtime", "tools": [MCP_SHOP, MCP_SHOP]},
        {"type": "realtime", "audio": {"input": {"transcription": {"model": "x", "bogus": 1}}}},
    ]
)
TRANSCRIPTION_PATCH = st.sampled_from(
    [
        {"type": "realtime", "audio": {"input": {"transcription": value}}}
        for value in (None, {"model": "whisper-1"})
    ]
)
TRACING_PATCH = st.sampled_from(
    [{"type": "realtime", "tracing": value} for value in (None, "auto", {"workflow_name": "w"})]
)  # once enabled, tracing is locked: kept rare so that most updates can still succeed
SESSION_PATCH = st.one_of(
    VALID_SESSION_PATCH,
    VALID_SESSION_PATCH,
    VALID_SESSION_PATCH,
    INVALID_SESSION_PATCH,
    TRACING_PATCH,
    TRANSCRIPTION_PATCH,
)
VALID_RESPONSE = st.fixed_dictionaries(
    {},
    optional={
        "conversation": st.sampled_from(["auto", "none", "none"]),
        "output_modalities": st.sampled_from([["audio"], ["text"]]),
        "instructions": st.just("Answer."),
        "metadata": st.sampled_from([None, {"purpose": "test"}]),
        "max_output_tokens": st.sampled_from([1, 50, "inf"]),
        "tools": TOOLS,
        "tool_choice": TOOL_CHOICE,
        "audio": st.fixed_dictionaries(
            {"output": st.fixed_dictionaries({}, optional={"voice": VOICES, "format": FORMATS})}
        ),
    },
)
INVALID_RESPONSE = st.sampled_from(
    [
        {"output_modalities": ["audio", "text"]},
        {"max_output_tokens": 0},
        {"tools": [{"type": "mcp", "server_label": "x", "server_url": "http://x"}]},
        {"tool_choice": "maybe"},
        {"input": [{"type": "bogus"}]},
        {"conversation": "none", "input": [{"type": "item_reference", "id": "item_unknown"}]},
        {"temperature": 0.5},
    ]
)
USER_TEXT = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}
VALID_ITEMS = [
    USER_TEXT,
    USER_TEXT,
    {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": base64.b64encode(b"\0\1" * 2400).decode()}],
    },
    {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
    {"type": "function_call", "name": "get_weather", "arguments": "{}", "call_id": "call_c1"},
]
INVALID_ITEMS = [
    {"type": "message", "role": "assistant", "content": [{"type": "output_audio"}]},
    {"type": "message", "content": []},
    {"type": "item_reference", "id": "item_x"},
    {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "%%"}]},
    {"type": "mcp_approval_response", "approval_request_id": "a", "approve": True},
]
GARBAGE = st.sampled_from(
    [
        "{",
        "[]",
        "null",
        '{"type": 5}',
        '{"event_id": "g1"}',
        '{"type": "response.explode", "event_id": "g2"}',
        '{"type": "response.create", "event_id": "g3", "response": {"output_modalities": ["audio", "text"]}}',
        '{"type": "conversation.item.truncate", "event_id": "g4", "item_id": "x", "content_index": -1, "audio_end_ms": 0}',
        '{"type": "input_audio_buffer.append", "event_id": "g5"}',
        '{"type": "output_audio_buffer.clear", "event_id": "g6"}',
        '{"type": "response.cancel", "event_id": 7}',
        b"\x00\x01",
    ]
)


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = JsonCore(
            SessionCore(RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0)
        )
        self.checker = StreamChecker()
        self.client_seq = 0
        self.item_ids: list[str] = []
        self.call_ids: list[str] = ["call_unknown"]
        self.finished: list[str] = []
        self.pending_eot: list[int] = []
        self.vad_end_ms = 0.0
        """Where the VAD's last frame ended: a G.711 edge holds back its last 4 ms until the
        next append, so the VAD may run a little ahead of the core's buffer, never back."""
        self.transcribing: list[str] = []  # items the runtime was asked to transcribe
        self.listings: list[str] = []  # mcp_list_tools items the runtime was asked to fill
        self.mcp_calls: list[tuple[str, str]] = []  # (response id, mcp_call item id) running
        self.approval_ids: list[str] = ["mcpr_unknown"]
        self.core.start()
        self._drain(None)

    # ---- plumbing

    def _drain(self, client_event: dict[str, Any] | None) -> list[dict[str, Any]]:
        events = []
        for event in self.core.take_events():
            raw = event.to_json()
            SERVER_EVENT.validate_json(raw)
            events.append(json.loads(raw))
        for command in self.core.take_commands():
            if isinstance(command, PredictEndOfTurn):
                self.pending_eot.append(command.request_id)
            elif isinstance(command, TranscribeItem):
                self.transcribing.append(command.item_id)
            elif isinstance(command, ListMcpTools):
                self.listings.append(command.item_id)
            elif isinstance(command, CallMcpTool):
                self.mcp_calls.append((command.response_id, command.item_id))
        self.checker.feed(events, client_event)
        for event in events:
            item = event.get("item")
            if isinstance(item, dict) and item.get("id") and item["id"] not in self.item_ids:
                self.item_ids.append(item["id"])
            if isinstance(item, dict) and item.get("call_id") and item["call_id"] not in self.call_ids:
                self.call_ids.append(item["call_id"])
            is_request = isinstance(item, dict) and item.get("type") == "mcp_approval_request"
            if is_request and item["id"] not in self.approval_ids:
                self.approval_ids.append(item["id"])
            if event["type"] == "response.done":
                self.finished.append(event["response"]["id"])
        return events

    def _send(self, event: dict[str, Any], with_id: bool = True) -> list[dict[str, Any]]:
        self.client_seq += 1
        if with_id:
            event = {"event_id": f"evt_{self.client_seq}", **event}
        self.core.handle(json.dumps(event))
        return self._drain(event)

    def _pick_item(self, data: st.DataObject) -> str:
        """Mostly an item in the conversation; sometimes a deleted, out-of-band or unknown one."""
        ids = self.core.conversation.ids()
        other = data.draw(st.sampled_from([*self.item_ids, "item_unknown"]))
        return data.draw(st.sampled_from([*ids[-4:], *ids[-4:], other] if ids else [other]))

    def _assistant_items(self) -> list[str]:
        return [i["id"] for i in self.core.conversation.items() if i.get("role") == "assistant"]

    def _live(self) -> list[str]:
        return list(self.core.responses.live)  # creation order: deterministic, unlike the random ids

    def _bytes_per_ms(self) -> int:
        return bytes_per_ms(self.core.session.audio.input.format.type)

    # ---- client events

    @rule(patch=SESSION_PATCH, with_id=st.booleans())
    def session_update(self, patch: dict[str, Any], with_id: bool) -> None:
        self._send({"type": "session.update", "session": patch}, with_id)

    @rule(data=st.data())
    def item_create(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.call_ids))
        output = {"type": "function_call_output", "call_id": call_id, "output": "{}"}
        approval = {
            "type": "mcp_approval_response",
            "approval_request_id": data.draw(st.sampled_from(self.approval_ids[-3:])),
            "approve": data.draw(st.booleans()),
        }
        item = data.draw(
            st.sampled_from(
                [*VALID_ITEMS, output, output, approval, data.draw(st.sampled_from(INVALID_ITEMS))]
            )
        )
        ids = self.core.conversation.ids()
        own_id = data.draw(st.sampled_from([None, None, None, "item_c1", "item_c2", *ids[-2:]]))
        if own_id is not None:
            item = {**item, "id": own_id}
        event: dict[str, Any] = {"type": "conversation.item.create", "item": item}
        previous = data.draw(st.sampled_from([None, None, None, "root", "item_unknown", *ids[-3:]]))
        if previous is not None:
            event["previous_item_id"] = previous
        self._send(event)

    @rule(data=st.data())
    def item_retrieve(self, data: st.DataObject) -> None:
        self._send({"type": "conversation.item.retrieve", "item_id": self._pick_item(data)})

    @rule(data=st.data())
    def item_delete(self, data: st.DataObject) -> None:
        self._send({"type": "conversation.item.delete", "item_id": self._pick_item(data)})

    @rule(data=st.data(), content_index=st.sampled_from([0, 0, 0, 1]))
    def item_truncate(self, data: st.DataObject, content_index: int) -> None:
        """Mostly assistant audio the client played part of; sometimes anything else."""
        spoken = [i for i in self._assistant_items() if (i, 0) in self.core.conversation.audio]
        item_id = data.draw(
            st.sampled_from([*spoken, *spoken, *self._assistant_items(), self._pick_item(data)])
        )
        track = self.core.conversation.audio.get((item_id, 0))
        length = track.duration_ms if track is not None else 100
        audio_end_ms = data.draw(st.sampled_from([0, length // 3, length // 2, length, length + 1]))
        self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )

    @rule(data=st.data(), with_id=st.booleans())
    def response_create(self, data: st.DataObject, with_id: bool) -> None:
        params = dict(data.draw(st.one_of(VALID_RESPONSE, VALID_RESPONSE, VALID_RESPONSE, INVALID_RESPONSE)))
        if data.draw(st.booleans()):
            reference = {"type": "item_reference", "id": self._pick_item(data)}
            params["input"] = data.draw(st.lists(st.sampled_from([reference, USER_TEXT]), max_size=3))
        self._send({"type": "response.create", **({"response": params} if params else {})}, with_id)

    @rule(data=st.data())
    def response_cancel(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from([None, "resp_unknown", *self._live(), *self.finished[-2:]]))
        self._send({"type": "response.cancel", **({"response_id": target} if target else {})})

    @rule(kind=st.sampled_from(["valid", "valid", "odd", "invalid", "empty"]), frames=st.integers(1, 8))
    def append(self, kind: str, frames: int) -> None:
        data = {
            "valid": b"\0\1" * (self._bytes_per_ms() * FRAME_MS * frames // 2),
            "odd": b"\0" * 3,
            "empty": b"",
        }.get(kind)
        audio = base64.b64encode(data).decode() if data is not None else "not*base64"
        self._send({"type": "input_audio_buffer.append", "audio": audio})

    @rule()
    def commit(self) -> None:
        self._send({"type": "input_audio_buffer.commit"})

    @rule()
    def clear(self) -> None:
        self._send({"type": "input_audio_buffer.clear"})

    @rule(frame=GARBAGE)
    def garbage(self, frame: str | bytes) -> None:
        self.client_seq += 1
        self.core.handle(frame)
        event_id = None
        if isinstance(frame, str):
            try:
                parsed = json.loads(frame)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                event_id = parsed.get("event_id")
        events = self._drain({"type": "garbage", "event_id": event_id})
        assert [e["type"] for e in events] == ["error"]

    # ---- VAD and turn detection

    @rule(probs=st.lists(PROBS, min_size=1, max_size=30), speech=st.booleans())
    def speak(self, probs: list[float], speech: bool) -> None:
        """The runtime appends audio and runs the VAD over exactly that audio."""
        if speech:  # a run of speech followed by silence, most likely to make a turn
            probs = [0.9] * len(probs) + [0.0] * 12
        start = max(self.core.input.total_ms, self.vad_end_ms)
        self.vad_end_ms = start + len(probs) * FRAME_MS
        self._send(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(
                    b"\0\1" * (self._bytes_per_ms() * FRAME_MS * len(probs) // 2)
                ).decode(),
            }
        )
        frames: list[tuple[float, float, float, float | None]] = [
            (p, start + i * FRAME_MS, start + (i + 1) * FRAME_MS, None) for i, p in enumerate(probs)
        ]
        self.core.receive(SpeechProbabilities(tuple(VadFrame(*frame) for frame in frames)))
        self._drain(None)

    @precondition(lambda self: bool(self.pending_eot))
    @rule(probability=st.sampled_from([0.0, 0.4, 0.99]))
    def end_of_turn(self, probability: float) -> None:
        self.core.receive(EndOfTurnPredicted(self.pending_eot.pop(0), probability))
        self._drain(None)

    @rule()
    def idle_timeout(self) -> None:
        self.core.receive(IdleTimeout())
        self._drain(None)

    @precondition(lambda self: bool(self.transcribing))
    @rule(data=st.data(), which=st.sampled_from(["delta", "completed", "failed"]))
    def transcription(self, data: st.DataObject, which: str) -> None:
        """Transcripts arrive for committed audio, possibly after the item was deleted."""
        item_id = data.draw(st.sampled_from(self.transcribing[-3:]))
        if which == "delta":
            self.core.receive(TranscriptDelta(item_id, "he"))
        elif which == "completed":
            usage = {"type": "duration", "seconds": 1.0}
            self.core.receive(TranscriptCompleted(item_id, "hello", usage))
        else:
            self.core.receive(TranscriptFailed(item_id, "could not transcribe"))
        self._drain(None)

    # ---- engine results for live responses

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data(), text=st.sampled_from(["Hi", " there", "!", ""]))
    def engine_text(self, data: st.DataObject, text: str) -> None:
        self.core.receive(TextGenerated(data.draw(st.sampled_from(self._live())), text))
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data(), n=st.sampled_from([0, 1, 480, 4800]))
    def engine_audio(self, data: st.DataObject, n: int) -> None:
        self.core.receive(SpeechGenerated(data.draw(st.sampled_from(self._live())), pcm_of(b"\0" * n)))
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(
        data=st.data(),
        arguments=st.sampled_from(["", "{}", '{"city": "Paris", "unit": "celsius", "days": 3}']),
        name=st.sampled_from(["get_weather", "get_weather", "get_order_status", "cancel_order"]),
    )
    def engine_function_call(self, data: st.DataObject, arguments: str, name: str) -> None:
        """A call to a function, or to an MCP tool (run, or held for approval)."""
        rid = data.draw(st.sampled_from(self._live()))
        self.core.chat_request(rid)  # the runtime reads the request before the model runs
        self.core.receive(ToolCalled(rid, name, f"call_{len(self.call_ids)}", arguments))
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data())
    def engine_build_request(self, data: st.DataObject) -> None:
        """The runtime reads the request (this is when MCP tools are offered to the model)."""
        request = self.core.chat_request(data.draw(st.sampled_from(self._live())))
        assert request is not None
        for index, message in enumerate(request.messages):
            if message.tool_calls:  # every call answered right after, in order
                answers = request.messages[index + 1 : index + 1 + len(message.tool_calls)]
                assert [m.tool_call_id for m in answers] == [c.call_id for c in message.tool_calls]
            if message.role == "tool":
                before = request.messages[index - 1]
                assert index > 0 and (before.role == "tool" or before.tool_calls), request.messages
        self._drain(None)

    @rule(approval=st.sampled_from(["never", "always", {"never": {"tool_names": ["get_order_status"]}}]))
    def configure_mcp(self, approval: Any) -> None:
        """An MCP server whose tools are listed right away (the usual case)."""
        self._send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "tools": [{**MCP_SHOP, "require_approval": approval}]},
            }
        )
        for item_id in self.listings:
            self.core.receive(McpToolsListed(item_id, tuple(MCP_LISTED)))
        self.listings.clear()
        self._drain(None)

    @precondition(lambda self: bool(self.listings))
    @rule(data=st.data(), ok=st.sampled_from([True, True, True, False]))
    def mcp_listed(self, data: st.DataObject, ok: bool) -> None:
        item_id = data.draw(st.sampled_from(self.listings))
        self.listings.remove(item_id)
        if ok:
            self.core.receive(McpToolsListed(item_id, tuple(MCP_LISTED)))
        else:
            self.core.receive(McpToolsFailed(item_id, "mcp_server_unreachable", "down"))
        self._drain(None)

    @precondition(lambda self: bool(self.mcp_calls))
    @rule(data=st.data(), ok=st.sampled_from([True, True, False]))
    def mcp_call_result(self, data: st.DataObject, ok: bool) -> None:
        """Results also arrive for calls whose response was cancelled meanwhile (dropped)."""
        rid, item_id = data.draw(st.sampled_from(self.mcp_calls))
        self.mcp_calls.remove((rid, item_id))
        error = None if ok else {"type": "tool_execution_error", "message": "boom"}
        self.core.receive(McpCallDone(rid, item_id, "ok" if ok else None, error))
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data(), call=st.booleans(), reason=st.sampled_from(["stop", "length"]))
    def engine_complete(self, data: st.DataObject, call: bool, reason: str) -> None:
        """A whole answer at once: words with their speech, maybe a tool call, then done."""
        rid = data.draw(st.sampled_from(self._live()))
        for text in ("Hello", " there", "."):
            self.core.receive(TextGenerated(rid, text))
            self.core.receive(SpeechGenerated(rid, pcm_of(b"\0" * 4800)))
        if call:
            self.core.receive(ToolCalled(rid, "get_weather", f"call_{len(self.call_ids)}", "{}"))
        self.core.receive(
            GenerationFinished(rid, reason, prompt_tokens=20, cached_tokens=0, completion_tokens=3)
        )
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data())
    def engine_prompt(self, data: st.DataObject) -> None:
        self.core.receive(PromptRead(data.draw(st.sampled_from(self._live())), 30, 40))
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data(), reason=st.sampled_from(["stop", "length", "tool_calls"]))
    def engine_done(self, data: st.DataObject, reason: str) -> None:
        rid = data.draw(st.sampled_from(self._live()))
        self.core.receive(
            GenerationFinished(rid, reason, prompt_tokens=20, cached_tokens=25, completion_tokens=4)
        )
        events = self._drain(None)
        done = [e for e in events if e["type"] == "response.done"]
        assert len(done) == 1 and done[0]["response"]["id"] == rid
        expected = "incomplete" if reason == "length" else "completed"
        assert done[0]["response"]["status"] == expected

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data())
    def engine_failed(self, data: st.DataObject) -> None:
        self.core.receive(GenerationFailed(data.draw(st.sampled_from(self._live())), "engine_error", "boom"))
        self._drain(None)

    @precondition(lambda self: bool(self.core.responses.live))
    @rule(data=st.data(), reason=st.sampled_from(["client_cancelled", "turn_detected"]))
    def engine_cancel(self, data: st.DataObject, reason: str) -> None:
        self.core.receive(CancelRequested(data.draw(st.sampled_from(self._live())), reason))  # type: ignore[arg-type]
        self._drain(None)

    @precondition(lambda self: bool(self.finished))
    @rule(data=st.data())
    def engine_stale(self, data: st.DataObject) -> None:
        """Results that arrive after a response ended are dropped."""
        rid = data.draw(st.sampled_from(self.finished))
        self.core.receive(TextGenerated(rid, "late"))
        self.core.receive(SpeechGenerated(rid, pcm_of(b"\0" * 96)))
        self.core.receive(ToolCalled(rid, "f", "call_late", "{}"))
        self.core.receive(
            GenerationFinished(rid, "stop", prompt_tokens=1, cached_tokens=0, completion_tokens=1)
        )
        self.core.receive(GenerationFailed(rid, "x", "y"))
        self.core.receive(CancelRequested(rid, "client_cancelled"))
        self.core.receive(McpCallDone(rid, "mcp_late", "late", None))
        assert self._drain(None) == []

    # ---- invariants

    @invariant()
    def one_default_response(self) -> None:
        default = [r for r, s in self.checker.open.items() if s.default]
        assert len(default) <= 1
        assert self.core.responses.active_default == (default[0] if default else None)
        assert set(self.checker.open) == set(self.core.responses.live)

    @invariant()
    def phases_match_the_events(self) -> None:
        """The core's phases (core/state.py) are what its events said: a response waits for a
        tool exactly while one of its MCP calls is in progress, and the caller is speaking only
        between ``speech_started`` and the end of that turn."""
        for rid, response in self.core.responses.live.items():
            calling = any(
                out.response_id == rid and out.kind == "mcp_call" and out.phase == "calling"
                for out in self.checker.items.values()
            )
            assert (response.phase is ResponsePhase.AWAITING_TOOL) == calling, (rid, response.phase)
            assert response.phase is not ResponsePhase.DONE
        if self.core.input.phase is TurnPhase.SPEAKING:
            assert self.checker.turn == ("started", self.core.input.turn_item_id), self.checker.turn

    @invariant()
    def events_describe_the_conversation(self) -> None:
        ids = self.core.conversation.ids()
        assert self.checker.order == ids, f"replayed from events {self.checker.order}, core has {ids}"

    def teardown(self) -> None:
        """Every response still running can be finished cleanly."""
        if self.checker.broken:
            return
        for rid in self._live():
            self.core.receive(CancelRequested(rid, "client_cancelled"))
        self._drain(None)
        assert not self.checker.open


CoreMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCoreOrdering = CoreMachine.TestCase
