"""The LLM engines on real models: llama.cpp in-process, and an OpenAI-compatible endpoint
served by a second process (``python -m llama_cpp.server``) on the same small model.

Most tests use SmolLM2-135M (fast, no tools); the tool-calling tests use the 0.5B default.
Everything runs on one thread: the machine's two cores are shared.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from openrealtime.engines.assets import resolve
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LanguageModel,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from openrealtime.engines.llm.llamacpp import LlamaCppModel
from openrealtime.engines.llm.openai_compatible import OpenAICompatibleError, OpenAICompatibleModel
from openrealtime.engines.llm.tool_calling import validate_arguments
from tests.support import free_port, run_llama_cpp_server

pytestmark = pytest.mark.slow

SYSTEM = ChatMessage(
    "system",
    "You are Sam, a friendly voice assistant. Answer in one or two short spoken sentences, "
    "without lists or markdown. If you do not know something, say so briefly.",
)
WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)
TIMER = ToolSpec(
    "set_timer",
    "Start a countdown timer.",
    {"type": "object", "properties": {"minutes": {"type": "number"}}, "required": ["minutes"]},
)
TOOLS = (WEATHER, TIMER)


def ask(*texts: str, system: ChatMessage = SYSTEM) -> tuple[ChatMessage, ...]:
    return (system, *(ChatMessage("user", t) for t in texts))


def run(engine: LanguageModel, request: ChatRequest, cancel: CancelToken | None = None) -> list[LLMEvent]:
    events = list(engine.generate(request, cancel or CancelToken()))
    assert isinstance(events[-1], GenerationDone)
    assert sum(isinstance(e, GenerationDone) for e in events) == 1
    return events


def text_of(events: list[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def done_of(events: list[LLMEvent]) -> GenerationDone:
    last = events[-1]
    assert isinstance(last, GenerationDone)
    return last


# --------------------------------------------------------------------------- llama.cpp, SmolLM2


@pytest.fixture(scope="module")
def smol() -> Iterator[LlamaCppModel]:
    engine = LlamaCppModel("smollm2-135m", n_threads=1, n_ctx=2048, seed=3)
    yield engine
    engine.close()


def test_streams_text_and_reports_usage(smol: LlamaCppModel) -> None:
    assert isinstance(smol, LanguageModel)
    events = run(
        smol, ChatRequest(ask("What is the capital of France?"), max_output_tokens=32, temperature=0.0)
    )
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert deltas and text_of(events).strip()
    done = done_of(events)
    assert done.finish_reason in ("stop", "length")
    assert done.completion_tokens >= len(deltas)
    assert done.prompt_tokens > smol.count_tokens(SYSTEM.content)


def test_max_output_tokens_stops_with_length(smol: LlamaCppModel) -> None:
    events = run(smol, ChatRequest(ask("Tell me a long story about a dragon."), max_output_tokens=5))
    done = done_of(events)
    assert done.finish_reason == "length"
    assert done.completion_tokens == 5


def test_cancel_is_honoured_between_tokens(smol: LlamaCppModel) -> None:
    cancel = CancelToken()
    events: list[LLMEvent] = []
    for event in smol.generate(ChatRequest(ask("Count from one to fifty."), max_output_tokens=200), cancel):
        events.append(event)
        if isinstance(event, TextDelta):
            cancel.cancel()
    assert sum(isinstance(e, TextDelta) for e in events) == 1
    assert done_of(events).finish_reason == "cancelled"

    already = CancelToken()
    already.cancel()
    done = done_of(run(smol, ChatRequest(ask("Hello?")), already))
    assert done.finish_reason == "cancelled" and done.completion_tokens == 0


def test_next_turn_reuses_the_conversation_prefix(smol: LlamaCppModel) -> None:
    first = ask("Hi! What's your name?")
    one = run(smol, ChatRequest(first, max_output_tokens=24, temperature=0.0))
    second = (*first, ChatMessage("assistant", text_of(one)), ChatMessage("user", "And what can you do?"))
    two = run(smol, ChatRequest(second, max_output_tokens=8))
    assert done_of(two).cached_prompt_tokens >= done_of(one).prompt_tokens
    assert done_of(two).cached_prompt_tokens < done_of(two).prompt_tokens
    assert smol.last_generation is not None and smol.last_generation.cache_source == "live"


def test_other_session_in_between_is_restored_from_ram(smol: LlamaCppModel) -> None:
    long_system = ChatMessage(
        "system", SYSTEM.content + " " + "Our shop opens at nine and closes at five. " * 6
    )
    a1 = ask("When do you open?", system=long_system)
    first = run(smol, ChatRequest(a1, max_output_tokens=16, temperature=0.0))
    run(
        smol,
        ChatRequest(
            ask("Say something nice.", system=ChatMessage("system", "You are a poet.")), max_output_tokens=4
        ),
    )
    a2 = (*a1, ChatMessage("assistant", text_of(first)), ChatMessage("user", "And on Sundays?"))
    again = run(smol, ChatRequest(a2, max_output_tokens=4))
    assert smol.last_generation is not None and smol.last_generation.cache_source == "ram"
    assert done_of(again).cached_prompt_tokens >= done_of(first).prompt_tokens


def test_new_session_with_the_same_system_prompt_reuses_it(smol: LlamaCppModel) -> None:
    run(smol, ChatRequest(ask("Good morning!"), max_output_tokens=4))
    events = run(smol, ChatRequest(ask("What's two plus two?"), max_output_tokens=4))
    system_tokens = smol.count_tokens(SYSTEM.content)
    assert done_of(events).cached_prompt_tokens >= system_tokens


def test_generations_are_serialised_across_threads(smol: LlamaCppModel) -> None:
    prompts = ["Name a colour.", "Name a fruit.", "Name an animal."]
    expected = {
        p: text_of(run(smol, ChatRequest(ask(p), max_output_tokens=12, temperature=0.0))) for p in prompts
    }
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(prompt: str) -> None:
        try:
            got[prompt] = text_of(run(smol, ChatRequest(ask(prompt), max_output_tokens=12, temperature=0.0)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert got == expected


def test_smollm2_ignores_tools(smol: LlamaCppModel) -> None:
    assert not smol.supports_tools
    events = run(
        smol,
        ChatRequest(
            ask("What's the weather in Paris?"), tools=TOOLS, tool_choice="required", max_output_tokens=12
        ),
    )
    assert not [e for e in events if isinstance(e, ToolCallDelta)]
    assert text_of(events)


def test_count_tokens(smol: LlamaCppModel) -> None:
    assert smol.count_tokens("") == 0
    assert 1 <= smol.count_tokens("hello world") <= 4
    assert smol.count_tokens("<|im_start|>") > 1, "special-token text in user content is plain text"


def test_local_gguf_path_and_history_trimming() -> None:
    path = resolve("smollm2-135m")
    engine = LlamaCppModel(path, n_threads=1, n_ctx=256)
    try:
        assert engine.name == path.stem
        history: list[ChatMessage] = [SYSTEM]
        for i in range(12):
            history += [
                ChatMessage("user", f"Remember the number {i}, please."),
                ChatMessage("assistant", "Okay, noted."),
            ]
        history.append(ChatMessage("user", "Thanks!"))
        events = run(engine, ChatRequest(tuple(history), max_output_tokens=16))
        done = done_of(events)
        assert done.prompt_tokens + 16 <= 256
        assert done.finish_reason in ("stop", "length")
    finally:
        engine.close()


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="neither a model profile"):
        LlamaCppModel("no-such-model")


# --------------------------------------------------------------------------- llama.cpp, Qwen 0.5B tools


@pytest.fixture(scope="module")
def qwen() -> Iterator[LlamaCppModel]:
    engine = LlamaCppModel("qwen2.5-0.5b", n_threads=1, n_ctx=2048, seed=3)
    yield engine
    engine.close()


def calls_of(events: list[LLMEvent]) -> list[ToolCall]:
    return [e.call for e in events if isinstance(e, ToolCallDelta)]


def test_default_model_calls_a_tool(qwen: LlamaCppModel) -> None:
    assert qwen.supports_tools
    events = run(qwen, ChatRequest(ask("Set a timer for five minutes."), tools=TOOLS, temperature=0.0))
    calls = calls_of(events)
    assert [c.name for c in calls] == ["set_timer"]
    assert validate_arguments(TIMER, calls[0].arguments) is None
    assert json.loads(calls[0].arguments)["minutes"] == 5
    assert done_of(events).finish_reason == "tool_calls"
    assert not text_of(events)


def test_default_model_answers_chit_chat_in_words(qwen: LlamaCppModel) -> None:
    events = run(
        qwen, ChatRequest(ask("What's the capital of Australia?"), tools=TOOLS, max_output_tokens=24)
    )
    assert not calls_of(events)
    assert text_of(events).strip()
    assert not text_of(events).lstrip().startswith(("{", "`", "<"))


def test_tool_choice_none_and_forced(qwen: LlamaCppModel) -> None:
    none = run(
        qwen,
        ChatRequest(
            ask("What's the weather in Oslo?"), tools=TOOLS, tool_choice="none", max_output_tokens=24
        ),
    )
    assert not calls_of(none) and text_of(none).strip()

    forced = run(
        qwen, ChatRequest(ask("What's the weather in Oslo?"), tools=TOOLS, tool_choice="get_weather")
    )
    calls = calls_of(forced)
    assert [c.name for c in calls] == ["get_weather"]
    assert "oslo" in json.loads(calls[0].arguments)["location"].lower()

    required = run(qwen, ChatRequest(ask("Hello there!"), tools=TOOLS, tool_choice="required"))
    assert len(calls_of(required)) == 1
    assert done_of(required).finish_reason == "tool_calls"


def test_tool_result_is_answered_not_called_again(qwen: LlamaCppModel) -> None:
    call = ToolCall("call_abcdefghijklmnopqrstu", "get_weather", '{"location": "Rome"}')
    messages = (
        *ask("What's the weather in Rome?"),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage("tool", '{"temperature_c": 19, "conditions": "cloudy"}', tool_call_id=call.call_id),
    )
    events = run(qwen, ChatRequest(messages, tools=TOOLS, max_output_tokens=32, temperature=0.0))
    assert not calls_of(events)
    answer = text_of(events)
    assert answer.strip()
    assert not any(c in answer for c in "{}<>`"), "the result is answered in words, not echoed as JSON"
    assert "19" in answer or "cloud" in answer.lower() or "rome" in answer.lower()


def test_sampled_answers_to_a_tool_result_use_the_result(qwen: LlamaCppModel) -> None:
    """At the default temperature, over several seeds, the follow-up answers from the result
    instead of describing its JSON (one reply in five did, before the result guidance)."""
    call = ToolCall("call_abcdefghijklmnopqrstu", "get_weather", '{"location": "Paris"}')
    messages = (
        ChatMessage("system", "You are terse. Answer in one short sentence."),
        ChatMessage("user", "What's the weather like in Paris right now?"),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage(
            "tool", '{"city": "Paris", "temperature_c": 21, "sky": "sunny"}', tool_call_id=call.call_id
        ),
    )
    seed = qwen.seed
    try:
        for qwen.seed in range(1, 9):
            answer = text_of(run(qwen, ChatRequest(messages, tools=TOOLS, max_output_tokens=40)))
            assert "21" in answer or "sunny" in answer.lower(), (qwen.seed, answer)
    finally:
        qwen.seed = seed


# --------------------------------------------------------------------------- OpenAI-compatible endpoint


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on SmolLM2, in its own process, on a free port."""
    with run_llama_cpp_server(tmp_path_factory.mktemp("llama-server"), resolve("smollm2-135m")) as base_url:
        yield base_url


