"""Engine-independent tool-calling pieces: shapes, ids, grammar, validation, plausibility."""

from __future__ import annotations

import json
import re

import pytest

from openrealtime.engines.base import ChatMessage, ToolCall, ToolSpec
from openrealtime.engines.llm.tool_calling import (
    call_json_schema,
    check_tool_schema,
    closest_tool_name,
    forced_tool_name,
    new_call_id,
    parse_tool_call,
    to_chat_messages,
    to_chat_tools,
    tool_call_gbnf,
    ungrounded_arguments,
    validate_arguments,
)

WEATHER = ToolSpec(
    "get_weather",
    "Get the weather for a city.",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
        "additionalProperties": False,
    },
)
TIMER = ToolSpec(
    "set_timer",
    "Start a timer.",
    {"type": "object", "properties": {"minutes": {"type": "number", "minimum": 0}}, "required": ["minutes"]},
)
ORDER = ToolSpec(
    "lookup_order",
    "Look up an order.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
PING = ToolSpec("ping")


def test_call_ids_look_like_openai_ones() -> None:
    ids = {new_call_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"call_[A-Za-z0-9_-]{21}", i) for i in ids)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ('{"location": "Paris"}', None),
        ('{"location": "Paris", "unit": "celsius"}', None),
        ("{}", "'location' is a required property"),
        ('{"location": 3}', "at 'location'"),
        ('{"location": "Paris", "unit": "kelvin"}', "at 'unit'"),
        ('{"location": "Paris", "wind": true}', "Additional properties"),
        ('["Paris"]', "must be a JSON object"),
        ('{"location": ', "not valid JSON"),
    ],
)
def test_validate_arguments(arguments: str, fragment: str | None) -> None:
    error = validate_arguments(WEATHER, arguments)
    if fragment is None:
        assert error is None
    else:
        assert error is not None and fragment in error, error


def test_validate_arguments_for_a_tool_without_parameters() -> None:
    assert validate_arguments(PING, "{}") is None
    assert validate_arguments(PING, "[]") is not None


def test_invalid_schema_is_reported_not_raised() -> None:
    broken = ToolSpec("broken", parameters={"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    assert check_tool_schema(broken) is not None
    assert check_tool_schema(WEATHER) is None
    error = validate_arguments(broken, '{"x": 1}')
    assert error is not None and "invalid parameters schema" in error


def test_chat_shapes() -> None:
    call = ToolCall("call_1", "get_weather", '{"location": "Paris"}')
    messages = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage("tool", '{"temp": 20}', tool_call_id="call_1"),
    )
    http = to_chat_messages(messages)
    assert http[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            }
        ],
    }
    assert http[3] == {"role": "tool", "content": '{"temp": 20}', "tool_call_id": "call_1"}
    template = to_chat_messages(messages, arguments_as_object=True)
    assert template[2]["tool_calls"][0]["function"]["arguments"] == {"location": "Paris"}
    assert template[2]["content"] == ""
    tools = to_chat_tools([WEATHER, PING])
    assert tools[0]["function"]["name"] == "get_weather"
    assert tools[1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_forced_tool_name() -> None:
    assert forced_tool_name("auto", [WEATHER]) is None
    assert forced_tool_name("required", [WEATHER]) is None
    assert forced_tool_name("get_weather", [WEATHER]) == "get_weather"
    with pytest.raises(ValueError, match="not among the tools"):
        forced_tool_name("launch_rocket", [WEATHER])


def test_call_schema_and_grammar_keep_name_first() -> None:
    schema = call_json_schema([WEATHER, TIMER])
    assert [v["properties"]["name"]["const"] for v in schema["anyOf"]] == ["get_weather", "set_timer"]
    assert list(schema["anyOf"][0]["properties"]) == ["name", "arguments"]
    grammar = tool_call_gbnf([WEATHER, TIMER])
    assert "root ::=" in grammar and '\\"get_weather\\"' in grammar
    # Property order is preserved: "name" before "arguments".
    first = next(line for line in grammar.splitlines() if line.startswith("alternative-0 ::="))
    assert first.index("name-kv") < first.index("arguments-kv")
    arguments_only = tool_call_gbnf([WEATHER], arguments_only=True)
    assert "location" in arguments_only and "get_weather" not in arguments_only
    with pytest.raises(ValueError):
        tool_call_gbnf([WEATHER, TIMER], arguments_only=True)


def test_grammar_compiles_in_llama_cpp() -> None:
    """llama.cpp parses the grammar (a sampler is built against a real vocabulary)."""
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama, LlamaGrammar, _internals

    from openrealtime.engines.assets import resolve

    llm = Llama(str(resolve("smollm2-135m")), vocab_only=True, verbose=False)
    for grammar in (
        tool_call_gbnf([WEATHER, TIMER, ORDER, PING]),
        tool_call_gbnf([TIMER], arguments_only=True),
    ):
        sampler = _internals.LlamaSampler()
        sampler.add_grammar(llm._model, LlamaGrammar.from_string(grammar, verbose=False))
        sampler.close()


def test_parse_tool_call() -> None:
    call = parse_tool_call('{"name": "get_weather", "arguments": {"location": "Zürich"}}', [WEATHER])
    assert call is not None
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Zürich"}
    assert call.arguments == '{"location": "Zürich"}'
    assert call.call_id.startswith("call_")
    stringly = parse_tool_call(
        '{"name": "get_weather", "arguments": "{\\"location\\": \\"Oslo\\"}"}', [WEATHER]
    )
    assert stringly is not None and json.loads(stringly.arguments) == {"location": "Oslo"}
    assert parse_tool_call('{"name": "nope", "arguments": {}}', [WEATHER]) is None
    assert parse_tool_call('{"name": "get_weather"', [WEATHER]) is None
    assert parse_tool_call("[1]", [WEATHER]) is None


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("get_weather", "get_weather"),
        ("track_order", "lookup_order"),
        ("start_timer", "set_timer"),
        ("get_wether", "get_weather"),
        ("tell_joke", None),
    ],
)
def test_closest_tool_name(written: str, expected: str | None) -> None:
    assert closest_tool_name(written, [WEATHER, TIMER, ORDER]) == expected


def test_ungrounded_arguments() -> None:
    said = "what's the weather like in new york today"
    assert ungrounded_arguments(WEATHER, '{"location": "New York"}', said) == []
    assert ungrounded_arguments(WEATHER, '{"location": "Paris"}', "good morning!") == ["location"]
    # Enums are the model's to choose; only required free text is checked.
    assert ungrounded_arguments(WEATHER, '{"location": "Paris", "unit": "celsius"}', "weather in paris") == []
    # Spelled-out order numbers match their compact form.
    assert ungrounded_arguments(ORDER, '{"order_id": "AB1234"}', "where is order a b 1 2 3 4") == []
    # A number needs some quantity in what the user just said.
    assert ungrounded_arguments(TIMER, '{"minutes": 5}', "", latest="set a timer for five minutes") == []
    assert ungrounded_arguments(TIMER, '{"minutes": 60}', "", latest="timer for an hour") == []
    assert ungrounded_arguments(TIMER, '{"minutes": 30}', "", latest="how long do I boil an egg?") == [
        "minutes"
    ]
    assert ungrounded_arguments(PING, "{}", "anything") == []
