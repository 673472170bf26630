"""Phone calls end to end: Debian's baresip (a SIP user agent we did not write) calls the real
server over UDP on loopback, an "app" verifies the signed ``realtime.call.incoming`` webhook
with the openai SDK and controls the call with ``client.realtime.calls.*``, and a sideband
WebSocket watches the session. baresip plays a recorded utterance as its microphone
(``aufile``) and dumps what it hears to a WAV file (``sndfile``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
import websockets
from openai import AsyncOpenAI, BadRequestError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openrealtime.audio.g711 import ulaw_encode
from openrealtime.audio.resample import resample
from tests.speech_audio import LEAD_MS, REFERENCE_EDGES, caller_audio
from tests.support import ServerProcess, free_port, run_server, validate_server_event

pytestmark = pytest.mark.slow

CLIP = "goforward"
""""go forward ten meters": short and distinctive."""
SPEECH_END_MS = LEAD_MS + REFERENCE_EDGES[CLIP][1]
TRAILING_SILENCE_S = 25.0
RING_TIMEOUT_S = 6
WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SESSION: dict[str, Any] = {
    "model": "gpt-realtime",
    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
}


# ------------------------------------------------------------------ the app (webhook receiver)


@dataclass
class WebhookApp:
    """Receives webhooks, verifies them with the openai SDK, queues the parsed events."""

    client: AsyncOpenAI
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    refused: int = 0
    failing: bool = False

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        self.raw.append((body, headers))
        if self.failing:
            return Response(status_code=500)
        try:
            event = self.client.webhooks.unwrap(body, headers, secret=WEBHOOK_SECRET)
        except Exception:
            self.refused += 1
            return Response(status_code=400)
        await self.events.put(event)
        return Response(status_code=200)

    async def next_call(self, timeout: float = 30.0) -> Any:
        event = await asyncio.wait_for(self.events.get(), timeout)
        assert event.type == "realtime.call.incoming"
        return event


@contextlib.asynccontextmanager
async def webhook_app(client: AsyncOpenAI, port: int) -> AsyncIterator[WebhookApp]:
    app = WebhookApp(client)
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", app.receive, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield app
    finally:
        server.should_exit = True
        await task


# ------------------------------------------------------------------ baresip


class Baresip:
    """One headless baresip, driven over its ``ctrl_tcp`` JSON interface (netstrings).
    ``account`` is its accounts line; ``extra_config`` adds config lines (TLS, SRTP)."""

    def __init__(
        self,
        home: Path,
        source_wav: Path,
        *,
        account: str = "<sip:caller@127.0.0.1>;regint=0",
        extra_config: Sequence[str] = (),
    ) -> None:
        self.home = home
        self.ctrl_port = free_port()
        self.sip_port = free_port()
        self.dumps = home / "dumps"
        self.dumps.mkdir(parents=True, exist_ok=True)
        (home / "accounts").write_text(account + "\n")
        (home / "contacts").write_text("")
        (home / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{self.sip_port}",
                    "call_local_timeout 120",
                    "call_max_calls 4",
                    "audio_player alsa,null",
                    "audio_alert alsa,null",
                    f"audio_source aufile,{source_wav}",
                    "ausrc_srate 8000",
                    "auplay_srate 8000",
                    "ausrc_channels 1",
                    "auplay_channels 1",
                    "rtcp_mux no",
                    "jitter_buffer_delay 1-3",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",
                    "module aufile.so",
                    "module alsa.so",
                    "module sndfile.so",
                    f"snd_path {self.dumps}",
                    *extra_config,
                    "module_tmp account.so",
                    "module_app menu.so",
                    "module ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    "",
                ]
            )
        )
        self.log_path = home / "baresip.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["baresip", "-f", str(self.home), "-s", "-v"], stdout=log, stderr=subprocess.STDOUT
            )
        for _ in range(200):
            try:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("baresip did not open its control port:\n" + self.log())
        self._pump = asyncio.create_task(self._read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def _read(self) -> None:
        assert self.reader is not None
        while True:
            length = await self.reader.readuntil(b":")
            data = await self.reader.readexactly(int(length[:-1]))
            await self.reader.readexactly(1)  # ","
            message = json.loads(data)
            (self.events if message.get("event") else self.responses).put_nowait(message)

    async def command(self, command: str, params: str = "") -> dict[str, Any]:
        assert self.writer is not None
        payload = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.writer.write(str(len(payload)).encode() + b":" + payload + b",")
        await self.writer.drain()
        return await asyncio.wait_for(self.responses.get(), 10)

    async def event(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next event of type ``kind`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event.get("type") == kind:
                    return event

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self.writer is not None:
            self.writer.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def heard(self) -> tuple[np.ndarray, np.ndarray]:
        """(what baresip sent, what it heard) as 8 kHz int16, from the ``sndfile`` dumps."""
        sent = sorted(self.dumps.glob("*-enc.wav"))
        heard = sorted(self.dumps.glob("*-dec.wav"))
        assert sent and heard, f"no dumps in {list(self.dumps.iterdir())}"
        return _read_wav(sent[-1]), _read_wav(heard[-1])


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 8000 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").copy()


def write_caller_wav(path: Path, clip: str = CLIP, lead_ms: int = LEAD_MS) -> Path:
    """The utterance with room tone around it (``lead_ms`` before), then silence, as 8 kHz
    mono 16-bit WAV."""
    speech = resample(caller_audio(clip)[(LEAD_MS - lead_ms) * 24 :], 24000, 8000)
    samples = np.concatenate([speech, np.zeros(int(TRAILING_SILENCE_S * 8000), np.int16)]).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(samples.tobytes())
    return path


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"sip": free_port(), "hook": free_port()}


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory, ports: dict[str, int]) -> Iterator[ServerProcess]:
    if shutil.which("baresip") is None:
        pytest.fail("baresip is missing: run scripts/system-deps.sh (apt-get install baresip)")
    env = {
        "OPENREALTIME_SIP_ENABLED": "true",
        "OPENREALTIME_SIP_PORT": str(ports["sip"]),
        "OPENREALTIME_SIP_RING_TIMEOUT_S": str(RING_TIMEOUT_S),
        "OPENREALTIME_WEBHOOK_URL": f"http://127.0.0.1:{ports['hook']}/hook",
        "OPENREALTIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with run_server(tmp_path_factory.mktemp("sip-server"), env=env) as server:
        yield server


@pytest.fixture
async def openai_client(sip_server: ServerProcess) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=sip_server.base_url, api_key=sip_server.api_key) as client:
        yield client


@pytest.fixture
async def app(openai_client: AsyncOpenAI, ports: dict[str, int]) -> AsyncIterator[WebhookApp]:
    async with webhook_app(openai_client, ports["hook"]) as receiver:
        yield receiver


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[Baresip]:
    agent = Baresip(tmp_path / "baresip", write_caller_wav(tmp_path / "caller.wav"))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def target(ports: dict[str, int], user: str = "test") -> str:
    return f"sip:{user}@127.0.0.1:{ports['sip']}"


async def sideband_until(
    ws: Any, kind: str, seen: list[dict[str, Any]], timeout: float = 60.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            event = validate_server_event(await ws.recv())
            seen.append(event)
            if event["type"] == kind:
                return event


# ------------------------------------------------------------------ tests


async def test_call_answered_transcribed_spoken_dtmf_and_hung_up(
    sip_server: ServerProcess,
    openai_client: AsyncOpenAI,
    app: WebhookApp,
    phone: Baresip,
    ports: dict[str, int],
) -> None:
    await phone.command("dial", target(ports))
    incoming = await app.next_call()
    call_id = incoming.data.call_id
    assert call_id.startswith("rtc_") and incoming.id.startswith("evt_")
    names = [header.name for header in incoming.data.sip_headers]
    assert "Call-ID" in names and "Via" in names and "Authorization" not in names
    assert "180 Ringing" in phone.log()

    await openai_client.realtime.calls.accept(call_id, type="realtime", **SESSION)
    url = f"{sip_server.ws_url}/v1/realtime?call_id={call_id}"
    seen: list[dict[str, Any]] = []
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {sip_server.api_key}"}
    ) as ws:
        await phone.event("CALL_ESTABLISHED")
        transcript = await sideband_until(ws, "conversation.item.input_audio_transcription.completed", seen)
        words = transcript["transcript"].lower()
        assert "forward" in words, words
        await sideband_until(ws, "output_audio_buffer.started", seen)
        done = await sideband_until(ws, "response.done", seen)
        assert done["response"]["status"] == "completed"
        answer = " ".join(
            part.get("transcript") or ""
            for item in done["response"]["output"]
            for part in item.get("content", [])
        )
        await sideband_until(ws, "output_audio_buffer.stopped", seen)
        assert not any(event["type"] == "response.output_audio.delta" for event in seen)
        item_id = next(item["id"] for item in done["response"]["output"] if item["type"] == "message")
        await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": item_id}))
        retrieved = await sideband_until(ws, "conversation.item.retrieved", seen)
        spoken = np.frombuffer(base64.b64decode(retrieved["item"]["content"][0]["audio"]), "<i2")

        for digit in "1#":
            await phone.command("sndcode", digit)
        digits = [
            (await sideband_until(ws, "input_audio_buffer.dtmf_event_received", seen))["event"] for _ in "1#"
        ]
        assert digits == ["1", "#"]

        await openai_client.realtime.calls.hangup(call_id)
        await phone.event("CALL_CLOSED")
    assert "BYE sip:" in phone.log()

    sent, heard = phone.heard()
    latency_ms = mouth_to_ear_ms(sent, heard)

    offset = len(sent) - len(heard)
    before_answer = heard[: SPEECH_END_MS * 8 - offset]
    assert np.abs(before_answer.astype(np.int32)).max() < 64, "silence between turns must be silent"
    heard_answer = answer_span(heard[SPEECH_END_MS * 8 - offset :])
    similarity = best_correlation(heard_answer, resample(spoken, 24000, 8000))
    print(f"\nwhat the caller heard vs the session's answer audio: correlation {similarity:.3f}")
    assert similarity > 0.9, similarity
    heard_text = await transcribe_heard(sip_server, answer_span(heard[SPEECH_END_MS * 8 - offset :]))
    print(f"\nmouth-to-ear: {latency_ms:.0f} ms; answer: {answer!r}; the caller heard: {heard_text!r}")
    overlap = set(words_of(heard_text)) & set(words_of(answer))
    assert len(overlap) >= max(1, len(set(words_of(answer))) // 3), (
        heard_text,
        answer,
    )  # phone band, whisper-base


def best_correlation(heard: np.ndarray, reference: np.ndarray) -> float:
    """Normalised correlation of ``reference`` with ``heard`` at their best alignment: G.711
    and resampling keep it near 1; lost, reordered or inserted packets pull it down."""
    a = heard.astype(np.float64)
    b = reference.astype(np.float64)
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    cross = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lag = int(np.argmax(cross))
    lag = lag if lag < size - len(b) else lag - size
    start = max(0, lag)
    overlap = min(len(a) - start, len(b) + min(0, lag))
    x = a[start : start + overlap]
    y = b[max(0, -lag) : max(0, -lag) + overlap]
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))


def answer_span(heard: np.ndarray) -> np.ndarray:
    """The first answer the caller heard: first to last loud sample (gaps under 1 s), padded."""
    loud = np.flatnonzero(np.abs(heard.astype(np.int32)) > 500)
    assert loud.size, "the caller heard no answer"
    gaps = np.flatnonzero(np.diff(loud) > 8000)
    end = loud[gaps[0]] if gaps.size else loud[-1]
    return heard[max(0, loud[0] - 1600) : end + 2400]


def words_of(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def mouth_to_ear_ms(sent: np.ndarray, heard: np.ndarray) -> float:
    """Caller's last speech sample → first answer sample in the caller's recording. Both dumps
    end when the call closes, so they are aligned on their ends (baresip opens the decoder's
    dump only when the first RTP packet arrives)."""
    offset = len(sent) - len(heard)  # heard[0] is sent[offset]
    speech_end = SPEECH_END_MS * 8
    loud = np.flatnonzero(np.abs(heard.astype(np.int32)) > 500) + offset
    after = loud[loud > speech_end]
    assert after.size, "the caller heard no answer"
    return float(after[0] - speech_end) / 8


async def transcribe_heard(server: ServerProcess, pcm8k: np.ndarray) -> str:
    """What the caller heard, transcribed by the server's own ASR (a transcription session)."""
    url = f"{server.ws_url}/v1/realtime?intent=transcription"
    audio = base64.b64encode(bytes(ulaw_encode(pcm8k))).decode()
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {server.api_key}"}
    ) as ws:
        config = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": None,
                }
            },
        }
        await ws.send(json.dumps({"type": "session.update", "session": config}))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        seen: list[dict[str, Any]] = []
        done = await sideband_until(ws, "conversation.item.input_audio_transcription.completed", seen)
        return str(done["transcript"])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_reject_answers_the_invite_with_the_status(
    openai_client: AsyncOpenAI, app: WebhookApp, phone: Baresip, ports: dict[str, int], transport: str
) -> None:
    await phone.command("dial", f"{target(ports)};transport={transport}")
    call_id = (await app.next_call()).data.call_id
    with pytest.raises(BadRequestError) as invalid:  # a bad session config leaves the call ringing
        await openai_client.realtime.calls.accept(call_id, type="realtime", audio={"output": {"speed": 9}})
    assert "speed" in str(invalid.value)
    await openai_client.realtime.calls.reject(call_id, status_code=486)
    closed = await phone.event("CALL_CLOSED")
    assert "486" in json.dumps(closed), closed
    assert "SIP/2.0 486 Busy Here" in phone.log()
    assert f"INVITE sip:test@127.0.0.1:{ports['sip']};transport={transport}" in phone.log()
    with pytest.raises(Exception) as gone:  # the call no longer exists
        await openai_client.realtime.calls.reject(call_id)
    assert getattr(gone.value, "status_code", None) == 404


