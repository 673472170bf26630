"""The AI disclosure on calls, and the SIP caller's recording opt-out: a WebRTC caller (aiortc)
and a SIP caller (Debian's baresip) hear ``OPENREALTIME_DISCLOSURE`` before the first answer
(transcribed by the server's own ASR); it is kept with the session's recorded events; pressing
``OPENREALTIME_RECORDING_OPT_OUT_DTMF`` on the phone deletes the call's recording."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from openrealtime.recording import generate_key, read_bundle
from tests.e2e.test_sip_call import (
    SESSION,
    WEBHOOK_SECRET,
    Baresip,
    WebhookApp,
    sideband_until,
    target,
    transcribe_heard,
    webhook_app,
    write_caller_wav,
)
from tests.speech_audio import LEAD_MS as CLIP_LEAD_MS
from tests.speech_audio import caller_audio
from tests.support import ServerProcess, free_port, run_server
from tests.webrtc_client import Caller

pytestmark = pytest.mark.slow

DISCLOSURE = "You are talking to an automated assistant. This call may be recorded."
OPT_OUT = "9"
DISCLOSURE_WORDS = {"talking", "automated", "assistant", "call", "recorded"}
LEAD_MS = 9000
"""The SIP caller starts speaking this long after the call starts, once the disclosure is said."""


def words(text: str) -> set[str]:
    return set("".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split())


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"sip": free_port(), "hook": free_port()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ports: dict[str, int]) -> Iterator[ServerProcess]:
    if shutil.which("baresip") is None:
        pytest.fail("baresip is missing: run scripts/system-deps.sh (apt-get install baresip)")
    env = {
        "OPENREALTIME_SIP_ENABLED": "true",
        "OPENREALTIME_SIP_PORT": str(ports["sip"]),
        "OPENREALTIME_WEBHOOK_URL": f"http://127.0.0.1:{ports['hook']}/hook",
        "OPENREALTIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OPENREALTIME_DISCLOSURE": DISCLOSURE,
        "OPENREALTIME_RECORDING": "full",
        "OPENREALTIME_RECORDING_KEY": generate_key(),
        "OPENREALTIME_RECORDING_OPT_OUT_DTMF": OPT_OUT,
    }
    with run_server(tmp_path_factory.mktemp("disclosure-server"), env=env) as running:
        yield running


async def recordings_of(server: ServerProcess, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        answer = await http.get(
            "/recordings",
            params={"session_id": session_id},
            headers={"Authorization": f"Bearer {server.api_key}"},
        )
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data


async def bundle_of(server: ServerProcess, recording_id: str) -> bytes:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        answer = await http.get(
            f"/recordings/{recording_id}", headers={"Authorization": f"Bearer {server.api_key}"}
        )
        assert answer.status_code == 200, answer.text
        return answer.content


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    call = Caller()
    yield call
    await call.close()


async def test_a_webrtc_caller_hears_the_disclosure_before_the_first_answer(
    server: ServerProcess, caller: Caller
) -> None:
    session = {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "You are a helpful voice assistant. Answer in one short sentence.",
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
    }
    await caller.connect(server, session=session)
    created = (await caller.until("session.created", timeout=60))[-1]
    started = (await caller.until("output_audio_buffer.started", timeout=60))[-1]
    assert started["response_id"] == "disclosure"
    stopped = (await caller.until("output_audio_buffer.stopped", timeout=60))[-1]
    assert stopped["response_id"] == "disclosure"
    caller.mic.play(caller_audio("goforward"))
    await caller.until("response.done", timeout=180)
    answer_stopped = (await caller.until("output_audio_buffer.stopped", timeout=60))[-1]

    # the disclosure was played first, whole, before anything of the answer
    types = [e["type"] for _, e in caller.events]
    assert types.index("output_audio_buffer.started") < types.index("response.created")
    disclosure_pcm = caller.pcm_between(caller.time_of(started), caller.time_of(stopped) + 0.3, rate=8000)
    heard = await transcribe_heard(server, disclosure_pcm)
    print("the WebRTC caller heard:", heard)
    assert len(words(heard) & DISCLOSURE_WORDS) >= 2, heard
    assert caller.audio_between(caller.time_of(stopped) + 0.3, caller.time_of(answer_stopped)) > 0.3

    # and it is in the session's recording
    await caller.close()
    session_id = created["session"]["id"]
    deadline = time.monotonic() + 30
    while not (found := await recordings_of(server, session_id)) or found[0]["status"] != "complete":
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.3)
    with read_bundle(io.BytesIO(await bundle_of(server, found[0]["id"]))) as bundle:
        notes = [e for e in bundle.events() if e["dir"] == "note" and e["kind"] == "disclosure"]
        assert [n["data"]["text"] for n in notes] == [DISCLOSURE]
        assert len(bundle.caller_audio()) > 24000 and len(bundle.assistant_audio(played=True)) > 24000


def late_caller_wav(path: Path) -> Path:
    """The caller's microphone: silence, then the utterance starting at ``LEAD_MS``."""
    write_caller_wav(path)  # the utterance at the clip's own lead
    with wave.open(str(path)) as wav:
        utterance = wav.readframes(wav.getnframes())
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes((LEAD_MS - CLIP_LEAD_MS) * 16) + utterance)
    return path


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[Baresip]:
    # the caller waits until the disclosure has been said, then speaks
    agent = Baresip(tmp_path / "baresip", late_caller_wav(tmp_path / "caller.wav"))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.fixture
