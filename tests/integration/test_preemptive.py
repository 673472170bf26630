"""Answering as the caller finishes, on the real server with the embedded models and real speech:
a guessed answer never reaches the client before its turn is committed, is discarded when the
caller goes on speaking, and a session's instructions and tools are prefilled so its first turn
finds them cached."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.speech_audio import LEAD_MS, caller_audio
from tests.support import ServerProcess, run_server
from tests.voice_client import CallerRun, collect, stream_audio

pytestmark = pytest.mark.slow

ECHO = "Repeat the user's words back exactly, word for word, and say nothing else."
GUESSED_SILENCE_MS = 4000
"""Turn detection's silence where turns are guessed (see ``worth_guessing``)."""
LONG_PAUSE_SILENCE_MS = 10000  # the protocol's maximum
"""Turn detection's silence in the resumed-speech test: room for a guess to be made during the
caller's pause even on a loaded machine (the pause itself lasts until the server shows one)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"OPENREALTIME_PREEMPTIVE": "true", "OPENREALTIME_WARM_WHILE_SPEAKING": "always"}
    with run_server(tmp_path_factory.mktemp("preemptive"), env=env) as server:
        yield server


def speculation_count(server: ServerProcess, outcome: str) -> float:
    response = httpx.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=10
    )
    assert response.status_code == 200
    for line in response.text.splitlines():
        if line.startswith(f'openrealtime_speculation_total{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def turn_timings(server: ServerProcess) -> dict[str, dict[str, Any]]:
    records = {}
    for line in server.log().splitlines():
        if "turn timings " in line:
            record = json.loads(line.split("turn timings ", 1)[1])
            records[record["response_id"]] = record
    return records


async def update(ws: Any, **session: Any) -> None:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    await collect(ws, CallerRun(), "session.updated")


def vad(silence_ms: int) -> dict[str, Any]:
    return {
        "input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
        }
    }


def room_tone_of(pcm24: np.ndarray, ms: int) -> np.ndarray:
    """``ms`` of the clip's own trailing room tone (its last second, repeated)."""
    tone = pcm24[-24_000:]
    reps = -(-ms * 24 // len(tone))
    return np.tile(tone, reps)[: ms * 24]


def order(run: CallerRun, kind: str) -> int:
    return next(i for i, r in enumerate(run.events) if r.event["type"] == kind)


async def test_speaking_again_in_the_silence_window_discards_the_guess_unseen(
    server: ServerProcess, ws: Any
) -> None:
    await update(ws, instructions=ECHO, output_modalities=["audio"], audio=vad(LONG_PAUSE_SILENCE_MS))
    first = caller_audio("cards-001")  # "ten of clubs", then its room tone
    second = caller_audio("goforward")[LEAD_MS * 24 :]  # "go forward ten meters"
    started_before = speculation_count(server, "started")
    abandoned_before = speculation_count(server, "abandoned")
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "response.done", timeout=240))

    await stream_audio(ws, first)
    # The caller pauses (shorter than the silence duration) until the server has guessed.
    pause = room_tone_of(first, 200)
    deadline = time.monotonic() + (LONG_PAUSE_SILENCE_MS - 1500 - 2000) / 1000
    while speculation_count(server, "started") <= started_before:
        assert time.monotonic() < deadline, "no guess was made during a pause of several seconds"
        await stream_audio(ws, pause)
    assert not run.of("input_audio_buffer.speech_stopped")  # still inside the silence window
    await stream_audio(ws, second)
    await stream_audio(ws, room_tone_of(first, LONG_PAUSE_SILENCE_MS + 1000))
    await asyncio.wait_for(receiver, 240)

    assert speculation_count(server, "abandoned") > abandoned_before
    assert len(run.of("input_audio_buffer.speech_stopped")) == 1
    assert len(run.of("response.created")) == 1  # nothing of the discarded guess was sent
    assert order(run, "input_audio_buffer.speech_stopped") < order(run, "response.created")
    response_id = run.of("response.created")[0]["response"]["id"]
    assert all(e["response_id"] == response_id for e in (r.event for r in run.events) if "response_id" in e)
    heard = run.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
    assert heard.split()[0] in ("10", "ten") and "forward" in heard, heard  # both parts, one turn
    answer = run.of("response.output_audio_transcript.done")[0]["transcript"].lower()
    assert "forward" in answer or "meters" in answer, answer  # the whole turn was answered


