"""Answers in the caller's language, and a function result's exact words, end to end.

Real server, real models (Silero, Whisper, Qwen, the voice table), speech over a real
WebSocket at real-time pace. The caller's English is the shared recordings; Spanish comes from
espeak-ng's formant voice, read at the caller's side and never by the server's answer voice.
The language of an answer is judged on its sound: Whisper base (the server's ASR model) hears
the answer audio and detects its language.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from openrealtime.audio import formats
from openrealtime.audio.resample import int16_to_float32, resample
from openrealtime.benchmark.telephone import espeak_speech, load_whisper
from openrealtime.engines.asr.wer import wer
from tests.speech_audio import caller_audio
from tests.support import ServerProcess, run_server
from tests.voice_client import CallerRun, collect, listen_to_the_end, output_audio, stream_audio

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

INSTRUCTIONS = "You are a friendly assistant on a phone line. Answer in one or two short sentences."
SPANISH = (
    "Buenas tardes. Quisiera saber a qué hora abre mañana la farmacia del centro, "
    "porque necesito comprar unas medicinas para mi madre."
)
"""About 7 s of espeak-ng Spanish: past the tracker's switch rule (p >= 0.5 on >= 2 s)."""
SPANISH_SHORT = "Hola, ¿qué tal?"
LEGAL = (
    "This ticket is non-refundable after 24 hours; changes cost $50 per passenger and are "
    "subject to the conditions of carriage."
)
"""The verbatim text of test_voice_table_speech.py (no homophones: its words can be heard back)."""
TERMS_TOOL = {
    "type": "function",
    "name": "get_ticket_terms",
    "description": "The cancellation and change terms of the caller's ticket.",
    "parameters": {"type": "object", "properties": {}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its own server: the tests read its log (which voice spoke which language)."""
    with run_server(tmp_path_factory.mktemp("answer-language")) as process:
        yield process


@pytest.fixture(scope="module")
def whisper() -> Any:
    return load_whisper()


async def update(ws: Any, **session: Any) -> None:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    await collect(ws, CallerRun(), "session.updated")


def voice_session(language: str | None = None) -> dict[str, Any]:
    transcription: dict[str, Any] = {"model": "whisper-1"}
    if language is not None:
        transcription["language"] = language
    return {
        "instructions": INSTRUCTIONS,
        "audio": {
            "input": {
                "transcription": transcription,
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            },
            "output": {"voice": "marin"},
        },
    }


def spoken(text: str, voice: str) -> np.ndarray:
    """espeak-ng speech as a caller sends it: 24 kHz int16 with a second of quiet around it."""
    speech = resample(espeak_speech(text, voice), 16000, formats.INTERNAL_RATE)
    rng = np.random.default_rng(3)
    quiet = lambda ms: (rng.standard_normal(24 * ms) * 20).astype(np.int16)  # noqa: E731
    return np.concatenate([quiet(1000), speech.astype(np.int16), quiet(1500)])


async def voice_turn(ws: Any, pcm24: np.ndarray) -> CallerRun:
    """One spoken turn and the whole answer it gets."""
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "response.done", timeout=240))
    await stream_audio(ws, pcm24)
    await asyncio.wait_for(receiver, 240)
    assert run.of("response.done")[0]["response"]["status"] == "completed", run.of("response.done")
    return run


def answer_transcript(run: CallerRun) -> str:
    """The answer's transcript, after what the server heard the caller say (for messages)."""
    caller = [e["transcript"] for e in run.of("conversation.item.input_audio_transcription.completed")]
    said = " ".join(e["transcript"] for e in run.of("response.output_audio_transcript.done"))
    return f"{caller} -> {said}" if caller else said


def heard(whisper: Any, run: CallerRun) -> tuple[str, float, str]:
    """What Whisper hears in the answer's audio: (language, its probability, the words)."""
    pcm = np.frombuffer(output_audio(run), dtype="<i2")
    assert pcm.size > formats.INTERNAL_RATE // 2, "the answer has no audio"
    audio = resample(int16_to_float32(pcm), formats.INTERNAL_RATE, 16000)
    segments, info = whisper.transcribe(audio, beam_size=5, condition_on_previous_text=False)
    return info.language, info.language_probability, " ".join(s.text.strip() for s in segments)


def voice_lines(server: ServerProcess, response_id: str) -> list[str]:
    """The server's log lines naming the voice that spoke the response, also when the answer
    is a guess made while the caller spoke (logged under the guess's id, then released)."""
    log = server.log()
    names = {response_id, *re.findall(rf"response {response_id} answers with (guess_\d+)", log)}
    return [line for line in log.splitlines() if any(f"response {name} speaks" in line for name in names)]


async def test_a_spanish_caller_is_answered_in_spanish_by_a_spanish_voice(
    server: ServerProcess, ws: Any, whisper: Any
) -> None:
    """Detected from the caller's speech (no language set): the answer is heard as Spanish,
    and the voice that spoke it is one that speaks Spanish (GET /v1/voices)."""
    await update(ws, **voice_session())
    run = await voice_turn(ws, spoken(SPANISH, "es"))
    language, probability, words = heard(whisper, run)
    assert language == "es" and probability >= 0.5, (language, probability, words, answer_transcript(run))
    rid = run.of("response.done")[0]["response"]["id"]
    (line,) = voice_lines(server, rid)
    engine, voice = line.rsplit("voice ", 1)[1].strip().split(":", 1)
    listing = httpx.get(
        server.base_url + "/voices", headers={"Authorization": f"Bearer {server.api_key}"}
    ).json()
    assert engine in listing["languages"]["es"], (engine, listing["languages"])
    (marin,) = [row for row in listing["data"] if row["name"] == "marin"]
    if "es" not in marin["languages"]:  # a stand-in: the engine's voice for Spanish
        assert voice != marin["voice"] and (engine != "espeak" or voice.startswith("es")), (voice, marin)


async def test_the_answer_follows_a_switch_in_the_middle_of_a_conversation(ws: Any, whisper: Any) -> None:
    """English (real speech), then Spanish, then English again, in one session; the caller
    lets each answer end before speaking again."""
    await update(ws, **voice_session())
    languages = []
    for pcm in (caller_audio("librivox-0870"), spoken(SPANISH, "es"), caller_audio("librivox-0890")):
        run = await voice_turn(ws, pcm)
        language, probability, words = heard(whisper, run)
        languages.append((language, round(probability, 2), words, answer_transcript(run)))
        await listen_to_the_end(run)
    assert [entry[0] for entry in languages] == ["en", "es", "en"], languages


async def test_the_clients_transcription_language_wins(server: ServerProcess, ws: Any, whisper: Any) -> None:
    """``transcription.language: es``: a greeting too short to switch a session on its own
    (about 1 s) is answered in Spanish, by a voice chosen for Spanish."""
    await update(ws, **voice_session(language="es"))
    run = await voice_turn(ws, spoken(SPANISH_SHORT, "es"))
    language, probability, words = heard(whisper, run)
    # the answer is short ("Ahora es mejor."): Whisper's pick among all its languages is then
    # unsure (once Greek, 0.57); what matters is Spanish rather than English
    pcm = np.frombuffer(output_audio(run), dtype="<i2")
    _, _, ranked = whisper.detect_language(resample(int16_to_float32(pcm), formats.INTERNAL_RATE, 16000))
    odds = dict(ranked)
    assert odds.get("es", 0.0) > odds.get("en", 0.0), (language, probability, words, answer_transcript(run))
    assert voice_lines(server, run.of("response.done")[0]["response"]["id"])


def errors_within(reference: str, hypothesis: str) -> int:
    """Word errors of the best-matching stretch of ``hypothesis`` against ``reference`` (the
    answer may say more than the reference)."""
    words, size = hypothesis.split(), len(reference.split())
    stretches = [
        " ".join(words[start:end])
        for start in range(len(words))
        for end in range(start + max(1, size - 4), min(len(words), start + size + 4) + 1)
    ]
    return min((wer(reference, s).errors for s in stretches), default=size)


async def test_a_verbatim_function_result_is_spoken_word_for_word(ws: Any, whisper: Any) -> None:
    """The model writes the result's marker; the transcript carries the exact legal sentence
    and the caller hears it (Whisper writes it back within one word of 23)."""
    await update(ws, instructions=INSTRUCTIONS, tools=[TERMS_TOOL], audio={"output": {"voice": "marin"}})
    question = "What are the cancellation terms of my ticket? Please read them to me."
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": message}))
    await ws.send(
        json.dumps(
            {
                "type": "response.create",
                "response": {"tool_choice": {"type": "function", "name": "get_ticket_terms"}},
            }
        )
    )
    first = CallerRun()
    await collect(ws, first, "response.done", timeout=240)
    calls = [i for i in first.of("response.done")[0]["response"]["output"] if i["type"] == "function_call"]
    assert calls, first.of("response.done")
    output = json.dumps({"status": "found", "verbatim": {"terms": LEGAL}})
    result = {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": output}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": result}))
    await ws.send(json.dumps({"type": "response.create"}))
    run = CallerRun()
    await collect(ws, run, "response.done", timeout=240)
    transcript = " ".join(e["transcript"] for e in run.of("response.output_audio_transcript.done"))
    assert LEGAL in transcript, transcript
    assert "[[" not in transcript and "say:" not in transcript
    _, _, words = heard(whisper, run)
    assert errors_within(LEGAL, words) <= 1, (words, transcript)  # of 23 words