async def test_unanswered_call_times_out_with_480(
    app: WebhookApp, phone: Baresip, ports: dict[str, int]
) -> None:
    await phone.command("dial", target(ports))
    await app.next_call()
    closed = await phone.event("CALL_CLOSED", timeout=RING_TIMEOUT_S + 15)
    assert "480" in json.dumps(closed), closed
    assert "SIP/2.0 480 Temporarily Unavailable" in phone.log()


async def test_refer_transfers_the_caller(
    openai_client: AsyncOpenAI, app: WebhookApp, phone: Baresip, ports: dict[str, int]
) -> None:
    await phone.command("dial", target(ports))
    first = (await app.next_call()).data.call_id
    await openai_client.realtime.calls.accept(first, type="realtime", **SESSION)
    await phone.event("CALL_ESTABLISHED")
    with pytest.raises(Exception) as twice:
        await openai_client.realtime.calls.accept(first, type="realtime", **SESSION)
    assert getattr(twice.value, "status_code", None) == 409
    await openai_client.realtime.calls.refer(first, target_uri=target(ports, "transfer-desk"))
    assert "REFER sip:" in phone.log() and "Refer-To: <sip:transfer-desk@" in phone.log()
    transferred = await app.next_call()  # baresip follows the REFER and calls the target
    to_header = next(h.value for h in transferred.data.sip_headers if h.name == "To")
    assert "transfer-desk" in to_header
    second = transferred.data.call_id
    await openai_client.realtime.calls.accept(second, type="realtime", **SESSION)
    # the transfer target answered: baresip reports it (NOTIFY 200) and our first leg ends
    async with asyncio.timeout(20):
        while "BYE sip:" not in phone.log():
            await asyncio.sleep(0.1)
    await openai_client.realtime.calls.hangup(second)


