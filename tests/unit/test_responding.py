"""The cascade responder's own bookkeeping (fakes stand in for the engines and the session:
the real ones are exercised in tests/integration).

A response whose task is cancelled while it speaks (a discarded guess, a session closing)
leaves no speaking task behind: that task waits for text only the response gives, so left
alone it would wait until the garbage collector destroys it mid-wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from openrealtime.core.commands import StartResponse
from openrealtime.core.events import Result, SpeechGenerated
from openrealtime.engines.base import CancelToken, ChatMessage, ChatRequest, LLMEvent, TextDelta
from openrealtime.engines.registry import EngineSet
from openrealtime.runtime.responding import Cascade, TurnTimings
from openrealtime.runtime.scheduler import Scheduler


class HaltingLLM:
    """Says a sentence and a half, then writes nothing more until released."""

    name = "halting"

    def __init__(self) -> None:
        self.release = threading.Event()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        yield TextDelta("Here is the first sentence of it. And then")
        while not self.release.wait(0.01) and not cancel.cancelled:
            pass


class ToneSynthesizer:
    name = "tone"
    sample_rate = 24_000

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[Any]:
        yield np.full(2400, 1000, dtype=np.int16)


class Voices:
    def resolve(self, name: str, language: str | None = None) -> tuple[Any, str]:
        return ToneSynthesizer(), "v"


class Host:
    """The session as a responder sees it."""

    def __init__(self, llm: HaltingLLM) -> None:
        self.engines = EngineSet(llm=llm, voices=Voices())  # type: ignore[arg-type]
        self.scheduler = Scheduler()
        self.timings: dict[str, TurnTimings] = {}
        self.first_piece_words: int | None = None
        self.speculative = False
        self.moderation = None
        self.session_id = "sess_test"
        self.results: list[Result] = []
        self.spoke = asyncio.Event()

    def report(self, result: Result) -> None:
        self.results.append(result)
        if isinstance(result, SpeechGenerated):
            self.spoke.set()

    def chat_request(self, response_id: str) -> ChatRequest | None:
        return ChatRequest(messages=(ChatMessage(role="user", content="Tell me."),))

    def is_live(self, response_id: str) -> bool:
        return True

    def spoken_text(self, response_id: str) -> str:
        return ""

    def mcp_calls_pending(self, response_id: str) -> bool:
        return False

    async def context_ready(self, command: StartResponse) -> None:
        return None

    async def tools_settled(self, response_id: str) -> None:
        return None


def speaking_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if not t.done() and "_speak_all" in repr(t.get_coro())]


async def test_a_response_cancelled_while_it_speaks_leaves_no_speaking_task() -> None:
    llm = HaltingLLM()
    host = Host(llm)
    command = StartResponse("resp_1", (), "audio", "alloy", 1.0, "audio/pcm")
    task = asyncio.ensure_future(Cascade(host).respond(command, CancelToken()))
    try:
        await asyncio.wait_for(host.spoke.wait(), 10)
        assert speaking_tasks()  # the first sentence is spoken while the model writes on
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):
            if not speaking_tasks():
                break
            await asyncio.sleep(0.01)
        assert not speaking_tasks()
    finally:
        llm.release.set()
        task.cancel()
