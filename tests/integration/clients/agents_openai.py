"""The OpenAI Agents SDK: a ``RealtimeAgent`` with a ``@function_tool``, run by
``RealtimeRunner`` as its documentation writes it, given only the server's URL and key. The
session keeps the SDK's own defaults (semantic VAD that interrupts the answer, pcm16 in and
out, ``gpt-4o-mini-transcribe``, the ``ash`` voice); nothing else is configured.

``run``: the caller's recorded speech goes in through ``session.send_audio`` at real-time pace,
then silence; the SDK's event stream must give the caller's transcript (its history), the
spoken answer (``audio`` events, then ``audio_end``) and the end of the agent's turn
(``agent_end``). ``run_tool``: a typed question the agent answers with its tool; the SDK runs the
tool itself (``tool_start``/``tool_end``), sends its output and the spoken answer follows; then
``update_agent`` (a ``session.update``) moves the session to another agent with another tool,
which answers the next question. ``run_barge_in``: the caller talks over the answer; the SDK
stops it (``audio_interrupted``), truncates it where its playout had got to, and the next turn
is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession, RealtimeSessionEvent
from agents.realtime.items import AssistantMessageItem, InputAudio, RealtimeItem, UserMessageItem

from .common import TurnResult, TurnSpec, microphone, speech

NAME = "agents-openai"
WEATHER_REPORT = "Sunny, eighteen degrees, a light wind from the west."
WEATHER_QUESTION = "What is the weather in Paris?"
MENU_QUESTION = "What is on the menu at the hotel restaurant tonight?"
MENU = "onion soup, roast chicken with green beans, and an apple tart"
BARGE_IN_AFTER_S = 1.0
"""How long after the answer's first audio the caller speaks again."""


@function_tool
def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name.
    """
    return f"{city}: {WEATHER_REPORT}"


def build_agent(spec: TurnSpec) -> RealtimeAgent[Any]:
    return RealtimeAgent(name="Assistant", instructions=spec.instructions, tools=[get_weather])


def realtime_url(spec: TurnSpec) -> str:
    return f"{spec.ws_base}?model={spec.model}"


class Listener:
    """Reads the session's events into the result: what an app built on the SDK sees."""

    def __init__(self, session: RealtimeSession, result: TurnResult) -> None:
        self.session = session
        self.result = result
        self.audio = bytearray()
        self.history: list[RealtimeItem] = []
        self.answers: list[str] = []
        self.answer_item_id = ""
        self.audio_in_turn = 0
        self.heard = asyncio.Event()
        self.first_audio = asyncio.Event()
        self.answer_ended = asyncio.Event()

    async def spoken_answers(self, count: int) -> None:
        """Until ``count`` of the agent's turns have ended with speech."""
        while len(self.answers) < count:
            self.answer_ended.clear()
            await self.answer_ended.wait()

    def record(self, kind: str) -> None:
        if not self.result.events or self.result.events[-1] != kind:
            self.result.events.append(kind)

    async def read(self) -> None:
        try:
            async for event in self.session:
                self.on_event(event)
        finally:
            Path(self.result.audio_path).write_bytes(self.audio)

    def on_event(self, event: RealtimeSessionEvent) -> None:
        if event.type == "raw_model_event":
            raw = event.data
            if raw.type == "raw_server_event" and raw.data.get("type") == "session.updated":
                output = raw.data["session"]["audio"]["output"]["format"]
                self.result.audio_sample_rate = int(output.get("rate", 0))
            return
        self.record(event.type)
        if event.type == "audio":
            self.audio += event.audio.data
            self.result.audio_frames += 1
            self.audio_in_turn += 1
            self.answer_item_id = event.item_id
            self.first_audio.set()
        elif event.type == "agent_end" and self.audio_in_turn:
            self.audio_in_turn = 0
            self.answers.append(self.assistant_transcript())
            self.result.answer_text = " ".join(self.answers)
            self.answer_ended.set()
        elif event.type in ("history_added", "history_updated"):
            if event.type == "history_updated":
                self.history = list(event.history)
            else:
                self.history = [item for item in self.history if item.item_id != event.item.item_id]
                self.history.append(event.item)
            transcript = self.user_transcript()
            if transcript:
                self.result.transcript = transcript
                self.heard.set()
        elif event.type == "tool_start":
            self.result.tool_calls.append(
                {"name": event.tool.name, "arguments": event.arguments, "output": ""}
            )
        elif event.type == "tool_end":
            self.result.tool_calls[-1]["output"] = str(event.output)
        elif event.type == "error":
            self.result.errors.append(repr(event.error))

    def user_transcript(self) -> str:
        """The caller's words as the session's history holds them."""
        for item in self.history:
            if isinstance(item, UserMessageItem):
                for part in item.content:
                    if isinstance(part, InputAudio) and part.transcript:
                        return part.transcript
        return ""

    def assistant_transcript(self) -> str:
        """The spoken answer's transcript, from the history item the audio belongs to."""
        for item in self.history:
            if isinstance(item, AssistantMessageItem) and item.item_id == self.answer_item_id:
                return "".join(part.transcript or "" for part in item.content if part.type == "audio")
        return ""


