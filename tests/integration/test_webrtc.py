"""WebRTC calls against the real server: aiortc as the browser, real recorded speech in,
the assistant's voice back over RTP, events over the ``oai-events`` data channel and a
sideband WebSocket."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI, NotFoundError

from tests.speech_audio import LEAD_MS, REFERENCE_EDGES, caller_audio, espeak
from tests.support import ServerProcess, validate_server_event
from tests.webrtc_client import Caller

VOICE_SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a helpful voice assistant. Answer in one or two short sentences.",
    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
}


def auth(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    call = Caller()
    yield call
    await call.close()


async def live_webrtc_sessions(server: ServerProcess) -> float:
    """The server's own count of open WebRTC sessions (Prometheus gauge)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics", headers=auth(server))).text
    for line in text.splitlines():
        if line.startswith('openrealtime_active_sessions{transport="webrtc"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def sideband_recv(ws: Any, kind: str, timeout: float = 30.0) -> dict[str, Any]:
    while True:
        event = validate_server_event(await asyncio.wait_for(ws.recv(), timeout))
        if event["type"] == kind:
            return event


# ------------------------------------------------------------------ signalling (no speech models)


async def test_bad_offers_get_openai_shaped_errors(text_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=text_server.url) as http:
        missing_auth = await http.post(
            "/v1/realtime/calls", content="v=0\r\n", headers={"Content-Type": "application/sdp"}
        )
        assert missing_auth.status_code == 401
        assert missing_auth.json()["error"]["code"] == "invalid_api_key"

        garbage = await http.post(
            "/v1/realtime/calls",
            content="this is not sdp",
            headers={**auth(text_server), "Content-Type": "application/sdp"},
        )
        assert garbage.status_code == 400
        error = garbage.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "sdp"

        broken = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        no_ice = await http.post(
            "/v1/realtime/calls",
            content=broken,
            headers={**auth(text_server), "Content-Type": "application/sdp"},
        )
        assert no_ice.status_code == 400
        assert set(no_ice.json()["error"]) == {"message", "type", "param", "code"}

        bad_session = await http.post(
            "/v1/realtime/calls",
            headers=auth(text_server),
            files={
                "sdp": (None, broken, "application/sdp"),
                "session": (None, json.dumps({"type": "realtime", "audio": {"output": {"speed": 9}}})),
            },
        )
        assert bad_session.status_code == 400
        assert bad_session.json()["error"]["param"].startswith("session.audio.output.speed")

        unknown = await http.post("/v1/realtime/calls/rtc_nope/hangup", headers=auth(text_server))
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "call_not_found"

        unauthorised = await http.post("/v1/realtime/calls/rtc_nope/hangup")
        assert unauthorised.status_code == 401


async def test_call_session_sideband_and_hangup(text_server: ServerProcess, caller: Caller) -> None:
    before = await live_webrtc_sessions(text_server)
    call_id = await caller.connect(text_server, session={"type": "realtime", "model": "gpt-realtime"})
    created = (await caller.until("session.created", timeout=30))[-1]
    assert await live_webrtc_sessions(text_server) == before + 1
    assert created["session"]["model"] == "gpt-realtime"

    url = f"{text_server.ws_url}/v1/realtime?call_id={call_id}"
    async with websockets.connect(url, additional_headers=auth(text_server)) as sideband:
        await sideband.send(
            json.dumps(
                {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
            )
        )
        on_sideband = await sideband_recv(sideband, "session.updated")
        on_channel = (await caller.until("session.updated", timeout=30))[-1]
        assert on_sideband["event_id"] == on_channel["event_id"]
        assert on_channel["session"]["instructions"] == "Be brief."

        # a client event on the data channel is answered on both
        caller.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": "hello"}]}})  # fmt: skip
        await sideband_recv(sideband, "conversation.item.added")
        await caller.until("conversation.item.added", timeout=30)

        async with httpx.AsyncClient(base_url=text_server.url) as http:
            hangup = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth(text_server))
            assert hangup.status_code == 200 and hangup.content == b""
            again = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth(text_server))
            assert again.status_code == 404
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(sideband.recv(), 10)
    assert sideband.close_code == 1000
    assert await live_webrtc_sessions(text_server) == before  # the session was closed, not leaked

    # the call left the registry: a new sideband is refused
    async with websockets.connect(url, additional_headers=auth(text_server)) as late:
        error = validate_server_event(await asyncio.wait_for(late.recv(), 10))
        assert error["type"] == "error" and error["error"]["code"] == "call_not_found"


