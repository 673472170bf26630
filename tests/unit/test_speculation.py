"""Preemptive generation's logic: what a guess may be released for (core/speculation.py), the
scheduler giving speculative work up for a turn, and the runtime hooks keeping a guess
invisible until it is released (fakes stand in for the engines and the streaming
transcription: tests/integration/test_preemptive.py runs the real ones)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from openrealtime.core.languages import language_instruction
from openrealtime.core.session import SessionCore
from openrealtime.core.speculation import guess_request, normalise, same_request, worth_guessing
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    TextDelta,
    ToolSpec,
)
from openrealtime.engines.registry import EngineSet
from openrealtime.protocol.session import RealtimeSession
from openrealtime.runtime.port import ClientOutput
from openrealtime.runtime.scheduler import PRIORITY_BACKGROUND, PRIORITY_SPECULATIVE, EngineQueue, Scheduler
from openrealtime.runtime.session_runtime import SessionRuntime
from openrealtime.transports.wire import EventWire
from tests.json_edge import JsonCore


def request(last: str, *, tools: tuple[ToolSpec, ...] = ()) -> ChatRequest:
    return ChatRequest(
        messages=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi."),
            ChatMessage(role="assistant", content="Hello!"),
            ChatMessage(role="user", content=last),
        ),
        tools=tools,
    )


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  What's the   time,  please? ") == normalise("what s the time please")
    assert normalise("Ten.") == "ten"
    assert normalise("ten") != normalise("tin")


def test_a_guess_is_worth_starting_only_when_the_pause_outlasts_a_transcription_pass() -> None:
    assert not worth_guessing(300, 250)  # the default silence: the turn ends before a guess exists
    assert worth_guessing(1000, 250)
    assert not worth_guessing(1000, 900)  # the same window on a busy machine
    assert not worth_guessing(None, 0)  # no turn detection: nothing to guess for


def test_same_request_only_up_to_how_the_last_words_were_written() -> None:
    assert same_request(request("what time is it"), request("What time is it?"))
    assert not same_request(request("what time is it"), request("What time is it now?"))
    tool = ToolSpec(name="clock", description="The time.", parameters={"type": "object"})
    assert not same_request(request("what time is it"), request("what time is it", tools=(tool,)))
    earlier = request("x")
    changed = ChatRequest(messages=(earlier.messages[0], ChatMessage(role="user", content="x")))
    assert not same_request(earlier, changed)


def test_a_guess_asks_what_the_turn_will_ask_in_the_callers_language() -> None:
    """The real request ends its instructions with the answer's language line; a guess without
    it could never be released for a caller heard in another language."""
    core = SessionCore(RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=0)
    edge = JsonCore(core)
    core.start()

    def send(kind: str, **fields: Any) -> list[dict[str, Any]]:
        edge.handle(json.dumps({"type": kind, **fields}))
        return [json.loads(frame.to_json()) for frame in edge.take_events()]

    send("session.update", session={"type": "realtime", "instructions": "Be brief."})
    core.state.caller_language = "es"
    guess = guess_request(core, "¿Qué hora es?")
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "¿qué hora es"}]}
    send("conversation.item.create", item=user)
    created = [event for event in send("response.create") if event["type"] == "response.created"]
    real = core.responses.chat_request(created[0]["response"]["id"], core.mcp.tools_for_model)
    assert guess is not None and real is not None
    assert real.messages[0].content.endswith(str(language_instruction("es")))
    assert same_request(guess, real)


async def test_speculative_work_gives_the_engine_up_when_a_turn_needs_it() -> None:
    queue = EngineQueue("llm", 1)
    started = threading.Event()
    spoken: list[int] = []

    def guess() -> Iterator[int]:
        started.set()
        for n in range(500):
            time.sleep(0.005)
            yield n

    token = CancelToken()

    async def run_guess() -> None:
        async for n in queue.stream(guess, priority=PRIORITY_SPECULATIVE, cancel=token, yielding=True):
            spoken.append(n)

    task = asyncio.ensure_future(run_guess())
    await asyncio.to_thread(started.wait, 5)
    assert await queue.call(lambda: "turn") == "turn"  # queued at turn priority: the guess yields
    await task
    assert token.cancelled and len(spoken) < 500

    kept = CancelToken()
    produced: list[int] = []

    async def run_kept() -> None:
        async for n in queue.stream(
            lambda: iter(range(50)), priority=PRIORITY_SPECULATIVE, cancel=kept, yielding=True
        ):
            produced.append(n)

    queue.keep(kept)  # released as a turn's answer: no longer given up
    kept_task = asyncio.ensure_future(run_kept())
    await queue.call(lambda: None)
    await kept_task
    assert not kept.cancelled and produced == list(range(50))


async def test_a_turn_on_another_engine_takes_the_cpu_from_speculative_work() -> None:
    scheduler = Scheduler()
    started = threading.Event()
    token = CancelToken()

    def guess() -> Iterator[int]:
        started.set()
        for n in range(500):
            time.sleep(0.005)
            yield n

    async def run_guess() -> int:
        count = 0
        async for _ in scheduler.llm.stream(
            guess, priority=PRIORITY_SPECULATIVE, cancel=token, yielding=True
        ):
            count += 1
        return count

    task = asyncio.ensure_future(run_guess())
    await asyncio.to_thread(started.wait, 5)
    await scheduler.vad.call(lambda: None)  # the VAD scores every frame: never a reason to yield
    assert not token.cancelled
    await scheduler.tts.call(lambda: "speech of a committed turn")
    assert await task < 500 and token.cancelled


async def test_a_transcription_pass_takes_the_cpu_from_speculative_work() -> None:
    scheduler = Scheduler()
    token = CancelToken()
    guess = asyncio.ensure_future(
        scheduler.llm.call(
            lambda: time.sleep(0.2), priority=PRIORITY_SPECULATIVE, cancel=token, yielding=True
        )
    )
    await asyncio.sleep(0.05)
    await scheduler.asr.call(lambda: "a pass over the caller's new words", priority=PRIORITY_BACKGROUND)
    assert token.cancelled  # the caller spoke again: the guess is outdated and gives the CPU up
    with contextlib.suppress(asyncio.CancelledError):
        await guess


class CountingLLM:
    """Answers every request with the words it heard, and records the requests."""

    name = "counting"

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        self.requests.append(request)
        yield TextDelta(f"You said: {request.messages[-1].content}")
        yield GenerationDone("stop", prompt_tokens=5, cached_prompt_tokens=0, completion_tokens=4)


class StubStreaming:
    """The streaming transcription as the watcher sees it: a settled text or None."""

    def __init__(self) -> None:
        self.settled: str | None = None
        self.latest: str | None = None  # the latest pass's words

    def settled_text(self) -> str | None:
        return self.settled

    def latest_text(self) -> str | None:
        return self.latest

    def cancel(self) -> None:
        self.settled = None


class Harness:
    def __init__(self, silence_ms: int = 2000, llm: CountingLLM | None = None) -> None:
        self.llm = llm or CountingLLM()
        engines = EngineSet(llm=self.llm)  # type: ignore[arg-type]
        detection = {"type": "server_vad", "silence_duration_ms": silence_ms}
        session = RealtimeSession.model_validate(
            {
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {"input": {"turn_detection": detection}},
            }
        )
        core = SessionCore(session, count_tokens=lambda s: len(s.split()), created_at=int(time.time()))
        self.events: list[dict[str, Any]] = []
        self.wire = EventWire(lambda: core.input_format)
        harness = self

        class Client:
            def send(self, output: ClientOutput) -> None:
                harness.events.extend(json.loads(frame) for frame in harness.wire.encode(output))

            async def close(self, code: int, reason: str) -> None:
                return None

        self.runtime = SessionRuntime(core, engines, Scheduler(), Client())
        self.runtime.start()
        self.streaming = StubStreaming()
        self.runtime.listening.streaming = self.streaming  # type: ignore[assignment]

    def send(self, event: dict[str, Any]) -> None:
        self.wire.deliver(json.dumps(event), self.runtime)

    async def guessed(self, count: int) -> None:
        for _ in range(500):
            if len(self.llm.requests) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no guess was started")

    async def answer(self, item_id: str, text: str) -> dict[str, Any]:
        """The turn is committed as ``item_id`` saying ``text`` and answered."""
        self.runtime.speculation.on_committed(item_id, by_vad=True)
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        self.send({"type": "conversation.item.create", "item": item})
        self.send({"type": "response.create"})
        for _ in range(500):
            done = [e for e in self.events if e["type"] == "response.done"]
            if done:
                return done[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("no response.done")


def texts(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


async def test_a_guess_that_matches_is_released_and_invisible_until_then() -> None:
    h = Harness()
    try:
        h.runtime.speculation.on_speech_started()
        h.streaming.settled = "what time is it"
        await h.guessed(1)
        await asyncio.sleep(0.1)  # the guess has finished its answer by now
        assert not [e for e in h.events if e["type"].startswith("response.")]
        done = await h.answer("item_turn1", "What time is it?")
        assert done["response"]["status"] == "completed"
        assert len(h.llm.requests) == 1  # the guess was the answer: no second generation
        assert texts(h.events) == "You said: what time is it"
        assert done["response"]["usage"]["output_tokens"] > 0  # billed once released
        assert h.runtime.speculation.counts.hits == 1
    finally:
        await h.runtime.aclose()


async def test_a_guess_that_differs_is_discarded_unseen_and_the_final_words_answered() -> None:
    h = Harness()
    try:
        h.runtime.speculation.on_speech_started()
        h.streaming.settled = "what time"
        await h.guessed(1)
        done = await h.answer("item_turn1", "What time is it in Paris?")
        assert done["response"]["status"] == "completed"
        assert texts(h.events) == "You said: What time is it in Paris?"
        assert "You said: what time" + "\n" not in json.dumps(h.events)
        counts = h.runtime.speculation.counts
        assert (counts.hits, counts.misses) == (0, 1) and counts.wasted_tokens > 0
    finally:
        await h.runtime.aclose()


async def test_speaking_again_discards_the_guess_and_a_new_settled_text_replaces_it() -> None:
    h = Harness()
    try:
        h.runtime.speculation.on_speech_started()
        h.streaming.settled = "what time"
        await h.guessed(1)
        first = h.runtime.speculation._guess
        assert first is not None
        h.streaming.settled = None  # the caller speaks again
        for _ in range(100):
            if first.token.cancelled:
                break
            await asyncio.sleep(0.01)
        assert first.token.cancelled and h.runtime.speculation.counts.abandoned == 1
        h.streaming.settled = "what time is it in Paris"
        await h.guessed(2)
        done = await h.answer("item_turn1", "What time is it in Paris?")
        assert done["response"]["status"] == "completed"
        assert len(h.llm.requests) == 2 and h.runtime.speculation.counts.hits == 1
        assert texts(h.events) == "You said: what time is it in Paris"
    finally:
        await h.runtime.aclose()


async def test_preemption_off_never_guesses() -> None:
    h = Harness()
    h.runtime.speculation.enabled = False
    try:
        h.runtime.speculation.on_speech_started()
        h.streaming.settled = "what time is it"
        await asyncio.sleep(0.2)
        assert not h.llm.requests
        await h.answer("item_turn1", "What time is it?")
        assert len(h.llm.requests) == 1
    finally:
        await h.runtime.aclose()


async def test_a_turn_whose_silence_is_too_short_is_not_guessed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openrealtime.runtime")
    h = Harness(silence_ms=300)
    try:
        h.runtime.speculation.on_speech_started()
        h.streaming.settled = "what time is it"
        await asyncio.sleep(0.2)
        assert not h.llm.requests  # no guess: it could not have been ready in 300 ms
        done = await h.answer("item_turn1", "What time is it?")
        assert done["response"]["status"] == "completed" and len(h.llm.requests) == 1
        speculation = h.runtime.speculation
        assert speculation.counts.skipped == 1 and speculation.counts.started == 0
        timings = [r.getMessage() for r in caplog.records if "turn timings" in r.getMessage()]
        record = json.loads(timings[-1].split("turn timings ", 1)[1])
        assert record["speculation"] == "skipped" and record["speculation_window_ms"] == 300
    finally:
        await h.runtime.aclose()


class WarmingLLM(CountingLLM):
    """Also records the prompt prefixes it is asked to evaluate ahead."""

    def __init__(self) -> None:
        super().__init__()
        self.prefills: list[ChatRequest] = []

    def prefill(self, request: ChatRequest, cancel: CancelToken, **options: Any) -> int:
        if any(m.role == "user" for m in request.messages):  # not the session's own prefill
            self.prefills.append(request)
        return 3


async def until(condition: Any) -> None:
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def test_the_callers_words_are_evaluated_as_heard_until_the_turns_response_starts() -> None:
    llm = WarmingLLM()
    h = Harness(silence_ms=300, llm=llm)  # too short to guess: warming only
    speculation = h.runtime.speculation
    speculation.warm = "always"
    try:
        speculation.on_speech_started()
        h.streaming.latest = "what time"
        await until(lambda: len(llm.prefills) == 1)
        assert [m.content for m in llm.prefills[0].messages if m.role == "user"] == ["what time"]
        # committed: the turn's item is in the conversation, its final pass still running
        h.runtime.listening.turn_streams["item_turn1"] = h.streaming  # type: ignore[assignment]
        item = {"id": "item_turn1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}
        h.send({"type": "conversation.item.create", "item": item})
        speculation.on_committed("item_turn1", by_vad=True)
        h.streaming.latest = "what time is it"
        await until(lambda: len(llm.prefills) == 2)
        users = [m for m in llm.prefills[1].messages if m.role == "user"]
        assert [m.content for m in users] == ["what time is it"]  # read up to the committed turn
        h.send({"type": "response.create"})
        await until(lambda: any(e["type"] == "response.done" for e in h.events))
        h.streaming.latest = "what time is it now"
        await asyncio.sleep(0.2)
        assert len(llm.prefills) == 2  # nothing is warmed once the turn's response started
        assert speculation.counts.warms == 2 and speculation.counts.warm_tokens == 6
    finally:
        await h.runtime.aclose()


@pytest.mark.parametrize("mode", ["never", "auto"])
async def test_no_warming_when_off_or_when_no_core_is_idle(mode: str) -> None:
    llm = WarmingLLM()
    h = Harness(silence_ms=300, llm=llm)
    h.runtime.speculation.warm = mode  # type: ignore[assignment]
    h.runtime.scheduler.spare_cores = lambda: 0.2  # type: ignore[assignment,method-assign]
    try:
        h.runtime.speculation.on_speech_started()
        h.streaming.latest = "what time is it"
        await asyncio.sleep(0.2)
        assert not llm.prefills
        h.runtime.scheduler.spare_cores = lambda: 2.0  # type: ignore[assignment,method-assign]
        await asyncio.sleep(0.2)
        assert len(llm.prefills) == (1 if mode == "auto" else 0)
    finally:
        await h.runtime.aclose()
