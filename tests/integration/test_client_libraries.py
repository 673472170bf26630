"""Third-party Realtime clients taking a voice turn against the real server (spec §16):
pipecat's ``OpenAIRealtimeLLMService`` in a pipeline and livekit-plugins-openai's
``RealtimeModel`` without a room, and their Azure flavours (pipecat's
``AzureRealtimeLLMService``, LiveKit's ``RealtimeModel.with_azure`` on Azure's v1 surface, and
with a preview ``api_version``, which speaks the beta shape). Real recorded speech goes in at
real-time pace; each client must deliver, through its own API, the transcription of what was
said and the spoken answer. Every event a client receives passes a validating proxy (the openai
SDK's union, or its beta union for the beta shape) on the way.

The OpenAI Agents SDK (``RealtimeAgent`` run by ``RealtimeRunner``, given only the URL and the
key) keeps its own session defaults (semantic VAD that interrupts, ``gpt-4o-mini-transcribe``,
pcm16, voice ``ash``) through three runs: a voice turn; a typed question its ``@function_tool``
answers (the SDK runs the tool, returns its output, the spoken answer follows), after which
``update_agent`` moves the session to another agent that answers the next question; and a
caller who talks over the answer (the SDK truncates it where its playout had got to, and the
next turn is answered).

The clients run in their own venv (``make clients-env``), started as a subprocess that talks
to the server over loopback; see ``tests/integration/clients``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openrealtime.engines.asr.wer import corpus_wer
from tests.integration.realtime_proxy import ProxiedSession, validating_proxy
from tests.integration.test_realtime_voice import answer_transcript_check
from tests.speech_audio import caller_audio, transcripts
from tests.support import ServerProcess, validate_beta_server_event, validate_server_event
from tests.unit.test_wire_later_additions import null_later_additions

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLIP = "librivox-0880"
FIXED_REPLY = "Thank you for calling, I heard you clearly and I will help you right away."
INSTRUCTIONS = f"Whatever the user says, reply with exactly this sentence: {FIXED_REPLY}"
CLIENTS = ["pipecat-openai", "livekit-openai", "pipecat-azure", "livekit-azure", "livekit-azure-preview"]
"""Runner names in ``tests.integration.clients.__main__.RUNNERS``."""
BETA_CLIENTS = {"livekit-azure-preview"}
"""Clients that speak the beta shape."""
AZURE_DEPLOYMENT = "voice-bot-deployment"
RUN_TIMEOUT_S = 240


def clients_python() -> str:
    """The client venv's interpreter (``OPENREALTIME_CLIENTS_PYTHON`` overrides)."""
    path = os.environ.get("OPENREALTIME_CLIENTS_PYTHON") or str(REPO / ".venv-clients" / "bin" / "python")
    if not Path(path).exists():
        pytest.fail(f"the client venv is missing ({path}): run `make clients-env`")
    return path


