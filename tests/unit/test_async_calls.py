"""Asynchronous function calls and MCP items in the sans-I/O core and the prompt it builds.

A function call may stay pending while the caller keeps talking; its output may arrive turns
later, after its response was cancelled, or never. Whatever happens, the chat request built
for the model must stay valid (every tool call followed by a tool message, no tool message
without its call) and must carry the late result where it arrived. MCP tools are listed and
called through commands the runtime carries out; the core only keeps the items and events.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from openrealtime.core.commands import CallMcpTool, CancelResponse, ListMcpTools, StartResponse
from openrealtime.core.context import AWAITING_APPROVAL, PENDING_RESULT, conversation_messages
from openrealtime.core.events import (
    CancelRequested,
    McpCallDone,
    McpToolsFailed,
    McpToolsListed,
    TextGenerated,
    ToolCalled,
    TranscriptCompleted,
)
from openrealtime.engines.base import ChatMessage, ChatRequest
from tests.unit.test_core_session import Harness, assert_error, only, types


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.update(output_modalities=["text"], audio={"input": {"turn_detection": None}})
    return harness


def assert_valid_chat(request: ChatRequest) -> None:
    """What chat templates and Chat Completions servers demand of tool messages."""
    messages = list(request.messages)
    for index, message in enumerate(messages):
        if message.tool_calls:
            answers = messages[index + 1 : index + 1 + len(message.tool_calls)]
            assert [m.role for m in answers] == ["tool"] * len(message.tool_calls), messages
            assert [m.tool_call_id for m in answers] == [c.call_id for c in message.tool_calls]
        if message.role == "tool":
            owner = next(m for m in reversed(messages[:index]) if m.role != "tool")
            assert message.tool_call_id in [c.call_id for c in owner.tool_calls], messages


def call_weather(h: Harness, rid: str, call_id: str = "call_1", city: str = "Paris") -> None:
    h.core.receive(ToolCalled(rid, "get_weather", call_id, json.dumps({"city": city})))
    h.events()


def output(h: Harness, call_id: str, text: str, **fields: Any) -> list[dict[str, Any]]:
    item = {"type": "function_call_output", "call_id": call_id, "output": text}
    return h.send("conversation.item.create", item=item, **fields)


def request_for_next_turn(h: Harness) -> ChatRequest:
    rid = h.create_response()
    request = h.core.chat_request(rid)
    assert request is not None
    h.core.receive(CancelRequested(rid, "client_cancelled"))
    h.events()
    return request


WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


# --------------------------------------------------------------------------- function calls


def test_pending_call_renders_a_placeholder_and_the_caller_keeps_talking(h: Harness) -> None:
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    call_weather(h, rid)
    h.finish(rid)
    # the client has not answered yet; the caller asks something else and gets a response
    h.user_text("Meanwhile, what is two plus two?")
    request = request_for_next_turn(h)
    assert_valid_chat(request)
    tool = [m for m in request.messages if m.role == "tool"]
    assert [m.content for m in tool] == [PENDING_RESULT]
    assert request.messages[-1] == ChatMessage(role="user", content="Meanwhile, what is two plus two?")


def test_late_output_is_placed_where_it_arrived_and_keeps_earlier_turns(h: Harness) -> None:
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    call_weather(h, rid)
    h.finish(rid)
    h.user_text("Meanwhile, what is two plus two?")
    rid2 = h.create_response()
    h.core.receive(TextGenerated(rid2, "Four."))
    h.finish(rid2)
    before = request_for_next_turn(h).messages

    events = output(h, "call_1", '{"temp_c": 21}')
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    after = request_for_next_turn(h)
    assert_valid_chat(after)
    # the prompt up to the late result is unchanged (the LLM's prompt cache keeps it) ...
    assert after.messages[: len(before)] == before
    # ... and the result comes last, as the restated call and its output
    restated, result = after.messages[-2:]
    assert restated.tool_calls[0].call_id == "call_1" and restated.tool_calls[0].name == "get_weather"
    assert result == ChatMessage(role="tool", content='{"temp_c": 21}', tool_call_id="call_1")


def test_immediate_output_is_the_usual_round_trip(h: Harness) -> None:
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    call_weather(h, rid)
    h.finish(rid)
    output(h, "call_1", "sunny")
    request = request_for_next_turn(h)
    assert_valid_chat(request)
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[-1].content == "sunny"


def test_parallel_calls_group_into_one_assistant_message(h: Harness) -> None:
    h.update(tools=[WEATHER])
    h.user_text("Weather in Paris and Rome?")
    rid = h.create_response()
    call_weather(h, rid, "call_a", "Paris")
    call_weather(h, rid, "call_b", "Rome")
    h.finish(rid)
    output(h, "call_b", "rain")  # answers may come in any order; one is still pending
    request = request_for_next_turn(h)
    assert_valid_chat(request)
    calls = [m for m in request.messages if m.tool_calls]
    assert len(calls) == 1 and [c.call_id for c in calls[0].tool_calls] == ["call_a", "call_b"]
    assert [m.content for m in request.messages if m.role == "tool"] == [PENDING_RESULT, "rain"]


def test_preamble_then_call_in_one_response(h: Harness) -> None:
    """Text before a tool call is a complete assistant message at output_index 0."""
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    h.core.receive(TextGenerated(rid, "Let me check that for you."))
    call_weather(h, rid)
    done = only(h.finish(rid), "response.done")["response"]
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    added = [e for e in h.log if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added[-2:]] == [0, 1]


def test_outputs_for_unknown_calls_fail_clearly_and_cancelled_calls_still_work(h: Harness) -> None:
    assert_error(
        output(h, "call_nope", "x", event_id="o1"), "item_create_invalid_call_id", "o1", "item.call_id"
    )
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    call_weather(h, rid)
    # the caller interrupts before the response is over
    h.send("response.cancel")
    assert CancelResponse(rid) in h.take_commands()
    h.user_text("Actually, never mind.")
    request = request_for_next_turn(h)
    assert_valid_chat(request)
    # the client's result for the cancelled response's call is still accepted and used
    assert types(output(h, "call_1", "cloudy")) == ["conversation.item.added", "conversation.item.done"]
    later = request_for_next_turn(h)
    assert_valid_chat(later)
    assert later.messages[-1].content == "cloudy"


def test_deleted_call_or_duplicate_output_never_breaks_the_prompt(h: Harness) -> None:
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    call_weather(h, rid)
    h.finish(rid)
    output(h, "call_1", "sunny")
    output(h, "call_1", "sunny, update: now rain")
    request = request_for_next_turn(h)
    assert_valid_chat(request)
    assert request.messages[-1].content == "sunny, update: now rain"
    call_item = next(i for i in h.core.conversation.items() if i["type"] == "function_call")
    h.send("conversation.item.delete", item_id=call_item["id"])
    orphaned = request_for_next_turn(h)
    assert_valid_chat(orphaned)
    assert all(m.role != "tool" for m in orphaned.messages)
    assert "sunny" in orphaned.messages[-1].content and orphaned.messages[-1].role == "system"


def test_truncated_history_never_starts_with_a_tool_message(h: Harness) -> None:
    items: list[dict[str, Any]] = [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "x"},
    ]
    messages = conversation_messages(items)
    assert [m.role for m in messages] == ["assistant", "tool"]


# --------------------------------------------------------------------------- MCP


SHOP = {
    "type": "mcp",
    "server_label": "shop",
    "server_url": "https://mcp.example.com/mcp",
    "authorization": "tok",
    "headers": {"X-Team": "a"},
}
LISTED = [
    {
        "name": "get_order_status",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        "description": "Order status.",
        "annotations": {"readOnlyHint": True},
    },
    {"name": "cancel_order", "input_schema": {"type": "object"}, "description": "Cancel."},
]


def configure_shop(h: Harness, **extra: Any) -> str:
    events = h.update(tools=[{**SHOP, **extra}])
    assert types(events) == ["session.updated", "conversation.item.added", "mcp_list_tools.in_progress"]
    item_id = str(events[1]["item"]["id"])
    [listing] = [c for c in h.take_commands() if isinstance(c, ListMcpTools)]
    assert listing.item_id == item_id and listing.server_url == SHOP["server_url"]
    assert listing.headers == {"X-Team": "a", "Authorization": "Bearer tok"}
    h.core.receive(McpToolsListed(item_id, tuple(LISTED)))
    done = h.events()
    assert types(done) == ["mcp_list_tools.completed", "conversation.item.done"]
    return item_id


def test_mcp_tools_are_listed_once_and_offered_as_functions(h: Harness) -> None:
    item_id = configure_shop(h, allowed_tools={"read_only": True})
    item = h.core.conversation.get(item_id)
    assert item is not None and [t["name"] for t in item["tools"]] == ["get_order_status"]
    # an unrelated update, or one changing only the approval policy, does not list again
    assert types(h.update(instructions="Be brief.")) == ["session.updated"]
    relaxed = {**SHOP, "allowed_tools": {"read_only": True}, "require_approval": "never"}
    assert types(h.update(tools=[relaxed])) == ["session.updated"]
    assert not [c for c in h.take_commands() if isinstance(c, ListMcpTools)]
    h.user_text("Where is order A1?")
    rid = h.create_response()
    request = h.core.chat_request(rid)
    assert request is not None and [t.name for t in request.tools] == ["get_order_status"]
    assert request.tools[0].parameters["properties"] == {"order_id": {"type": "string"}}
    assert all(m.role != "tool" for m in request.messages)  # the listing is not a message


def test_mcp_call_runs_and_the_response_continues(h: Harness) -> None:
    configure_shop(h, require_approval="never")
    h.user_text("Where is order A1?")
    rid = h.create_response(tool_choice={"type": "mcp", "server_label": "shop", "name": "get_order_status"})
    request = h.core.chat_request(rid)
    assert request is not None and request.tool_choice == "get_order_status"
    h.core.receive(TextGenerated(rid, "One moment."))
    h.core.receive(ToolCalled(rid, "get_order_status", "call_x", '{"order_id": "A1"}'))
    events = h.events()
    assert types(events)[-6:] == [
        "response.output_item.done",  # the preamble
        "response.output_item.added",
        "conversation.item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
    ]
    [call] = [c for c in h.take_commands() if isinstance(c, CallMcpTool)]
    assert (call.response_id, call.name, call.arguments) == (rid, "get_order_status", '{"order_id": "A1"}')
    assert h.core.mcp_calls_pending(rid)
    h.core.receive(McpCallDone(rid, call.item_id, "Ships Friday.", None))
    assert types(h.events()) == [
        "response.mcp_call.completed",
        "conversation.item.done",
        "response.output_item.done",
    ]
    assert not h.core.mcp_calls_pending(rid)
    continued = h.core.chat_request(rid)
    assert continued is not None
    assert_valid_chat(continued)
    assert continued.tool_choice == "auto"  # never forced again after a result
    assert continued.messages[-1] == ChatMessage(
        role="tool", content="Ships Friday.", tool_call_id=call.item_id
    )
    h.core.receive(TextGenerated(rid, "It ships Friday."))
    done = only(h.finish(rid), "response.done")["response"]
    assert [o["type"] for o in done["output"]] == ["message", "mcp_call", "message"]
    assert done["output"][1]["output"] == "Ships Friday." and done["output"][1]["error"] is None


def test_cancel_during_mcp_call_fails_it_before_response_done(h: Harness) -> None:
    configure_shop(h, require_approval="never")
    h.user_text("Where is order A1?")
    rid = h.create_response()
    h.core.chat_request(rid)
    h.core.receive(ToolCalled(rid, "get_order_status", "call_x", '{"order_id": "A1"}'))
    h.events()
    [call] = [c for c in h.take_commands() if isinstance(c, CallMcpTool)]
    events = h.send("response.cancel")
    assert types(events) == [
        "response.mcp_call.failed",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[1]["item"]["error"]["type"] == "tool_execution_error"
    h.core.receive(McpCallDone(rid, call.item_id, "late", None))  # a result after the cancel is dropped
    assert h.events() == []
    h.user_text("Hello?")
    assert_valid_chat(request_for_next_turn(h))


def test_mcp_approval_approve_runs_in_the_next_response_deny_tells_the_model(h: Harness) -> None:
    configure_shop(h, require_approval={"never": {"read_only": True}})
    h.user_text("Cancel order A1.")
    rid = h.create_response()
    h.core.chat_request(rid)
    h.core.receive(ToolCalled(rid, "cancel_order", "call_x", '{"order_id": "A1"}'))
    events = h.finish(rid)
    request_item = only(events, "response.output_item.added")["item"]
    assert request_item["type"] == "mcp_approval_request" and request_item["name"] == "cancel_order"
    assert not [c for c in h.take_commands() if isinstance(c, CallMcpTool)]
    pending = request_for_next_turn(h)
    assert_valid_chat(pending)
    assert pending.messages[-1].content == AWAITING_APPROVAL

    approval = {"type": "mcp_approval_response", "approval_request_id": request_item["id"], "approve": True}
    assert types(h.send("conversation.item.create", item=approval)) == [
        "conversation.item.added",
        "conversation.item.done",
    ]
    h.take_commands()
    rid2 = h.create_response()
    commands = h.take_commands()
    calls = [c for c in commands if isinstance(c, CallMcpTool)]
    assert len(calls) == 1 and calls[0].name == "cancel_order"
    # the call is started before the model runs
    assert commands.index(calls[0]) < next(i for i, c in enumerate(commands) if isinstance(c, StartResponse))
    added = [e for e in h.log if e["type"] == "response.output_item.added"][-1]["item"]
    assert added["type"] == "mcp_call" and added["approval_request_id"] == request_item["id"]
    h.core.receive(
        McpCallDone(rid2, calls[0].item_id, None, {"type": "tool_execution_error", "message": "locked"})
    )
    assert types(h.events())[0] == "response.mcp_call.failed"
    after = h.core.chat_request(rid2)
    assert after is not None
    assert_valid_chat(after)
    assert after.messages[-1].content == "Error: locked"
    h.finish(rid2)
    # answering the same request again once it ran is refused
    assert_error(
        h.send("conversation.item.create", event_id="a2", item=approval),
        "invalid_value",
        "a2",
        "item.approval_request_id",
    )

    # deny
    h.user_text("Cancel order B2.")
    rid3 = h.create_response()
    h.core.chat_request(rid3)
    h.core.receive(ToolCalled(rid3, "cancel_order", "call_y", '{"order_id": "B2"}'))
    second = only(h.finish(rid3), "response.output_item.added")["item"]
    deny = {
        "type": "mcp_approval_response",
        "approval_request_id": second["id"],
        "approve": False,
        "reason": "no",
    }
    h.send("conversation.item.create", item=deny)
    rid4 = h.create_response()
    assert not [c for c in h.take_commands() if isinstance(c, CallMcpTool)]
    told = h.core.chat_request(rid4)
    assert told is not None
    assert_valid_chat(told)
    assert (
        told.messages[-1].role == "system"
        and "declined the call to cancel_order (no)" in told.messages[-1].content
    )


def test_mcp_listing_failure_and_bad_configurations(h: Harness) -> None:
    events = h.update(tools=[SHOP])
    item_id = events[1]["item"]["id"]
    h.core.receive(McpToolsFailed(item_id, "mcp_server_url_not_allowed", "not allowed: loopback"))
    failed = h.events()
    assert types(failed) == ["mcp_list_tools.failed", "conversation.item.done", "error"]
    assert failed[-1]["error"]["code"] == "mcp_server_url_not_allowed"
    h.user_text("hi")
    rid = h.create_response()
    request = h.core.chat_request(rid)
    assert request is not None and request.tools == ()
    h.core.receive(CancelRequested(rid, "client_cancelled"))
    h.events()
    assert_error(h.update("u1", tools=[SHOP, SHOP]), "invalid_value", "u1", "session.tools[1].server_label")
    assert_error(
        h.send("response.create", event_id="r1", response={"tools": [{**SHOP, "server_label": "other"}]}),
        "unsupported_tool_type",
        "r1",
        "response.tools[0]",
    )


def test_voice_turns_while_a_call_is_pending() -> None:
    """Server VAD: the caller speaks again while the call runs; the turn is answered at once."""
    h = Harness()
    h.update(tools=[WEATHER])
    h.user_text("What's the weather in Paris?")
    rid = h.create_response()
    call_weather(h, rid)
    h.finish(rid)
    events = h.speak([0.9] * 10 + [0.0] * 12)
    assert "input_audio_buffer.committed" in types(events)
    created = only(events, "response.created")["response"]["id"]
    starts = [c for c in h.take_commands() if isinstance(c, StartResponse)]
    assert starts[-1].response_id == created
    user = starts[-1].context_item_ids[-1]
    h.core.receive(TranscriptCompleted(user, "And tell me a joke.", {"type": "duration", "seconds": 1.0}))
    h.events()
    request = h.core.chat_request(created)
    assert request is not None
    assert_valid_chat(request)
    assert [m.content for m in request.messages if m.role == "tool"] == [PENDING_RESULT]
    assert request.messages[-1] == ChatMessage(role="user", content="And tell me a joke.")
    # the caller barges in on that answer; the late output still lands and is used next
    h.core.receive(TextGenerated(created, "Why did"))
    barge = h.speak([0.9] * 10)
    assert only(barge, "response.done")["response"]["status"] == "cancelled"
    output(h, "call_1", "sunny")
    h.speak([0.0] * 12)
    auto = [e for e in h.log if e["type"] == "response.created"][-1]["response"]["id"]
    later = h.core.chat_request(auto)
    assert later is not None
    assert_valid_chat(later)
    assert any(m.role == "tool" and m.content == "sunny" for m in later.messages)