@pytest.mark.parametrize("gone", ["peer connection", "data channel"])
async def test_peer_closing_ends_the_call(text_server: ServerProcess, caller: Caller, gone: str) -> None:
    call_id = await caller.connect(text_server, session={"type": "realtime", "model": "gpt-realtime"})
    await caller.until("session.created", timeout=30)
    url = f"{text_server.ws_url}/v1/realtime?call_id={call_id}"
    async with websockets.connect(url, additional_headers=auth(text_server)) as sideband:
        if gone == "peer connection":
            await caller.pc.close()  # the browser tab goes away
        else:
            caller.channel.close()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(sideband.recv(), 30)
    async with httpx.AsyncClient(base_url=text_server.url) as http:
        response = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth(text_server))
        assert response.status_code == 404


async def test_ephemeral_key_with_raw_sdp(text_server: ServerProcess, caller: Caller) -> None:
    async with httpx.AsyncClient(base_url=text_server.url) as http:
        minted = await http.post(
            "/v1/realtime/client_secrets",
            headers=auth(text_server),
            json={"session": {"type": "realtime", "model": "gpt-realtime", "instructions": "Bound here."}},
        )
    assert minted.status_code == 200, minted.text
    key = minted.json()["value"]
    call_id = await caller.connect(text_server, key=key)
    created = (await caller.until("session.created", timeout=30))[-1]
    assert created["session"]["instructions"] == "Bound here."
    # an ek_ key may not hang up or attach a sideband
    async with httpx.AsyncClient(base_url=text_server.url) as http:
        refused = await http.post(
            f"/v1/realtime/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 401
        ok = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth(text_server))
        assert ok.status_code == 200


async def test_openai_sdk_creates_joins_and_hangs_up_a_call(
    text_server: ServerProcess, caller: Caller
) -> None:
    """The official SDK's calls.create (multipart, ``Accept: application/sdp``), a sideband
    through ``realtime.connect(call_id=...)`` and calls.hangup."""
    client = AsyncOpenAI(base_url=text_server.base_url, api_key=text_server.api_key)
    offer = await caller.offer()
    raw = await client.realtime.calls.with_raw_response.create(
        sdp=offer, session={"type": "realtime", "model": "gpt-realtime", "instructions": "From the SDK."}
    )
    assert raw.status_code == 201
    call_id = await caller.accept(raw.parse().text, raw.headers["location"])
    created = (await caller.until("session.created", timeout=30))[-1]
    assert created["session"]["instructions"] == "From the SDK."
    async with client.realtime.connect(call_id=call_id) as sideband:
        await sideband.session.update(session={"type": "realtime", "instructions": "Changed aside."})
        while True:
            event = validate_server_event(await sideband.recv_bytes())
            if event["type"] == "session.updated":
                break
        assert event["session"]["instructions"] == "Changed aside."
        await client.realtime.calls.hangup(call_id)
    assert (await caller.until("session.updated", timeout=30))[-1]["event_id"] == event["event_id"]
    with pytest.raises(NotFoundError):
        await client.realtime.calls.hangup(call_id)


# ------------------------------------------------------------------ real speech, real models


def speech_end_sample(name: str) -> int:
    return (LEAD_MS + REFERENCE_EDGES[name][1]) * 24