async def app(server: ServerProcess, ports: dict[str, int]) -> AsyncIterator[WebhookApp]:
    async with (
        AsyncOpenAI(base_url=server.base_url, api_key=server.api_key) as client,
        webhook_app(client, ports["hook"]) as receiver,
    ):
        yield receiver


async def test_a_sip_caller_hears_the_disclosure_and_can_stop_the_recording(
    server: ServerProcess, app: WebhookApp, phone: Baresip, ports: dict[str, int]
) -> None:
    async with AsyncOpenAI(base_url=server.base_url, api_key=server.api_key) as client:
        await phone.command("dial", target(ports))
        incoming = await app.next_call()
        call_id = incoming.data.call_id
        await client.realtime.calls.accept(call_id, type="realtime", **SESSION)
        seen: list[dict[str, Any]] = []
        url = f"{server.ws_url}/v1/realtime?call_id={call_id}"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {server.api_key}"}
        ) as ws:
            await phone.event("CALL_ESTABLISHED")
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            # (the sideband may join after the disclosure began: what the phone heard is the proof)
            answer_id = (await sideband_until(ws, "response.done", seen))["response"]["id"]
            while (await sideband_until(ws, "output_audio_buffer.stopped", seen))["response_id"] != answer_id:
                pass
            started = [e["response_id"] for e in seen if e["type"] == "output_audio_buffer.started"]
            assert started[-1] == answer_id and "disclosure" not in started[started.index(answer_id) :]
            updated = [e for e in seen if e["type"] == "session.updated"]
            session_id = (updated or [await sideband_until(ws, "session.updated", seen)])[0]["session"]["id"]
            assert await recordings_of(server, session_id) != []  # recorded so far
            await phone.command("sndcode", OPT_OUT)
            await sideband_until(ws, "input_audio_buffer.dtmf_event_received", seen)
            await client.realtime.calls.hangup(call_id)
            await phone.event("CALL_CLOSED")
    # the opt-out deleted the call's recording (files and index entry)
    deadline = time.monotonic() + 30
    while await recordings_of(server, session_id):
        assert time.monotonic() < deadline, "the opted-out recording is still listed"
        await asyncio.sleep(0.3)

    sent, heard = phone.heard()
    offset = len(sent) - len(heard)  # heard[0] is sent[offset]: both dumps end with the call
    speaks_at = LEAD_MS * 8 - offset  # where the caller starts speaking, in what it heard
    loud = np.flatnonzero(np.abs(heard.astype(np.int32)) > 500)
    assert loud.size, "the caller heard nothing"
    assert loud[0] < speaks_at, "the disclosure came before the caller spoke"
    before_speaking = heard[max(0, loud[0] - 1600) : speaks_at]
    said = await transcribe_heard(server, before_speaking)
    print("the SIP caller heard before speaking:", said)
    assert len(words(said) & DISCLOSURE_WORDS) >= 2, said
    assert (loud > speaks_at).any(), "an answer followed the disclosure"