@pytest.fixture
def remote(llama_server: str) -> Iterator[OpenAICompatibleModel]:
    engine = OpenAICompatibleModel(llama_server, "smollm2", api_key="not-needed")
    yield engine
    engine.close()


def test_remote_streams_text(remote: OpenAICompatibleModel) -> None:
    assert isinstance(remote, LanguageModel)
    events = run(remote, ChatRequest(ask("Say hello."), max_output_tokens=16))
    assert len([e for e in events if isinstance(e, TextDelta)]) > 1, "streamed, not one block"
    done = done_of(events)
    assert done.finish_reason in ("stop", "length")
    # llama-cpp-python's server sends no usage in streams: the local approximation is used.
    assert done.prompt_tokens > 0 and done.completion_tokens > 0 and done.cached_prompt_tokens == 0


def test_remote_tool_call_is_assembled(remote: OpenAICompatibleModel) -> None:
    events = run(
        remote,
        ChatRequest(
            ask("What's the weather in Paris?"), tools=TOOLS, tool_choice="get_weather", max_output_tokens=40
        ),
    )
    calls = calls_of(events)
    assert [c.name for c in calls] == ["get_weather"]
    assert isinstance(json.loads(calls[0].arguments), dict)
    assert validate_arguments(WEATHER, calls[0].arguments) is None
    assert calls[0].call_id
    assert done_of(events).finish_reason == "tool_calls"