async def retrieve_audio_ms(caller: Caller, item_id: str) -> float:
    """The assistant item's audio length as the server holds it (pcm16 24 kHz)."""
    caller.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = (await caller.until("conversation.item.retrieved", timeout=30))[-1]
    audio = retrieved["item"]["content"][0].get("audio") or ""
    return len(base64.b64decode(audio)) / 48


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["audio/opus", "audio/opus+dtx", "audio/pcmu"])
async def test_voice_turn_over_webrtc(voice_server: ServerProcess, caller: Caller, codec: str) -> None:
    """``audio/opus+dtx``: the caller sends Opus DTX as a browser does when the answer asks
    for it (``usedtx=1``): a packet every 400 ms once its microphone hears nothing."""
    dtx = codec.endswith("+dtx")
    codec = codec.removesuffix("+dtx")
    caller.dtx = dtx
    await caller.connect(voice_server, session=VOICE_SESSION, codec=codec)
    assert f"{codec.split('/')[1]}/".lower() in caller.pc.remoteDescription.sdp.lower()
    assert ("usedtx=1" in caller.pc.remoteDescription.sdp) == (codec == "audio/opus")
    await caller.until("session.created", timeout=60)
    name = "goforward"
    pcm = caller_audio(name)
    if dtx:  # a browser's noise suppression: the room falls silent after the words
        pcm = pcm[: speech_end_sample(name) + 24 * 50]
    speech_end = caller.mic.play(pcm, mark_at=speech_end_sample(name))
    await caller.until("response.done", timeout=120)
    stopped = (await caller.until("output_audio_buffer.stopped", timeout=60))[-1]
    speech_stopped = caller.of("input_audio_buffer.speech_stopped")[0]
    stop_ms = (caller.time_of(speech_stopped) - speech_end.result()) * 1000
    print(f"webrtc {codec}{' dtx' if dtx else ''}: speech_stopped {stop_ms:.0f} ms after the speech ended")
    if dtx:
        assert caller.encoder is not None and caller.encoder.suppressed > 50, "no DTX was sent"
        # the quiet after the words reaches the VAD in real time, not with the next DTX
        # packet: measured 325 ms (684 ms with the silence given only as packets arrive;
        # without DTX and with the room tone 307 ms)
        assert stop_ms < 560, stop_ms

    types = [e["type"] for _, e in caller.events]
    assert "response.output_audio.delta" not in types  # the audio went over RTP
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"):
        assert len(caller.of(kind)) == 1, kind
    transcript = caller.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert "forward" in transcript.lower()
    done = caller.of("response.done")[0]["response"]
    assert done["status"] == "completed"
    started = caller.of("output_audio_buffer.started")
    assert [e["response_id"] for e in started] == [done["id"]] == [stopped["response_id"]]
    assert types.index("response.content_part.added") < types.index("output_audio_buffer.started")
    assert types.index("response.done") < types.index("output_audio_buffer.stopped")
    assert caller.of("response.output_audio_transcript.done")[0]["transcript"].strip()

    # what the caller heard is the whole answer, at real-time pace
    item_id = done["output"][0]["id"]
    answer_ms = await retrieve_audio_ms(caller, item_id)
    assert answer_ms > 500
    t_started, t_stopped = caller.time_of(started[0]), caller.time_of(stopped)
    played_ms = (t_stopped - t_started) * 1000  # real-time pace: never faster than the audio
    assert answer_ms - 100 < played_ms < answer_ms + 3000  # (slower only by synthesis underruns)
    voiced = caller.audio_between(t_started, t_stopped + 0.3)
    assert voiced * 1000 > 0.5 * answer_ms
    first_sound = caller.first_sound_after(await speech_end)
    assert first_sound is not None and first_sound >= t_started - 0.1
    latency_ms = (first_sound - speech_end.result()) * 1000
    print(f"webrtc {codec} voice-to-voice {latency_ms:.0f} ms, answer {answer_ms:.0f} ms")
    assert 0 < latency_ms < 10_000

    # once the answer is over and silence has settled, Opus goes out as DTX (one packet every
    # 400 ms, each bringing one frame out of aiortc's jitter buffer); G.711 keeps every 20 ms
    await asyncio.sleep(1.0)  # the answer's tail, the encoder settling, the DTX hangover
    window_from = time.monotonic()
    await asyncio.sleep(2.0)
    packets = len([h for h in caller.heard if window_from <= h.at < window_from + 2.0])
    print(f"webrtc {codec}: {packets} packets in 2 s of silence")
    if codec == "audio/opus":
        assert 2 <= packets <= 10
    else:
        assert packets >= 80


@pytest.mark.slow
async def test_answer_audio_never_overtakes_its_started_event(
    voice_server: ServerProcess, caller: Caller
) -> None:
    """The events (data channel, SCTP) and the audio (RTP) travel apart. A peer slow to
    acknowledge the data channel, as a loaded machine is, leaves the server's SCTP waiting for
    room in its congestion window with events queued; the answer's audio must still not reach
    the peer before the ``output_audio_buffer.started`` that announces it."""
    await caller.connect(voice_server, session=VOICE_SESSION)
    await caller.until("session.created", timeout=60)
    sctp = caller.pc.sctp
    assert sctp is not None
    acknowledge = sctp._send_sack
    holding = True

    async def held_sack() -> None:  # received data is acknowledged only once released
        if not holding:
            await acknowledge()

    sctp._send_sack = held_sack  # type: ignore[method-assign]
    asked_at = time.monotonic()
    # ~24 kB of events (the item echoed in added and done) fill the congestion window while
    # nothing is acknowledged; the item is deleted again, so the answer does not read it
    caller.send({"type": "conversation.item.create", "item": {"id": "item_padding", "type": "message",
                 "role": "user", "content": [{"type": "input_text", "text": "pad " * 3000}]}})  # fmt: skip
    caller.send({"type": "conversation.item.delete", "item_id": "item_padding"})
    caller.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "Say: hello, how are you today?"}]}})  # fmt: skip
    caller.send({"type": "response.create"})
    # hold the acknowledgements until answer audio is heard, or for a while if none comes
    # (the server holds it back until the started event is out)
    while caller.first_sound_after(asked_at) is None and time.monotonic() < asked_at + 8:
        await asyncio.sleep(0.05)
    holding = False
    await acknowledge()
    stopped = (await caller.until("output_audio_buffer.stopped", timeout=120))[-1]
    started = caller.of("output_audio_buffer.started")
    assert [e["response_id"] for e in started] == [stopped["response_id"]]
    first_sound = caller.first_sound_after(asked_at)
    assert first_sound is not None
    assert first_sound >= caller.time_of(started[0])  # no sound of the answer before its event
    assert caller.audio_between(caller.time_of(started[0]), caller.time_of(stopped) + 0.3) > 0.3