async def test_no_answer_audio_before_the_turns_speech_stopped(server: ServerProcess, ws: Any) -> None:
    # A silence long enough for a guess to be made (worth_guessing) and ready at commit even
    # on a loaded machine, where a transcription pass took up to 2.1 s (load ~15).
    await update(ws, instructions=ECHO, output_modalities=["audio"], audio=vad(GUESSED_SILENCE_MS))
    hits_before = speculation_count(server, "hit")
    for name in ("goforward", "cards-003"):
        run = CallerRun()
        receiver = asyncio.create_task(collect(ws, run, "response.done", timeout=240))
        await stream_audio(ws, caller_audio(name))
        await stream_audio(ws, room_tone_of(caller_audio(name), GUESSED_SILENCE_MS + 500))
        await asyncio.wait_for(receiver, 240)
        stopped = order(run, "input_audio_buffer.speech_stopped")
        assert stopped < order(run, "response.created") < order(run, "response.output_audio.delta")
        assert run.of("response.done")[0]["response"]["status"] == "completed"
    assert speculation_count(server, "hit") > hits_before  # a released guess was among them


async def test_the_callers_words_are_evaluated_before_the_turn_is_answered(
    server: ServerProcess, ws: Any
) -> None:
    """At the default 300 ms no turn is guessed, but the words each transcription pass heard
    were evaluated on the LLM while the caller spoke (``always``: whatever the machine's load),
    so the turn's request finds all but its last few tokens cached (without it: its ~14 words,
    the chat template's ~10 tokens)."""
    await update(ws, instructions=ECHO, output_modalities=["audio"], audio=vad(300))
    clip = caller_audio("librivox-0890")  # 5.3 s: "unless to be rather cold hearted and ..."
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "response.done", timeout=240))
    await stream_audio(ws, clip)
    await stream_audio(ws, room_tone_of(clip, 1500))
    await asyncio.wait_for(receiver, 240)
    done = run.of("response.done")[0]["response"]
    assert done["status"] == "completed"
    deadline = time.monotonic() + 30  # the record is logged once the response's work has ended
    while (record := turn_timings(server).get(done["id"])) is None:
        assert time.monotonic() < deadline, "no turn timings record for the response"
        await asyncio.sleep(0.1)
    assert record["speculation"] == "skipped", record
    evaluated_at_the_turn = record["prompt_tokens"] - record["cached_prompt_tokens"]
    assert evaluated_at_the_turn <= 12, record


INSTRUCTIONS = " ".join(
    [
        "You are the voice assistant of Northwind Outfitters, a shop for hiking and camping gear.",
        "Answer in one or two short spoken sentences, friendly and plain, without lists or markup.",
        "Customers call about orders, returns, store hours, product availability and repairs.",
        "Stores open from nine in the morning to seven in the evening on weekdays, and from ten",
        "to five on weekends; all stores are closed on public holidays. Returns are accepted",
        "within sixty days with a receipt, and within thirty days without one for store credit.",
        "Repairs of tents, backpacks and sleeping bags take about two weeks; boots take three.",
    ]
    * 4
)
"""About 490 tokens (Qwen2.5's tokenizer); with the four tools about 850 in the prompt."""


def tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {key: {"type": "string", "description": text} for key, text in params.items()},
            "required": list(params),
        },
    }


TOOLS = [
    tool("lookup_order", "Find an order by its number.", order_number="The order number."),
    tool("check_stock", "Check whether a product is in stock.", product="The product name."),
    tool("book_repair", "Book a repair of an item.", item="The item to repair.", date="Preferred date."),
    tool("store_hours", "Opening hours of a store.", city="The store's city."),
]


async def test_a_fresh_agent_sessions_prompt_is_ready_before_its_first_question(
    server: ServerProcess, ws: Any
) -> None:
    """~500 tokens of instructions and four tools: the server evaluates that prompt in the
    background after ``session.update``, so the first question reads it from the cache and the
    turn evaluates only its own words. (The issue's 1.2 s to first audio for a question 3 s
    after the update is not reached on 2 cores: the ~850-token prefill alone costs about 11
    CPU-seconds there; README, "Answering as the caller finishes".)"""
    session = {"instructions": INSTRUCTIONS, "tools": TOOLS, "output_modalities": ["audio"]}
    log_before = len(server.log())
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    await collect(ws, CallerRun(), "session.updated")
    deadline = time.monotonic() + 240
    # the session's own prefill of its first prompt (nothing new to evaluate) may log after
    # the update was sent: wait for the one that covered the new instructions and tools
    while max(prefilled_in_all(server.log()[log_before:]), default=0) < 700:
        assert time.monotonic() < deadline, "the session's prompt was never prefilled"
        await asyncio.sleep(0.2)
    question = "Are your stores open on Saturday?"
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    run = CallerRun()
    asked_at = time.monotonic()
    await ws.send(json.dumps({"type": "response.create"}))
    await collect(ws, run, "response.done", timeout=240)
    done = run.of("response.done")[0]["response"]
    record = turn_timings(server).get(done["id"], {})
    assert done["status"] == "completed" and done["output"], done  # an answer or a tool call
    first_output = run.first_at("response.output_item.added")
    assert first_output is not None
    usage = done["usage"]
    cached = usage["input_token_details"]["cached_tokens"]
    # everything but the question's own few tokens came from the prefilled cache
    assert cached >= usage["input_tokens"] - 40, (usage, record, round((first_output - asked_at) * 1000))
    assert cached >= 700, usage


