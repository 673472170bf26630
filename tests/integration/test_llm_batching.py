"""Continuous batching in the embedded LLM (``engines/llm/batching.py``) on real models:
generations that decode in the same steps, cancelling one of them, grammar-written tool calls
under batching, and a failed decode that fails only the generations in flight.

SmolLM2-135M where no tools are needed (fast), the 0.5B default for tool calls.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from openrealtime.engines.assets import resolve
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from openrealtime.engines.llm.batching import BatchedContext, DecodeFailed
from openrealtime.engines.llm.llamacpp import LlamaCppModel

pytestmark = pytest.mark.slow

SYSTEM = ChatMessage("system", "You are a storyteller. Tell long, detailed stories.")
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


def story(topic: str, tokens: int = 48) -> ChatRequest:
    return ChatRequest(
        messages=(SYSTEM, ChatMessage("user", f"Tell me a long story about {topic}.")),
        temperature=0.0,
        max_output_tokens=tokens,
    )


class Stream:
    """One generation on its own thread, each event stamped with when it arrived."""

    def __init__(
        self,
        engine: LlamaCppModel,
        request: ChatRequest,
        start: threading.Barrier | None = None,
        on_event: Callable[[Stream], None] | None = None,
    ) -> None:
        self.cancel = CancelToken()
        self.events: list[tuple[float, LLMEvent]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(engine, request, start, on_event))
        self._thread.start()

    def _run(
        self,
        engine: LlamaCppModel,
        request: ChatRequest,
        start: threading.Barrier | None,
        on_event: Callable[[Stream], None] | None,
    ) -> None:
        if start is not None:
            start.wait()
        try:
            for event in engine.generate(request, self.cancel):
                self.events.append((time.monotonic(), event))
                if on_event is not None:
                    on_event(self)
        except BaseException as exc:
            self.error = exc

    def join(self) -> Stream:
        self._thread.join(timeout=300)
        assert not self._thread.is_alive()
        return self

    @property
    def deltas(self) -> list[float]:
        return [t for t, e in self.events if isinstance(e, TextDelta)]

    @property
    def text(self) -> str:
        return "".join(e.text for _, e in self.events if isinstance(e, TextDelta))

    @property
    def done(self) -> GenerationDone:
        last = self.events[-1][1]
        assert isinstance(last, GenerationDone)
        return last


@pytest.fixture(scope="module")
def smol() -> Iterator[LlamaCppModel]:
    engine = LlamaCppModel("smollm2-135m", n_ctx=2048, parallel=2, seed=11)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def qwen() -> Iterator[LlamaCppModel]:
    engine = LlamaCppModel("qwen2.5-0.5b", n_ctx=4096, parallel=2, seed=11)
    yield engine
    engine.close()


def test_two_answers_decode_in_the_same_steps(smol: LlamaCppModel) -> None:
    before = smol.batch_stats()
    start = threading.Barrier(2)
    a = Stream(smol, story("a dragon"), start)
    b = Stream(smol, story("a lighthouse keeper"), start)
    a.join(), b.join()
    assert a.error is None and b.error is None
    assert a.done.finish_reason == b.done.finish_reason == "length"
    assert a.done.completion_tokens == b.done.completion_tokens == 48
    # both streamed while the other did: neither waited for the other's whole answer, their
    # tokens came interleaved (in the same batched steps, or step by step where the CPU's
    # batched kernels cost more than one step each: ``min_batch``)
    assert a.deltas[0] < b.deltas[-1] and b.deltas[0] < a.deltas[-1]
    merged = sorted([(t, "a") for t in a.deltas] + [(t, "b") for t in b.deltas])
    switches = sum(x[1] != y[1] for x, y in itertools.pairwise(merged))
    assert switches >= 20, merged
    after = smol.batch_stats()
    assert after["steps"] > before["steps"] and after["failed"] == before["failed"]


def test_cancelling_one_answer_leaves_the_other_streaming(smol: LlamaCppModel) -> None:
    alone = Stream(smol, story("a lighthouse keeper", 40)).join()

    def cancel_after_five(stream: Stream) -> None:
        if len(stream.deltas) == 5:
            stream.cancel.cancel()

    start = threading.Barrier(2)
    a = Stream(smol, story("a dragon", 200), start, on_event=cancel_after_five)
    b = Stream(smol, story("a lighthouse keeper", 40), start)
    a.join(), b.join()
    assert a.error is None and b.error is None
    assert a.done.finish_reason == "cancelled"
    assert len(a.deltas) <= 6
    assert b.done.finish_reason == "length" and b.done.completion_tokens == 40
    cancelled_at = a.events[-1][0]
    assert sum(t > cancelled_at for t in b.deltas) >= 10  # went on after the other stopped
    # the batched answer reads like the one decoded alone (greedy; batch numerics may move a
    # late token, not the start)
    assert b.text.split()[:8] == alone.text.split()[:8]


def test_grammar_tool_calls_of_two_sessions_at_once(qwen: LlamaCppModel) -> None:
    def ask(city: str) -> ChatRequest:
        return ChatRequest(
            messages=(
                ChatMessage("system", "You are a helpful voice assistant."),
                ChatMessage("user", f"What's the weather like in {city} right now?"),
            ),
            tools=(WEATHER, TIMER),
            temperature=0.0,
        )

    before = qwen.batch_stats()
    start = threading.Barrier(2)
    paris = Stream(qwen, ask("Paris"), start)
    tokyo = Stream(qwen, ask("Tokyo"), start)
    paris.join(), tokyo.join()
    for stream, city in ((paris, "Paris"), (tokyo, "Tokyo")):
        assert stream.error is None
        calls = [e.call for _, e in stream.events if isinstance(e, ToolCallDelta)]
        assert len(calls) == 1, stream.events
        assert calls[0].name == "get_weather"
        assert city.lower() in str(json.loads(calls[0].arguments)["location"]).lower()
        assert stream.done.finish_reason == "tool_calls"
    assert qwen.batch_stats()["failed"] == before["failed"]


def test_a_full_cache_fails_only_the_answers_in_flight() -> None:
    """Two long prompts that cannot both fit in the cells the sequences share: the step that
    finds no room fails the generations in it (an error, not a hang or a crash), and the
    engine answers the next request."""
    engine = LlamaCppModel("smollm2-135m", n_ctx=1024, parallel=2, kv_tokens=1024, seed=3)
    try:
        filler = " ".join(f"Item {i} is a small blue box." for i in range(70))  # ~600 tokens

        def long_prompt(topic: str) -> ChatRequest:
            return ChatRequest(
                messages=(SYSTEM, ChatMessage("user", f"{filler}\nNow tell me about {topic}.")),
                temperature=0.0,
                max_output_tokens=32,
            )

        start = threading.Barrier(2)
        a = Stream(engine, long_prompt("boxes"), start)
        b = Stream(engine, long_prompt("colours"), start)
        a.join(), b.join()
        errors = [s.error for s in (a, b) if s.error is not None]
        assert errors and all(isinstance(e, DecodeFailed) for e in errors), (a.error, b.error)
        assert engine.batch_stats()["failed"] >= 1
        after = Stream(engine, story("a dragon", 16)).join()
        assert after.error is None and after.done.finish_reason == "length" and after.text.strip()
    finally:
        engine.close()


def test_a_crashed_step_clears_the_cache_and_the_context_serves_again() -> None:
    """A decode that llama.cpp rejects (a token outside the vocabulary) fails the generations
    in flight, the cache starts afresh and the next generation works."""
    import llama_cpp
    from llama_cpp import _internals

    model = _internals.LlamaModel(
        path_model=str(resolve("smollm2-135m")), params=llama_cpp.llama_model_default_params(), verbose=False
    )
    context = BatchedContext(model, n_ctx=1024, n_seq=2, n_batch=64, n_threads=1, n_threads_batch=1)
    try:
        hello = [
            int(t) for t in model.tokenize(b"Hello there, how are you today?", add_bos=False, special=False)
        ]
        first = context.acquire()
        second = context.acquire()
        assert first is not None and second is not None
        first.eval(hello)
        assert first.n_tokens == len(hello) and first.logits is not None
        with pytest.raises(DecodeFailed):
            second.eval([context.n_vocab + 5])
        assert context.resets == 1
        with pytest.raises(DecodeFailed):  # its cache was cleared under it: it cannot go on
            first.eval([hello[0]])
        context.release(first)
        context.release(second)
        again = context.acquire(hello)
        assert again is not None and again.n_tokens == 0
        again.eval(hello)
        assert again.logits is not None and again.n_tokens == len(hello)
        context.release(again)
    finally:
        context.close()
        model.close()