def test_remote_cancel_closes_the_stream(remote: OpenAICompatibleModel) -> None:
    cancel = CancelToken()
    events: list[LLMEvent] = []
    for event in remote.generate(
        ChatRequest(ask("Count from one to one hundred."), max_output_tokens=300), cancel
    ):
        events.append(event)
        if isinstance(event, TextDelta):
            cancel.cancel()
    assert sum(isinstance(e, TextDelta) for e in events) == 1
    assert done_of(events).finish_reason == "cancelled"
    # The server is still usable afterwards.
    assert text_of(run(remote, ChatRequest(ask("Hi!"), max_output_tokens=4)))


def test_remote_cancel_while_the_server_reads_the_prompt(remote: OpenAICompatibleModel) -> None:
    """Cancelling before the first chunk shuts the connection; the server stays usable."""
    long_question = "Here is some context. " + "The shop sells apples, pears and plums. " * 25
    cancel = CancelToken()
    timer = threading.Timer(0.3, cancel.cancel)
    timer.start()
    try:
        events = run(
            remote, ChatRequest(ask(long_question + "What does it sell?"), max_output_tokens=64), cancel
        )
    finally:
        timer.cancel()
    assert done_of(events).finish_reason == "cancelled"
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert text_of(run(remote, ChatRequest(ask("Hi!"), max_output_tokens=4)))


def test_remote_errors_are_clear(llama_server: str) -> None:
    wrong_path = OpenAICompatibleModel(llama_server + "/nope", "smollm2")
    with pytest.raises(OpenAICompatibleError, match="404"):
        run(wrong_path, ChatRequest(ask("Hi")))
    nobody = OpenAICompatibleModel(f"http://127.0.0.1:{free_port()}/v1", "smollm2", timeout=5)
    with pytest.raises(OpenAICompatibleError, match="failed"):
        run(nobody, ChatRequest(ask("Hi")))


def test_remote_token_count_is_a_local_approximation(remote: OpenAICompatibleModel) -> None:
    assert remote.count_tokens("") == 0
    assert 8 <= remote.count_tokens("The quick brown fox jumps over the lazy dog.") <= 14
