"""Barge-in on a SIP call: the answer the caller interrupts ends with reason ``turn_detected``,
as on WebRTC (fakes stand in for the models: this tests the call, its RTP, the session runtime
and its playback; the real engines and a real phone are exercised in tests/e2e).

The answer is an out-of-band response, which the session's own barge-in does not stop (it
stops the default-conversation response): the playback's clearing does, and it must give the
same reason as WebRTC's (it once said ``client_cancelled`` on SIP).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from openrealtime.audio.g711 import ulaw_encode
from openrealtime.core.session import SessionCore
from openrealtime.engines.base import (
    CancelToken,
    ChatRequest,
    FloatAudio,
    GenerationDone,
    LLMEvent,
    TextDelta,
    Transcript,
    VoiceInfo,
)
from openrealtime.engines.registry import EngineSet
from openrealtime.protocol.session import RealtimeSession
from openrealtime.runtime.observer import SessionInfo
from openrealtime.runtime.port import ClientOutput, SessionClient
from openrealtime.runtime.scheduler import Scheduler
from openrealtime.runtime.session_runtime import SessionRuntime
from openrealtime.transports.sip.call import SipCall
from openrealtime.transports.sip.dialog import Dialog
from openrealtime.transports.sip.message import SipRequest, SipResponse, parse_message
from openrealtime.transports.sip.rtp import RtpPacket
from openrealtime.transports.sip.sdp import negotiate
from openrealtime.transports.wire import EventWire


class OneSentence:
    name = "scripted"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        yield TextDelta("Here is a long answer that the caller will interrupt before it ends.")
        yield GenerationDone("stop", prompt_tokens=10, cached_prompt_tokens=0, completion_tokens=14)


class SlowTone:
    """Speech made slower than it plays, so the answer is still being generated when the
    caller speaks."""

    name = "tone"
    sample_rate = 24_000

    def voices(self) -> list[VoiceInfo]:
        return []

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[Any]:
        tone = (3000 * np.sin(2 * np.pi * 220 * np.arange(2400) / 24_000)).astype(np.int16)
        for _ in range(40):  # 4 s of sound, made in 6 s
            if cancel is not None and cancel.cancelled:
                return
            time.sleep(0.15)
            yield tone


class Voices:
    def resolve(self, name: str, language: str | None = None) -> tuple[Any, str]:
        return SlowTone(), "tone"

    def describe(self) -> list[dict[str, Any]]:
        return []


class LoudnessVAD:
    """Speech is any frame louder than a whisper."""

    sample_rate = 16_000
    frame_samples = 512

    def new_stream(self) -> LoudnessVAD:
        return self

    def speech_probability(self, frame: FloatAudio) -> float:
        return 0.95 if float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > 0.02 else 0.0

    def reset(self) -> None:
        return None


class NoWords:
    name = "none"
    sample_rate = 16_000

    def transcribe(self, audio: Any, *, language: str | None = None, prompt: str | None = None) -> Transcript:
        return Transcript("")


class Signaling:
    media_host = "127.0.0.1"

    def final_response(self, call: SipCall, status: int, *, body: bytes = b"") -> None:
        return None

    async def request(
        self, call: SipCall, method: str, headers: list[tuple[str, str]] | None = None
    ) -> SipResponse | None:
        return None

    def call_ended(self, call: SipCall) -> None:
        return None


class Sideband:
    """An attached sideband socket: what the app sees of the call."""

    def __init__(self) -> None:
        self.wire = EventWire()
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def send(self, output: ClientOutput) -> None:
        self.events.extend(json.loads(frame) for frame in self.wire.encode(output))
        self.arrived.set()

    async def close(self, code: int, reason: str) -> None:
        return None

    async def until(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                found = [e for e in self.events if e["type"] == kind]
                if found:
                    return found[0]
                self.arrived.clear()
                await self.arrived.wait()


def invite(rtp_port: int) -> tuple[SipRequest, str]:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    message = parse_message(
        b"INVITE sip:test@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:test@127.0.0.1>\r\n"
        b"Call-ID: barge-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(message, SipRequest)
    return message, sdp


async def test_barge_in_on_sip_cancels_the_interrupted_answer_as_turn_detected() -> None:
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.setblocking(False)
    request, offer = invite(phone.getsockname()[1])
    call = SipCall(
        "rtc_barge", request, offer, negotiate(offer), Dialog.from_invite(request, "l1"), Signaling()
    )
    engines = EngineSet(llm=OneSentence(), transcriber=NoWords(), vad=LoudnessVAD(), voices=Voices())  # type: ignore[arg-type]
    scheduler = Scheduler()

    def make_runtime(client: SessionClient) -> SessionRuntime:
        core = SessionCore(
            RealtimeSession(),
            count_tokens=lambda s: len(s.split()),
            created_at=int(time.time()),
            server_playback=True,
        )
        info = SessionInfo(session_id="", key_id="key_test", transport="sip", model="")
        return SessionRuntime(core, engines, scheduler, client, info=info)

    sideband = Sideband()
    await call.attach(sideband)
    await call.accept(make_runtime, "key_test")
    try:
        await sideband.until("session.created")
        answer = {"conversation": "none", "output_modalities": ["audio"], "instructions": "Talk."}
        call.receive_frame(json.dumps({"type": "response.create", "response": answer}), sideband.wire)
        created = await sideband.until("response.created")
        assert created["response"]["conversation_id"] is None  # not the default conversation's
        await sideband.until("output_audio_buffer.started")

        assert call.rtp is not None
        noise = np.random.default_rng(3).normal(0, 6000, 160 * 30).clip(-32768, 32767).astype(np.int16)
        for sequence in range(30):  # 600 ms of the caller speaking over the answer: not the answer's echo
            speech = ulaw_encode(noise[sequence * 160 : (sequence + 1) * 160]).tobytes()
            packet = RtpPacket(0, sequence, sequence * 160, 1234, speech, sequence == 0)
            phone.sendto(packet.serialize(), ("127.0.0.1", call.rtp.local_port))
            await asyncio.sleep(0.02)

        done = await sideband.until("response.done")
        kinds = [e["type"] for e in sideband.events]
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("output_audio_buffer.cleared")
        assert kinds.index("output_audio_buffer.cleared") < kinds.index("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    finally:
        await call.close()
        phone.close()