@pytest.mark.slow
async def test_barge_in_and_client_clear_over_webrtc(voice_server: ServerProcess, caller: Caller) -> None:
    session = {
        **VOICE_SESSION,
        "instructions": "You are a storyteller. Whatever the user says, answer with a long story "
        "of at least six sentences.",
    }
    await caller.connect(voice_server, session=session)
    await caller.until("session.created", timeout=60)
    caller.mic.play(caller_audio("librivox-0880"))
    first = (await caller.until("output_audio_buffer.started", timeout=120))[-1]
    playing_from = caller.time_of(first)
    while caller.audio_between(playing_from, 1e12) < 1.0:  # let a second of the answer play
        await asyncio.sleep(0.05)

    # the caller talks over the answer at once (200 ms of room tone before the words, not the
    # usual second: on a fast machine the whole story can be generated before a later barge-in,
    # and a response already done is truncated, not cancelled)
    caller.mic.play(caller_audio("cards-001")[(LEAD_MS - 200) * 24 :])
    events = await caller.until("output_audio_buffer.cleared", timeout=60)
    cleared = events[-1]
    assert cleared["response_id"] == first["response_id"]
    assert events[-2]["type"] == "input_audio_buffer.speech_started"
    truncated = (await caller.until("conversation.item.truncated", timeout=30))[-1]
    cancelled = [
        e["response"] for e in caller.of("response.done") if e["response"]["id"] == first["response_id"]
    ]
    assert cancelled and cancelled[0]["status"] == "cancelled"
    assert cancelled[0]["status_details"]["reason"] == "turn_detected"
    assert truncated["item_id"] == cancelled[0]["output"][0]["id"]
    assert not [
        e for e in caller.of("output_audio_buffer.stopped") if e["response_id"] == first["response_id"]
    ]
    # the item keeps only what was heard
    kept_ms = await retrieve_audio_ms(caller, truncated["item_id"])
    assert abs(kept_ms - truncated["audio_end_ms"]) <= 1

    # the answer to the interruption plays; the client stops it the way agents-js does
    second = (await caller.until("output_audio_buffer.started", timeout=120))[-1]
    assert second["response_id"] != first["response_id"]
    # what reached the caller of the first answer (frames still in flight at the clear included):
    # its audible frames are a lower bound, its whole span (pauses and synthesis underruns
    # included) an upper bound of the audio the server played before cutting the item there
    t_cleared, t_second = caller.time_of(cleared), caller.time_of(second)
    answer = [h for h in caller.heard if playing_from - 0.05 <= h.at < t_second - 0.05]
    audible = [h for h in answer if h.rms > 100]
    audible_ms = sum(h.seconds for h in audible) * 1000
    span_ms = (audible[-1].at - audible[0].at + 0.02) * 1000
    after_clear_ms = sum(h.seconds for h in audible if h.at > t_cleared) * 1000
    print(f"truncated at {truncated['audio_end_ms']} ms; heard {audible_ms:.0f}-{span_ms:.0f} ms")
    assert audible_ms - 100 <= truncated["audio_end_ms"] <= span_ms + 100
    assert after_clear_ms < 500  # only what was already on its way; the rest was dropped at once
    caller.send({"type": "response.cancel"})
    caller.send({"type": "output_audio_buffer.clear"})
    manual = (await caller.until("output_audio_buffer.cleared", timeout=30))[-1]
    assert manual["response_id"] == second["response_id"]
    await caller.until("conversation.item.truncated", timeout=30)
    assert "response.output_audio.delta" not in [e["type"] for _, e in caller.events]
    assert not caller.of("error") or all(
        e["error"]["code"] == "response_cancel_not_active" for e in caller.of("error")
    )


