"""Third-party Realtime clients taking a voice turn against the real server (spec §16):
pipecat's ``OpenAIRealtimeLLMService`` in a pipeline and livekit-plugins-openai's
``RealtimeModel`` without a room, and their Azure flavours (pipecat's
``AzureRealtimeLLMService``, LiveKit's ``RealtimeModel.with_azure`` on Azure's v1 surface, and
with a preview ``api_version``, which speaks the beta shape). Real recorded speech goes in at
real-time pace; each client must deliver, through its own API, the transcription of what was
said and the spoken answer. Every event a client receives passes a validating proxy (the openai
SDK's union, or its beta union for the beta shape) on the way.

The clients run in their own venv (``make clients-env``), started as a subprocess that talks
to the server over loopback; see ``tests/integration/clients``.
"""

from __future__ import annotations

import asyncio
import json
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
    assert result["audio_sample_rate"] == 24000
    audio = Path(result["audio_path"]).read_bytes()
    seconds = len(audio) / 48000
    assert seconds >= 1.0, seconds
    level = float(np.sqrt(np.mean(np.frombuffer(audio, dtype="<i2").astype(np.float64) ** 2)))
    assert level > 100, level
    spoken = session.of(
        "response.audio_transcript.done" if beta else "response.output_audio_transcript.done"
    )[0]["transcript"]
    assert result["answer_text"].strip() == spoken.strip()
    assert await answer_transcript_check(voice_server, audio, "audio/pcm", spoken) <= 0.25
    done = session.of("response.done")[0]["response"]
    assert done["status"] == "completed", done
