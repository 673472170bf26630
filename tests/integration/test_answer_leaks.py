"""No leaked internals in answers, on the real 0.5B model.

Requests unrelated to the tools and requests for a tool (some for a tool the session does not
have), with 1 to 4 tools in the session, sampled with several seeds: no text answer may
contain a tool name, call JSON, "Tools:", a system-prompt sentence or a chat-template token
(judged by ``openrealtime.benchmark.answers.answer_leak``, written apart from the guard).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openrealtime.benchmark.answers import answer_leak
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from openrealtime.engines.llm.llamacpp import LlamaCppModel
from openrealtime.protocol.session import DEFAULT_INSTRUCTIONS

pytestmark = pytest.mark.slow


def tool(name: str, description: str, prop: str, kind: str = "string") -> ToolSpec:
    schema = {"type": "object", "properties": {prop: {"type": kind}}, "required": [prop]}
    return ToolSpec(name, description, schema)


TOOLS = (
    tool("get_weather", "Get the current weather and today's forecast for a city.", "location"),
    tool("set_timer", "Start a countdown timer.", "minutes", "number"),
    tool("lookup_order", "Look up the status of an Acme order by its order number.", "order_id"),
    tool("send_message", "Send a text message to one of the customer's contacts.", "recipient"),
)
UNRELATED = (
    "Hello?",
    "Good morning!",
    "What's the capital of Australia?",
    "Tell me a short joke.",
    "I love rainy days, do you?",
    "My daughter starts school next week.",
)
TOOL_RELATED = (
    "Set a timer for five minutes.",
    "Where is my order A B 1 2 3 4?",
    "Text Bob that dinner is at seven.",
)
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppModel]:
    model = LlamaCppModel("qwen2.5-0.5b", n_threads=1, n_ctx=4096, seed=1)
    yield model
    model.close()


def answer(engine: LlamaCppModel, tools: tuple[ToolSpec, ...], text: str) -> tuple[str, list[str]]:
    request = ChatRequest(
        messages=(ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", text)),
        tools=tools,
        tool_choice="auto",
        max_output_tokens=60,
        temperature=0.7,
    )
    words = ""
    calls: list[str] = []
    for event in engine.generate(request, CancelToken()):
        if isinstance(event, TextDelta):
            words += event.text
        elif isinstance(event, ToolCallDelta):
            calls.append(event.call.name)
    return words, calls


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_no_answer_leaks_scaffolding(engine: LlamaCppModel, count: int) -> None:
    tools = TOOLS[:count]
    leaks = []
    answered = 0
    for seed in SEEDS:
        engine.seed = seed
        for text in (*UNRELATED, *TOOL_RELATED):
            words, calls = answer(engine, tools, text)
            if calls:
                assert all(name in {t.name for t in tools} for name in calls)
                continue
            answered += 1
            assert words.strip(), f"empty answer to {text!r}"
            leak = answer_leak(words, tools, [DEFAULT_INSTRUCTIONS])
            if leak:
                leaks.append((seed, text, words, leak))
    assert not leaks, leaks
    assert answered >= 8, "too few text answers to judge"  # measured 10-14 of 18


def test_a_request_for_a_session_tool_still_calls_it(engine: LlamaCppModel) -> None:
    """The guard does not cost tool use: a request for a tool in the session still calls it."""
    engine.seed = 1
    _, calls = answer(engine, TOOLS, "Set a timer for five minutes.")
    assert calls == ["set_timer"]
