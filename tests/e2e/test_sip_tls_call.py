"""Phone calls over SIP-over-TLS with SRTP media, end to end: Debian's baresip calls a server
configured TLS-only with SRTP required (``SIP_TRANSPORTS=tls``, ``SIP_MEDIA_SECURITY=srtp``),
over loopback, with throwaway certificates from a private CA made for the test. The app
answers through the signed webhook, as in ``test_sip_call.py``; baresip's own SRTP stack
(libre's, not libsrtp) must decode the spoken answer, and a caller offering plain RTP is
refused with 488."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from openrealtime.audio.resample import resample
from tests.certificates import CertificateAuthority, make_ca
from tests.e2e.test_sip_call import (
    RING_TIMEOUT_S,
    SESSION,
    SPEECH_END_MS,
    WEBHOOK_SECRET,
    Baresip,
    WebhookApp,
    best_correlation,
    mouth_to_ear_ms,
    sideband_until,
    transcribe_heard,
    webhook_app,
    words_of,
    write_caller_wav,
)
from tests.support import ServerProcess, free_port, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("sip-tls-ca"))


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"sip_tls": free_port(), "hook": free_port()}


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, ports: dict[str, int], ca: CertificateAuthority
) -> Iterator[ServerProcess]:
    if shutil.which("baresip") is None:
        pytest.fail("baresip is missing: run scripts/system-deps.sh (apt-get install baresip)")
    leaf = ca.issue("openrealtime-sip")
    env = {
        "OPENREALTIME_SIP_ENABLED": "true",
        "OPENREALTIME_SIP_TRANSPORTS": "tls",
        "OPENREALTIME_SIP_TLS_PORT": str(ports["sip_tls"]),
        "OPENREALTIME_SIP_TLS_CERTFILE": str(leaf.certfile),
        "OPENREALTIME_SIP_TLS_KEYFILE": str(leaf.keyfile),
        "OPENREALTIME_SIP_MEDIA_SECURITY": "srtp",
        "OPENREALTIME_SIP_RING_TIMEOUT_S": str(RING_TIMEOUT_S),
        "OPENREALTIME_WEBHOOK_URL": f"http://127.0.0.1:{ports['hook']}/hook",
        "OPENREALTIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with run_server(tmp_path_factory.mktemp("sip-tls-server"), env=env) as server:
        yield server


@pytest.fixture
async def openai_client(tls_server: ServerProcess) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=tls_server.base_url, api_key=tls_server.api_key) as client:
        yield client


@pytest.fixture
async def app(openai_client: AsyncOpenAI, ports: dict[str, int]) -> AsyncIterator[WebhookApp]:
    async with webhook_app(openai_client, ports["hook"]) as receiver:
        yield receiver


def tls_phone(tmp_path: Path, ca: CertificateAuthority, account_params: str) -> Baresip:
    """baresip with SIP over TLS (its own certificate, our CA) and, per ``account_params``,
    SDES-SRTP (``;mediaenc=srtp-mand``: ``RTP/SAVP`` offers with ``a=crypto``) or plain RTP."""
    leaf = ca.issue("baresip")
    return Baresip(
        tmp_path / "baresip",
        write_caller_wav(tmp_path / "caller.wav"),
        account=f"<sip:caller@127.0.0.1;transport=tls>;regint=0{account_params}",
        extra_config=[f"sip_certificate {leaf.combined}", f"sip_cafile {ca.cafile}", "module srtp.so"],
    )


@pytest.fixture
async def srtp_phone(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Baresip]:
    agent = tls_phone(tmp_path, ca, ";mediaenc=srtp-mand")
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.fixture
async def plain_phone(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Baresip]:
    agent = tls_phone(tmp_path, ca, "")
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def target(ports: dict[str, int]) -> str:
    return f"sip:test@127.0.0.1:{ports['sip_tls']};transport=tls"


async def test_a_tls_srtp_call_is_answered_and_the_caller_hears_the_answer(
    tls_server: ServerProcess,
    openai_client: AsyncOpenAI,
    app: WebhookApp,
    srtp_phone: Baresip,
    ports: dict[str, int],
) -> None:
    phone = srtp_phone
    await phone.command("dial", target(ports))
    incoming = await app.next_call()
    call_id = incoming.data.call_id
    assert incoming.data.sip_media_security == "srtp"
    via = next(header.value for header in incoming.data.sip_headers if header.name == "Via")
    assert via.startswith("SIP/2.0/TLS "), via

    await openai_client.realtime.calls.accept(call_id, type="realtime", **SESSION)
    url = f"{tls_server.ws_url}/v1/realtime?call_id={call_id}"
    seen: list[dict[str, Any]] = []
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {tls_server.api_key}"}
    ) as ws:
        await phone.event("CALL_ESTABLISHED")
        transcript = await sideband_until(ws, "conversation.item.input_audio_transcription.completed", seen)
        assert "forward" in transcript["transcript"].lower(), transcript  # SRTP in, decrypted
        await sideband_until(ws, "output_audio_buffer.started", seen)
        done = await sideband_until(ws, "response.done", seen)
        assert done["response"]["status"] == "completed"
        answer = " ".join(
            part.get("transcript") or ""
            for item in done["response"]["output"]
            for part in item.get("content", [])
        )
        await sideband_until(ws, "output_audio_buffer.stopped", seen)
        item_id = next(item["id"] for item in done["response"]["output"] if item["type"] == "message")
        await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": item_id}))
        retrieved = await sideband_until(ws, "conversation.item.retrieved", seen)
        spoken = np.frombuffer(base64.b64decode(retrieved["item"]["content"][0]["audio"]), "<i2")

        await phone.command("sndcode", "7")  # RFC 4733 events ride the SRTP stream too
        assert (await sideband_until(ws, "input_audio_buffer.dtmf_event_received", seen))["event"] == "7"

        await openai_client.realtime.calls.hangup(call_id)  # BYE back over the caller's TLS connection
        await phone.event("CALL_CLOSED")
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in phone.log()

    sent, heard = phone.heard()
    latency_ms = mouth_to_ear_ms(sent, heard)
    offset = len(sent) - len(heard)
    heard_answer = whole_answer(heard[SPEECH_END_MS * 8 - offset :])
    reference = resample(spoken, 24000, 8000)
    similarity = best_correlation(heard_answer, reference)
    piecewise = piecewise_correlation(heard_answer, reference)
    voiced = voiced_frames(heard_answer) / voiced_frames(reference)
    heard_text = await transcribe_heard(tls_server, without_long_pauses(heard_answer))
    print(
        f"\nTLS+SRTP call: mouth-to-ear {latency_ms:.0f} ms; heard vs answer audio correlation "
        f"{similarity:.3f} (piece by piece {piecewise:.3f}, voiced frames {voiced:.2f} of the answer's); "
        f"answer: {answer!r}; the caller heard: {heard_text!r}"
    )
    # baresip decrypted the answer: what it heard is the answer audio, and none of it is missing
    # (a loaded machine may still open pauses in the answer: each piece is compared on its own)
    assert piecewise > 0.9, (piecewise, similarity)
    assert voiced > 0.9, voiced
    overlap = set(words_of(heard_text)) & set(words_of(answer))
    assert len(overlap) >= max(1, len(set(words_of(answer))) // 3), (heard_text, answer)


def whole_answer(heard: np.ndarray) -> np.ndarray:
    """Everything the caller heard after its question, first to last loud sample, padded:
    the call's only answer, however long the pauses a loaded machine opened in it."""
    loud = np.flatnonzero(np.abs(heard.astype(np.int32)) > 500)
    assert loud.size, "the caller heard no answer"
    return heard[max(0, loud[0] - 1600) : loud[-1] + 2400]


