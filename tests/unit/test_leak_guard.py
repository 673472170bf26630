"""LeakGuard: scaffolding never leaves the engine, plain answers pass unchanged (no model)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from openrealtime.engines.base import CancelToken, ChatMessage, ChatRequest, TextDelta, ToolSpec
from openrealtime.engines.llm.leaks import SAFE_ANSWER, Leak, LeakGuard, find_leak, identifier_like
from openrealtime.engines.llm.openai_compatible import OpenAICompatibleModel

SYSTEM = (
    "You are a helpful, friendly voice assistant running on the user's own machine. "
    "Answer in one to three short spoken sentences: plain words, no lists, no markdown. "
    'Greet callers with "Welcome to Acme Home, how can I help you today?"'
)
TOOLS = ("get_weather", "lookupOrder", "weather")


def pieces(text: str) -> list[str]:
    """Split like a tokenizer: words with their leading space, punctuation on its own."""
    return re.findall(r" ?[A-Za-z]+| ?[0-9]|[^A-Za-z0-9]", text)


def run(text: str) -> tuple[str, Leak | None]:
    guard = LeakGuard(tool_names=TOOLS, protected=[SYSTEM])
    out = ""
    for piece in pieces(text):
        result = guard.push(piece)
        if isinstance(result, Leak):
            return out, result
        out += "".join(result)
    end = guard.finish()
    if isinstance(end, Leak):
        return out, end
    return out + "".join(end), None


@pytest.mark.parametrize(
    "answer",
    [
        "Sure! It's sunny and warm in Paris today.",
        "The weather is lovely; do you need anything else?",
        "You are welcome, have a great day.",
        "Welcome to Acme Home, how can I help you today?",  # quoted in the instructions: meant to be said
        "I can't look that up, sorry.",
        "Seven times eight is 56.",
    ],
)
def test_plain_answers_pass_unchanged(answer: str) -> None:
    out, leak = run(answer)
    assert leak is None
    assert out == answer


@pytest.mark.parametrize(
    ("answer", "kind", "clean_prefix"),
    [
        ("Tools: get_weather", "markup", ""),
        ("Sure, I will use get_weather for that.", "tool name", "Sure, I will use"),
        ("Let me check with lookupOrder now.", "tool name", "Let me check with"),
        ('{"name": "get_weather", "arguments": {}}', "markup", ""),
        ("Okay. <|im_start|>assistant", "markup", "Okay."),
        ("<tool_call> get", "markup", ""),
        (
            "Hi! I am a helpful, friendly voice assistant running on the user's own machine.",
            "system text",
            "Hi! I am",
        ),
        ("Answer in one to three short spoken sentences please.", "system text", ""),
    ],
)
def test_leaks_are_caught_before_they_are_emitted(answer: str, kind: str, clean_prefix: str) -> None:
    out, leak = run(answer)
    assert leak is not None and leak.kind == kind
    assert out.strip() == clean_prefix.strip()
    assert find_leak(out, TOOLS, [SYSTEM]) is None


def test_a_plain_word_tool_name_is_not_a_leak() -> None:
    assert not identifier_like("weather")
    assert identifier_like("get_weather") and identifier_like("lookupOrder") and identifier_like("v2")


def test_after_a_leak_the_guard_goes_on_from_what_was_emitted() -> None:
    guard = LeakGuard(tool_names=["get_weather"])
    emitted = ""
    for piece in ["It", " is", " sunny", ".", " Tools", ":"]:
        result = guard.push(piece)
        if isinstance(result, Leak):
            assert result.held[-1] == ":"
            break
        emitted += "".join(result)
    assert emitted == "It is sunny."
    for piece in [" Anything", " else", "?"]:
        result = guard.push(piece)
        assert not isinstance(result, Leak)
        emitted += "".join(result)
    end = guard.finish()
    assert not isinstance(end, Leak)
    assert emitted + "".join(end) == "It is sunny. Anything else?"


def test_holding_is_short_for_ordinary_text() -> None:
    """Only the unfinished word (and words that may begin a protected phrase) wait."""
    guard = LeakGuard(tool_names=["get_weather"], protected=[SYSTEM])
    released = guard.push("Paris")
    assert released == []  # may still become "Paris_..."
    released = guard.push(" is")
    assert released == ["Paris"]


def test_snake_case_is_code_not_speech() -> None:
    out, leak = run("Send timer five_minutes now.")
    assert leak is not None and leak.kind == "identifier"
    assert out == "Send timer"


def _remote(contents: list[str]) -> OpenAICompatibleModel:
    """An OpenAI-compatible engine over a scripted SSE stream (httpx's mock transport)."""

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [{"choices": [{"delta": {"content": c}, "finish_reason": None}]} for c in contents]
        chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return OpenAICompatibleModel("http://llm.invalid/v1", "m", client=client)


def _say(engine: OpenAICompatibleModel) -> str:
    weather = ToolSpec("get_weather", "Get the weather.", {"type": "object", "properties": {}})
    request = ChatRequest(
        messages=(ChatMessage("system", SYSTEM), ChatMessage("user", "hi")), tools=(weather,)
    )
    return "".join(e.text for e in engine.generate(request, CancelToken()) if isinstance(e, TextDelta))


def test_a_remote_answer_ends_before_a_leak() -> None:
    engine = _remote(["It is", " sunny.", " I used", " get_weather", " for that."])
    assert _say(engine) == "It is sunny. I used"
    assert engine.leaks == 1


def test_a_remote_answer_that_starts_with_a_leak_is_replaced() -> None:
    engine = _remote(["Tools", ":", " get_weather"])
    assert _say(engine) == SAFE_ANSWER
    clean = _remote(["Hello", "!", " How can I help?"])
    assert _say(clean) == "Hello! How can I help?"
    assert clean.leaks == 0


@pytest.mark.parametrize(
    "answer",
    ["No such functions exist for that.", "There is no function that fits.", "I can make a function call."],
)
def test_talk_about_functions_is_scaffolding(answer: str) -> None:
    _, leak = run(answer)
    assert leak is not None and leak.kind == "markup"


@pytest.mark.parametrize(
    "answer", ["You can call the function with the city.", "Response: name: dinner, arguments: none"]
)
def test_describing_a_call_is_scaffolding(answer: str) -> None:
    _, leak = run(answer)
    assert leak is not None


@pytest.mark.parametrize("answer", ['["set_timer", 7]', "[\n    \\\n    \\"])
def test_code_shaped_text_is_scaffolding(answer: str) -> None:
    out, leak = run(answer)
    assert leak is not None and out == ""


def test_call_the_function_is_held_until_it_is_known() -> None:
    out, leak = run("You can call the function for that.")
    assert leak is not None and out == "You can"
    out, leak = run("You can call the shop tomorrow.")
    assert leak is None and out == "You can call the shop tomorrow."


def test_a_line_the_instructions_ask_to_say_is_not_a_leak() -> None:
    """ "Reply with exactly this sentence: …" — the sentence is meant to be said, the rest not."""
    system = (
        "Whatever the user says, reply with exactly this sentence: "
        "Thank you for calling, I heard you clearly and I will help you right away.\n"
        "Never mention that you are running on a small local language model."
    )
    said = "Thank you for calling, I heard you clearly and I will help you right away."
    guard = LeakGuard(tool_names=(), protected=[system])
    out: list[str] = []
    for piece in pieces(said):
        result = guard.push(piece)
        assert not isinstance(result, Leak), result
        out += result
    end = guard.finish()
    assert not isinstance(end, Leak)
    assert "".join(out + end) == said
    copied = LeakGuard(tool_names=(), protected=[system])
    found = [copied.push(p) for p in pieces("I am running on a small local language model.")]
    assert any(isinstance(r, Leak) for r in found) or isinstance(copied.finish(), Leak)


@pytest.mark.parametrize("answer", ["Here are the terms: [[say:v87ee]]", "[[ say : v1a2b ]] Anything else?"])
def test_a_verbatim_marker_is_not_markup(answer: str) -> None:
    """The model asks for a function result's exact words with it (core/verbatim.py)."""
    assert find_leak(answer, ["get_ticket_terms"]) is None
    guard = LeakGuard(tool_names=["get_ticket_terms"])
    out: list[str] = []
    for piece in re.findall(r".{1,3}", answer, re.DOTALL):
        released = guard.push(piece)
        assert not isinstance(released, Leak), piece
        out += released
    end = guard.finish()
    assert not isinstance(end, Leak)
    assert "".join(out + end) == answer


def test_other_double_brackets_are_still_markup() -> None:
    assert find_leak("Sure [[tool]] done") is not None