def prefilled_in_all(log: str) -> list[int]:
    """Per ``prefilled`` line of the server's log: the prompt tokens its session has prefilled
    in all."""
    return [
        int(found) for found in re.findall(r"prefilled \d+ prompt tokens in [\d.]+ s \((\d+) in all\)", log)
    ]


FIRST_AUDIO_LIMIT_S = 1.2
"""The issue's bound: first answer audio after the end of the question's speech."""


def llama_has_avx512() -> bool:
    """The installed llama.cpp was built with AVX-512 (scripts/llama-cpu-flags.sh chose it)."""
    import llama_cpp

    return "AVX512 = 1" in llama_cpp.llama_print_system_info().decode()


def spoken_question(server: ServerProcess, text: str) -> np.ndarray:
    """``text`` as speech (the server's own TTS, 24 kHz pcm16), trimmed to its sound: no
    package ships a recorded question for a shop, and an off-topic clip makes this agent's
    model write a tool-call-like answer with nothing to say."""
    response = httpx.post(
        server.url + "/v1/audio/speech",
        headers={"Authorization": f"Bearer {server.api_key}"},
        json={"model": "gpt-4o-mini-tts", "voice": "alloy", "input": text, "response_format": "pcm"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    pcm = np.frombuffer(response.content, dtype="<i2")
    sound = np.nonzero(np.abs(pcm.astype(np.int32)) > 300)[0]
    return pcm[sound[0] : sound[-1] + 1]


async def test_a_question_spoken_3_s_after_an_agent_sessions_update_is_answered_within_1_2_s(
    server: ServerProcess, ws: Any
) -> None:
    """~500 tokens of instructions and four tools set by ``session.update``; 3 s later the
    caller asks a question (server VAD, 300 ms): the prompt was evaluated meanwhile, so the
    first answer audio comes within 1.2 s of the end of the caller's speech."""
    # a question the model answers in words (one that reaches for a tool costs ~1 s more: README)
    question = spoken_question(server, "Are you open on public holidays?")
    tone = caller_audio("cards-001")  # its room tone around the question
    # a prompt this server has never seen: nothing of it is in any cache
    session = {
        "instructions": f"This is call {uuid.uuid4().hex[:8]}. {INSTRUCTIONS}",
        "tools": TOOLS,
        "output_modalities": ["audio"],
        "audio": vad(300),
    }
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    await collect(ws, CallerRun(), "session.updated")
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "response.done", timeout=240))
    await stream_audio(ws, room_tone_of(tone, 3000))  # the caller speaks 3 s after the update
    speech_ended_at = await stream_audio(ws, question)
    await stream_audio(ws, room_tone_of(tone, 1500))
    await asyncio.wait_for(receiver, 240)
    done = run.of("response.done")[0]["response"]
    first_audio = run.first_at("response.output_audio.delta")
    record = turn_timings(server).get(done["id"])
    assert done["status"] == "completed" and first_audio is not None, (done, record)
    waited = first_audio - speech_ended_at
    if not llama_has_avx512():
        # ~880 prompt tokens in the ~5 s before the question ends need ~180 tokens/s: the
        # AVX-512 build on a Zen 5 EPYC evaluates ~160 on one core, the AVX2 one ~100
        # (README, Benchmarks); an AVX2-only EPYC measured ~55
        pytest.skip(
            "this CPU's llama.cpp has no AVX-512, so it cannot evaluate the ~880-token prompt in the "
            f"~5 s before the question ends (an AVX2 EPYC: ~55 tokens per CPU-second, ~16 s); the "
            f"1.2 s bound does not apply here (first audio after {waited:.2f} s)"
        )
    stages = {k: v for k, v in (record or {}).items() if k.endswith("_ms") or "tokens" in k}
    assert waited <= FIRST_AUDIO_LIMIT_S, (round(waited * 1000), stages)
    assert done["usage"]["input_token_details"]["cached_tokens"] >= 700, done["usage"]