async def run_client(name: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one client's turn in the client venv; its JSON result (or the failure's output)."""
    spec_path, result_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        clients_python(),
        "-m",
        "tests.integration.clients",
        name,
        str(spec_path),
        str(result_path),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"{name} did not finish in {RUN_TIMEOUT_S} s:\n{output.decode(errors='replace')[-4000:]}")
    log = output.decode(errors="replace")
    assert process.returncode == 0 and result_path.exists(), f"{name} failed:\n{log[-6000:]}"
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["log"] = log
    return result


def answer_audio(result: dict[str, Any]) -> bytes:
    """The answer audio the client delivered: 24 kHz pcm16, at least a second of it, not silent."""
    assert result["audio_sample_rate"] == 24000
    audio = Path(result["audio_path"]).read_bytes()
    seconds = len(audio) / 48000
    assert seconds >= 1.0, seconds
    level = float(np.sqrt(np.mean(np.frombuffer(audio, dtype="<i2").astype(np.float64) ** 2)))
    assert level > 100, level
    return audio


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_voice_turn_through_the_client(
    client: str, voice_server: ServerProcess, tmp_path: Path
) -> None:
    speech_path = tmp_path / f"{CLIP}.pcm"
    speech_path.write_bytes(caller_audio(CLIP).astype("<i2").tobytes())
    beta = client in BETA_CLIENTS
    azure = "azure" in client
    validate = validate_beta_server_event if beta else validate_server_event
    async with validating_proxy(voice_server.ws_url, validate) as proxy:
        result = await run_client(
            client,
            {
                "http_base": proxy.url.replace("ws://", "http://") + "/v1",
                "ws_base": proxy.url + "/v1/realtime",
                "endpoint": proxy.url.replace("ws://", "http://"),
                "api_key": voice_server.api_key,
                "speech_path": str(speech_path),
                "instructions": INSTRUCTIONS,
                **({"model": AZURE_DEPLOYMENT} if azure else {}),
            },
            tmp_path,
        )
    print(f"\n{client}: heard {result['transcript']!r}, answered {result['answer_text']!r}")
    assert not result["errors"], (result["errors"], result["log"][-4000:])

    # every event the client received passed the openai SDK's union
    assert len(proxy.sessions) == 1, [s.path for s in proxy.sessions]
    session: ProxiedSession = proxy.sessions[0]
    assert not session.invalid, session.invalid[:3]
    if azure:  # Azure's URLs, the deployment as the model
        expected = "/openai/realtime?" if beta else "/openai/v1/realtime?"
        assert session.path.startswith(expected) and AZURE_DEPLOYMENT in session.path, session.path
    # and carried no later addition as null (what broke pipecat 1.14)
    assert [path for event in session.server_events for path in null_later_additions(event)] == []
    types = session.types()
    assert types[0] == "session.created" and "session.updated" in types
    assert not session.of("error"), session.of("error")
    # the client configured the session and the server took it
    updated = session.of("session.updated")[-1]["session"]
    if beta:
        assert updated["input_audio_transcription"]["model"] == "whisper-1"
        assert "conversation.created" in types and "conversation.item.added" not in types
    else:
        assert updated["audio"]["input"]["transcription"]["model"] == "whisper-1"
    assert updated["instructions"] == INSTRUCTIONS

    # the client's own transcription result has the caller's words
    assert corpus_wer([(transcripts()[CLIP], result["transcript"])]) <= 0.2, result["transcript"]

    # the client delivered the spoken answer: 24 kHz pcm16 whose words are its transcript
    audio = answer_audio(result)
    spoken = session.of(
        "response.audio_transcript.done" if beta else "response.output_audio_transcript.done"
    )[0]["transcript"]
    assert result["answer_text"].strip() == spoken.strip()
    assert await answer_transcript_check(voice_server, audio, "audio/pcm", spoken) <= 0.25
    done = session.of("response.done")[0]["response"]
    assert done["status"] == "completed", done


BARGE_IN_MS = 1000
"""The caller talks over the answer this long after its first audio (``BARGE_IN_AFTER_S`` of
the runner)."""
AGENTS_DEFAULTS = {
    "format": {"type": "audio/pcm", "rate": 24000},
    "transcription": "gpt-4o-mini-transcribe",
    "turn_detection": ("semantic_vad", True),
    "voice": "ash",
}
"""The session the Agents SDK (0.24) configures when its user sets nothing."""
WEATHER_INSTRUCTIONS = (
    "You are a weather assistant. Answer questions about the weather by calling get_weather, "
    "then say in one short sentence what it returned."
)


async def run_agents_client(
    name: str, voice_server: ServerProcess, tmp_path: Path, instructions: str
) -> tuple[dict[str, Any], ProxiedSession]:
    """One run of the Agents SDK runner ``name`` through the validating proxy: its result and
    the one proxied session, checked for what every run must hold."""
    speech_path = tmp_path / f"{CLIP}.pcm"
    speech_path.write_bytes(caller_audio(CLIP).astype("<i2").tobytes())
    async with validating_proxy(voice_server.ws_url) as proxy:
        result = await run_client(
            name,
            {
                "http_base": proxy.url.replace("ws://", "http://") + "/v1",
                "ws_base": proxy.url + "/v1/realtime",
                "api_key": voice_server.api_key,
                "speech_path": str(speech_path),
                "instructions": instructions,
            },
            tmp_path,
        )
    print(
        f"\n{name}: events {result['events']}\n  heard {result['transcript']!r}, answered {result['answer_text']!r}"
    )
    assert not result["errors"], (result["errors"], result["log"][-4000:])
    assert "ERROR:" not in result["log"], result["log"][-4000:]  # nothing the SDK logged as an error
    assert len(proxy.sessions) == 1, [s.path for s in proxy.sessions]
    session: ProxiedSession = proxy.sessions[0]
    assert session.path == "/v1/realtime?model=gpt-realtime", session.path
    assert not session.invalid, session.invalid[:3]
    assert [path for event in session.server_events for path in null_later_additions(event)] == []
    assert not session.of("error"), session.of("error")

    # the SDK's defaults went out untouched and the server took every one of them
    updated = session.of("session.updated")[0]["session"]
    assert updated["instructions"] == instructions
    assert [tool["name"] for tool in updated["tools"]] == ["get_weather"]
    audio_in, audio_out = updated["audio"]["input"], updated["audio"]["output"]
    assert audio_in["format"] == audio_out["format"] == AGENTS_DEFAULTS["format"], updated["audio"]
    assert audio_in["transcription"]["model"] == AGENTS_DEFAULTS["transcription"]
    turn_detection = audio_in["turn_detection"]
    assert (turn_detection["type"], turn_detection["interrupt_response"]) == AGENTS_DEFAULTS["turn_detection"]
    assert audio_out["voice"] == AGENTS_DEFAULTS["voice"]
    return result, session


async def check_spoken_answer(
    voice_server: ServerProcess, result: dict[str, Any], session: ProxiedSession
) -> list[str]:
    """The answers the SDK delivered are speech whose words are their transcripts; those."""
    audio = answer_audio(result)
    answers = [event["transcript"].strip() for event in session.of("response.output_audio_transcript.done")]
    spoken = " ".join(answers)
    assert result["answer_text"] == spoken
    assert await answer_transcript_check(voice_server, audio, "audio/pcm", spoken) <= 0.25
    return answers


def in_order(events: list[str], *expected: str) -> bool:
    """``expected`` occur in ``events`` in this order (not necessarily adjacent)."""
    remaining = iter(events)
    return all(kind in remaining for kind in expected)


async def test_a_voice_turn_through_the_agents_sdk(voice_server: ServerProcess, tmp_path: Path) -> None:
    result, session = await run_agents_client("agents-openai", voice_server, tmp_path, INSTRUCTIONS)
    # the SDK's history has the caller's words
    assert corpus_wer([(transcripts()[CLIP], result["transcript"])]) <= 0.2, result["transcript"]
    assert "input_audio_buffer.speech_stopped" in session.types()
    # the agent's turn as the SDK reports it: started, spoke, stopped speaking, ended
    assert in_order(result["events"], "agent_start", "audio", "audio_end", "agent_end"), result["events"]
    assert not result["tool_calls"], result["tool_calls"]
    await check_spoken_answer(voice_server, result, session)
    assert session.of("response.done")[0]["response"]["status"] == "completed"


async def test_function_tools_through_the_agents_sdk(voice_server: ServerProcess, tmp_path: Path) -> None:
    result, session = await run_agents_client(
        "agents-openai-tool", voice_server, tmp_path, WEATHER_INSTRUCTIONS
    )
    # the SDK ran the agent's tool on the server's call, with the city asked about, then spoke
    names = [call["name"] for call in result["tool_calls"]]
    assert names[:1] == ["get_weather"] and set(names[1:]) <= {"get_menu"}, result["tool_calls"]
    weather_call = result["tool_calls"][0]
    assert "paris" in json.loads(weather_call["arguments"])["city"].lower(), weather_call
    assert "Sunny" in weather_call["output"], weather_call
    assert in_order(result["events"], "tool_start", "tool_end", "audio", "audio_end", "agent_end"), result[
        "events"
    ]

    # on the wire: the server's function calls, the SDK's output for each, a response after each
    calls = [
        event["item"]
        for event in session.of("response.output_item.done")
        if event["item"]["type"] == "function_call"
    ]
    assert [call["name"] for call in calls] == names, calls
    outputs = [
        event["item"]
        for event in session.client_events
        if event.get("type") == "conversation.item.create" and event["item"]["type"] == "function_call_output"
    ]
    assert [item["call_id"] for item in outputs] == [call["call_id"] for call in calls], outputs
    assert [item["output"] for item in outputs] == [call["output"] for call in result["tool_calls"]]
    done = [event["response"] for event in session.of("response.done")]
    assert [response["status"] for response in done] == ["completed"] * (len(calls) + 2), done

    # ``update_agent`` reached the server as a session.update (the second agent's instructions
    # and tool, the SDK's audio defaults kept) and the second agent answered, spoken
    handed_over = session.of("session.updated")[-1]["session"]
    assert [tool["name"] for tool in handed_over["tools"]] == ["get_menu"], handed_over
    assert handed_over["instructions"].startswith("You are the hotel concierge."), handed_over
    assert handed_over["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    assert handed_over["audio"]["output"]["voice"] == AGENTS_DEFAULTS["voice"]
    weather, menu = await check_spoken_answer(voice_server, result, session)
    assert "sunny" in weather.lower(), weather
    assert menu, menu


LONG_REPLY = (
    "Thank you for calling the city library. We are open from nine in the morning until eight in "
    "the evening on weekdays, and from ten until four on Saturdays. You can renew your books online, "
    "by phone, or at the desk of any branch."
)
LONG_INSTRUCTIONS = f"Whatever the user says, reply with exactly these sentences: {LONG_REPLY}"
"""The barge-in's answer: long enough (about 12 s) to be still playing when the caller cuts in
and the interruption has reached the SDK, however loaded the machine."""


async def test_a_barge_in_through_the_agents_sdk(voice_server: ServerProcess, tmp_path: Path) -> None:
    result, session = await run_agents_client(
        "agents-openai-barge-in", voice_server, tmp_path, LONG_INSTRUCTIONS
    )
    events = result["events"]
    assert in_order(events, "agent_start", "audio", "audio_interrupted", "audio", "agent_end"), events
    # the SDK cut the first answer where its playout had got to, and the server agreed
    first = session.of("response.output_item.done")[0]["item"]
    first_ms = sum(
        len(base64.b64decode(event["delta"])) / 48
        for event in session.of("response.output_audio.delta")
        if event["item_id"] == first["id"]
    )
    truncates = [
        event for event in session.client_events if event.get("type") == "conversation.item.truncate"
    ]
    assert [event["item_id"] for event in truncates] == [first["id"]], truncates
    cut_ms = truncates[0]["audio_end_ms"]
    # at most all it had received (the SDK caps its playout clock at that length rounded up to
    # the millisecond): on a loaded machine the answer may come slower than it plays
    assert BARGE_IN_MS <= cut_ms <= math.ceil(first_ms), (cut_ms, first_ms)
    truncated = session.of("conversation.item.truncated")
    assert [(event["item_id"], event["audio_end_ms"]) for event in truncated] == [(first["id"], cut_ms)]
    # it read the item back (``conversation.item.retrieve``, as it does after every truncation
    # and transcript): the server answers each in turn with the audio the caller heard, no more.
    # A retrieve sent while the last answer streams may meet the runner's close before its
    # answer, which the server sends after that whole answer: only those may go unanswered.
    retrieves = [
        event for event in session.client_events if event.get("type") == "conversation.item.retrieve"
    ]
    retrieved = session.of("conversation.item.retrieved")
    assert retrieves and retrieved, [event["type"] for _, event in session.timeline]
    assert [event["item"]["id"] for event in retrieved] == [
        event["item_id"] for event in retrieves[: len(retrieved)]
    ]
    last_answer_at = max(
        index
        for index, (side, event) in enumerate(session.timeline)
        if side == "server" and event["type"] == "response.created"
    )
    unanswered = retrieves[len(retrieved) :]
    assert all(
        index > last_answer_at
        for index, (side, event) in enumerate(session.timeline)
        if any(event is late for late in unanswered)
    ), [(side, event["type"]) for side, event in session.timeline if "delta" not in event["type"]]
    kept = base64.b64decode(retrieved[0]["item"]["content"][0]["audio"])
    assert len(kept) == min(cut_ms * 48, round(first_ms * 48)), (len(kept), cut_ms, first_ms)
    # and answered the caller's second turn
    done = [event["response"] for event in session.of("response.done")]
    assert len(done) >= 2 and done[-1]["status"] == "completed", done
    assert len(session.of("conversation.item.input_audio_transcription.completed")) == 2