async def run(spec: TurnSpec) -> TurnResult:
    """A spoken turn: the recorded speech, at real-time pace, then silence until the answer."""
    return await take_turn(spec, NAME, "spoken")


async def run_tool(spec: TurnSpec) -> TurnResult:
    """A typed question the agent answers through its function tool; then the session moves
    to another agent (``update_agent``: a ``session.update``) that answers the next one."""
    return await take_turn(spec, f"{NAME}-tool", "tool")


async def run_barge_in(spec: TurnSpec) -> TurnResult:
    """A spoken turn the caller talks over a second after the answer starts to arrive (the
    SDK, playing it out at real-time pace, truncates the answer where the caller cut in);
    the second turn is answered too."""
    return await take_turn(spec, f"{NAME}-barge-in", "barge-in")


@function_tool
def get_menu() -> str:
    """Get tonight's menu at the hotel restaurant."""
    return f"Tonight's menu: {MENU}."


def concierge_agent() -> RealtimeAgent[Any]:
    """The agent the session moves to: other instructions, another tool."""
    return RealtimeAgent(
        name="Concierge",
        instructions="You are the hotel concierge. Answer questions about the restaurant by calling "
        "get_menu, then say in one short sentence what it returned.",
        tools=[get_menu],
    )


async def take_turn(spec: TurnSpec, name: str, scenario: str) -> TurnResult:
    logging.basicConfig(level=logging.WARNING)
    result = TurnResult(client=name, audio_path=str(Path(spec.speech_path).with_suffix(f".{name}.pcm")))
    runner = RealtimeRunner(build_agent(spec))
    session = await runner.run(model_config={"url": realtime_url(spec), "api_key": spec.api_key})
    async with session:
        listener = Listener(session, result)
        reader = asyncio.create_task(listener.read())

        async def say(pcm: bytes) -> None:
            async for chunk in microphone(pcm):
                await session.send_audio(chunk)

        async def talk() -> None:
            await say(speech(spec))
            if scenario == "barge-in":
                while not listener.first_audio.is_set():
                    await say(b"\x00\x00" * 2400)
                await say(b"\x00\x00" * int(24000 * BARGE_IN_AFTER_S))
                await say(speech(spec))
            while True:  # the caller stays on the line, silent
                await say(b"\x00\x00" * 24000)

        async def conversation() -> None:
            if scenario == "tool":
                await session.send_message(WEATHER_QUESTION)
                await listener.spoken_answers(1)
                await session.update_agent(concierge_agent())
                await session.send_message(MENU_QUESTION)
                await listener.spoken_answers(2)
            else:
                await listener.spoken_answers(1 if scenario == "spoken" else 2)

        caller = asyncio.create_task(talk()) if scenario != "tool" else None
        talking = asyncio.create_task(conversation())
        try:
            await asyncio.wait({talking, reader}, timeout=spec.timeout_s - 30, return_when="FIRST_COMPLETED")
            if not talking.done():
                result.errors.append(
                    f"the conversation did not finish before the time limit: {result.events}"
                )
            elif talking.exception() is not None:
                result.errors.append(repr(talking.exception()))
            if scenario != "tool":  # the transcript may come after the answer (asynchronous to responses)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.heard.wait(), 10)
        finally:
            talking.cancel()
            if caller is not None:
                caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    print(json.dumps({"events": result.events, "tool_calls": result.tool_calls, "answers": listener.answers}))
    return result