async def test_call_control_errors(sip_server: ServerProcess, openai_client: AsyncOpenAI) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=sip_server.url) as http:
        auth = {"Authorization": f"Bearer {sip_server.api_key}"}
        missing = await http.post(
            "/v1/realtime/calls/rtc_nope/accept", json={"type": "realtime"}, headers=auth
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "call_not_found"
        anonymous = await http.post("/v1/realtime/calls/rtc_nope/reject", json={})
        assert anonymous.status_code == 401
        secret = await openai_client.realtime.client_secrets.create()
        ephemeral = await http.post(
            "/v1/realtime/calls/rtc_nope/refer",
            json={"target_uri": "tel:+15550100"},
            headers={"Authorization": f"Bearer {secret.value}"},
        )
        assert ephemeral.status_code == 401


LONG_ANSWERS = {
    **SESSION,
    "instructions": "You are a talkative assistant. Answer every question with a long, detailed "
    "explanation of at least six sentences.",
}
INTERRUPTION = "librivox-0880"
""""he was not an ill disposed young man": the caller talks over the answer."""


async def test_barge_in_flushes_the_answer_at_once(
    sip_server: ServerProcess,
    openai_client: AsyncOpenAI,
    app: WebhookApp,
    phone: Baresip,
    ports: dict[str, int],
    tmp_path: Path,
) -> None:
    interruption = write_caller_wav(tmp_path / "interruption.wav", INTERRUPTION, lead_ms=100)
    await phone.command("dial", target(ports))
    call_id = (await app.next_call()).data.call_id
    await openai_client.realtime.calls.accept(call_id, type="realtime", **LONG_ANSWERS)
    url = f"{sip_server.ws_url}/v1/realtime?call_id={call_id}"
    seen: list[dict[str, Any]] = []
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {sip_server.api_key}"}
    ) as ws:
        started = await sideband_until(ws, "output_audio_buffer.started", seen, timeout=90)
        await asyncio.sleep(0.5)  # the caller hears the answer for a moment, then talks over it
        await phone.command("ausrc", f"aufile,{interruption}")
        cleared = await sideband_until(ws, "output_audio_buffer.cleared", seen)
        assert cleared["response_id"] == started["response_id"]
        truncated = await sideband_until(ws, "conversation.item.truncated", seen)
        assert truncated["audio_end_ms"] > 0
        await sideband_until(ws, "input_audio_buffer.speech_stopped", seen)
        await openai_client.realtime.calls.hangup(call_id)
        await phone.event("CALL_CLOSED")
    sent, heard = phone.heard()
    offset = len(sent) - len(heard)
    # where the interruption starts in what the caller sent (after the first utterance)
    loud_sent = np.flatnonzero(np.abs(sent.astype(np.int32)) > 1500)
    onset = int(loud_sent[loud_sent > (SPEECH_END_MS + 500) * 8][0])
    # the answer must go quiet soon after, and stay quiet while the caller keeps talking
    level = np.abs(heard.astype(np.int32))
    window = 8 * 400
    quiet_from = next(
        start
        for start in range(onset - offset, len(heard) - window, 80)
        if level[start : start + window].max() < 64
    )
    cut_ms = (quiet_from + offset - onset) / 8
    print(f"\nbarge-in: the answer went silent {cut_ms:.0f} ms after the caller started talking")
    assert cut_ms < 1500, cut_ms
    assert level[onset - offset - 8 * 600 : onset - offset].max() > 500, "the answer was playing before"


async def test_undeliverable_webhook_declines_the_call(
    app: WebhookApp, phone: Baresip, ports: dict[str, int]
) -> None:
    app.failing = True
    await phone.command("dial", target(ports))
    closed = await phone.event("CALL_CLOSED")
    assert "503" in json.dumps(closed), closed
    assert len(app.raw) == 2  # delivered twice, refused twice
    first, second = (json.loads(body)["data"]["call_id"] for body, _ in app.raw)
    assert first == second