def without_long_pauses(pcm8k: np.ndarray, keep_frames: int = 15) -> np.ndarray:
    """The audio with every quiet stretch cut to 300 ms, so a pause the playout had to insert
    does not end the transcription early."""
    frames = pcm8k[: len(pcm8k) // 160 * 160].reshape(-1, 160)
    quiet = np.abs(frames.astype(np.int32)).max(axis=1) <= 64
    kept: list[np.ndarray] = []
    run = 0
    for frame, is_quiet in zip(frames, quiet, strict=True):
        run = run + 1 if is_quiet else 0
        if run <= keep_frames:
            kept.append(frame)
    return np.concatenate(kept)


def voiced_frames(pcm8k: np.ndarray) -> int:
    """20 ms frames with speech in them (G.711 keeps levels, so both sides count alike)."""
    frames = pcm8k[: len(pcm8k) // 160 * 160].astype(np.int32).reshape(-1, 160)
    return int((np.abs(frames).max(axis=1) > 500).sum())


def piecewise_correlation(heard: np.ndarray, reference: np.ndarray) -> float:
    """``best_correlation`` of each stretch of what was heard (split at pauses of 100 ms or
    more) with the reference, weighted by length: a pause the playout had to insert while the
    answer was still being synthesised does not count against it, wrong audio does."""
    loud = np.abs(heard[: len(heard) // 160 * 160].astype(np.int32)).reshape(-1, 160).max(axis=1) > 64
    pieces: list[tuple[int, int]] = []
    start: int | None = None
    quiet = 0
    for index, frame_is_loud in enumerate(loud):
        if frame_is_loud:
            start = index if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet == 5:
                pieces.append((start, index - quiet + 1))
                start = None
    if start is not None:
        pieces.append((start, len(loud)))
    scored = [(b - a, best_correlation(heard[a * 160 : b * 160], reference)) for a, b in pieces if b - a >= 5]
    assert scored, "nothing loud enough to compare"
    return sum(length * score for length, score in scored) / sum(length for length, _ in scored)


async def test_a_plain_rtp_offer_is_refused_with_488(
    app: WebhookApp, plain_phone: Baresip, ports: dict[str, int]
) -> None:
    await plain_phone.command("dial", target(ports))
    closed = await plain_phone.event("CALL_CLOSED")
    assert "488" in json.dumps(closed), closed
    assert app.events.empty() and not app.raw  # refused before the app heard of it