STORY_TOKENS = 150
SEMANTIC_STORYTELLER = {
    **VOICE_SESSION,
    "instructions": "You are a storyteller. Whatever the user says, answer with a story of four sentences.",
    "max_output_tokens": STORY_TOKENS,  # a small model does not always stop after four
    "audio": {
        "input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "semantic_vad"},  # interrupt_response: true by default
        }
    },
}


async def story_playing(caller: Caller, voice_server: ServerProcess) -> dict[str, Any]:
    """The story's ``output_audio_buffer.started``, once 1.5 s of it was heard (past the moment
    a client without an echo path is known to have none)."""
    return await caller.answer_playing(voice_server, SEMANTIC_STORYTELLER, caller_audio("goforward"))


def last_sound_before(caller: Caller, end: float) -> float:
    return max(h.at for h in caller.heard if h.at < end and h.rms > 100)


@pytest.mark.slow
async def test_under_semantic_vad_the_answer_falls_silent_at_the_callers_onset(
    voice_server: ServerProcess, caller: Caller
) -> None:
    """The server plays the answer, so it can pause it the moment the caller's speech is
    confirmed, while it still holds ``speech_started`` until the speech is known to be a bid
    for the turn (a second of it here) rather than a backchannel."""
    story = await story_playing(caller, voice_server)
    name = "librivox-0880"
    onset = caller.mic.play(caller_audio(name, seed=3), mark_at=(LEAD_MS + REFERENCE_EDGES[name][0]) * 24)
    events = await caller.until("output_audio_buffer.cleared", timeout=60)
    assert events[-1]["response_id"] == story["response_id"]
    started = caller.of("input_audio_buffer.speech_started")[-1]
    decided_at = caller.time_of(started)
    silent_from = last_sound_before(caller, decided_at) + 0.02
    quiet_ms = (silent_from - await onset) * 1000
    held_ms = (decided_at - silent_from) * 1000
    print(f"answer silent {quiet_ms:.0f} ms after the caller's onset, {held_ms:.0f} ms before speech_started")
    assert quiet_ms <= 700
    assert held_ms >= 300  # it fell silent well before the interruption was decided
    truncated = (await caller.until("conversation.item.truncated", timeout=30))[-1]
    while not (
        done := [
            e["response"] for e in caller.of("response.done") if e["response"]["id"] == story["response_id"]
        ]
    ):
        await caller.until("response.done", timeout=30)
    assert truncated["item_id"] == done[0]["output"][0]["id"]
    kept_ms = await retrieve_audio_ms(caller, truncated["item_id"])
    heard_ms = caller.audio_between(caller.time_of(story), silent_from) * 1000
    assert heard_ms - 100 <= kept_ms  # what was heard before the pause is kept, no more than that
    assert kept_ms <= (silent_from - caller.time_of(story)) * 1000 + 100


@pytest.mark.slow
async def test_a_backchannel_pauses_the_answer_and_it_plays_on(
    voice_server: ServerProcess, caller: Caller
) -> None:
    story = await story_playing(caller, voice_server)
    okay = (espeak("okay") * 8000).astype(np.int16)
    lead = np.zeros(24 * 200, dtype=np.int16)
    onset = caller.mic.play(
        np.concatenate([lead, okay, np.zeros(24 * 500, dtype=np.int16)]), mark_at=len(lead)
    )
    heard_at = await onset
    stopped = (await caller.until("output_audio_buffer.stopped", timeout=180))[-1]
    assert stopped["response_id"] == story["response_id"]
    assert len(caller.of("input_audio_buffer.speech_started")) == 1  # the question's only
    done = [e["response"] for e in caller.of("response.done") if e["response"]["id"] == story["response_id"]]
    played_to_its_end = done[0]["status"] == "completed" or (
        done[0]["status"] == "incomplete" and done[0]["status_details"]["reason"] == "max_output_tokens"
    )
    assert played_to_its_end and not caller.of("output_audio_buffer.cleared")
    # a silence opened soon after the onset, and the answer went on after it; the pause lasts
    # until the backchannel is judged (0.7-0.95 s here), longer than the story's own pauses
    loud = [h.at for h in caller.heard if h.at >= heard_at and h.rms > 100]
    gaps = [(a, b) for a, b in pairwise(loud) if b - a >= 0.45]
    assert gaps, "the answer never paused"
    paused_at, resumed_at = gaps[0]
    print(
        f"paused {(paused_at - heard_at) * 1000:.0f} ms after the onset for {(resumed_at - paused_at) * 1000:.0f} ms"
    )
    assert paused_at - heard_at <= 0.7, gaps
    assert caller.audio_between(resumed_at, caller.time_of(stopped) + 0.3) > 0.2
