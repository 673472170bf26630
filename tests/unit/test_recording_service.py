"""The recording service on SQLite: a session fed through the recorder API comes back as a
bundle equal to what was sent and heard; nothing readable on disk; deletion and retention."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openrealtime.recording import (
    RecordingPolicy,
    RecordingService,
    SessionRecorder,
    UnreadableRecording,
    generate_key,
    load_keyring,
    read_bundle,
)
from openrealtime.recording.bundle import wav_header
from openrealtime.storage import RecordingQuery, Storage, make_storage

T0 = 1_780_000_000.0
TRANSCRIPT = "please move the robot forward ten meters"
ANSWER = "Moving forward ten meters now, then I will stop and wait."


def tone(seconds: float, freq: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(24000 * seconds)) / 24000
    noise = np.random.default_rng(seed).normal(0, 300, t.size)
    return np.clip(8000 * np.sin(2 * np.pi * freq * t) + noise, -32768, 32767).astype(np.int16)


def b64(pcm: np.ndarray) -> str:
    return base64.b64encode(pcm.tobytes()).decode()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = make_storage(f"sqlite:///{tmp_path / 'index.db'}")
    await store.open()
    yield store
    await store.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def service_for(
    storage: Storage, root: Path, key: str, mode: str = "full", clock: Clock | None = None, **kw: Any
) -> RecordingService:
    service = RecordingService(
        storage,
        load_keyring(key),
        root,
        RecordingPolicy(mode, {"key_quiet": "off"}),  # type: ignore[arg-type]
        clock=clock or Clock(T0),
        **kw,
    )
    await service.start()
    return service


def play_session(recorder: SessionRecorder) -> dict[str, Any]:
    """A voice session with one spoken turn, a tool call and a barge-in, as an observer sees it;
    returns what was sent and heard."""
    at = T0
    session = {
        "type": "realtime",
        "id": "sess_1",
        "object": "realtime.session",
        "instructions": "You drive a robot.",
        "tools": [{"type": "function", "name": "move", "parameters": {"type": "object"}}],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}, "output": {"voice": "marin"}},
    }
    recorder.server_event({"type": "session.created", "event_id": "e0", "session": session}, at=at)
    speech = tone(2.0, 220.0)
    sent = []
    for index in range(0, speech.size, 960):  # 40 ms appends
        chunk = speech[index : index + 960]
        at += 0.04
        sent.append(chunk)
        recorder.client_event({"type": "input_audio_buffer.append", "audio": b64(chunk)}, at=at)
        if index == 4800:
            recorder.server_event(
                {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "item_u1"},
                at=at,
            )
    recorder.server_event(
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1800, "item_id": "item_u1"}, at=at + 0.3
    )
    recorder.server_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_u1",
            "content_index": 0,
            "transcript": TRANSCRIPT,
        },
        at=at + 0.5,
    )
    recorder.server_event({"type": "response.created", "response": {"id": "resp_1"}}, at=at + 0.6)
    call = {"type": "function_call", "name": "move", "arguments": '{"meters": 10}', "call_id": "call_1"}
    recorder.server_event(
        {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": [call]}},
        at=at + 0.9,
    )
    recorder.client_event(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'},
        },
        at=at + 1.0,
    )
    recorder.client_event({"type": "response.create", "response": {"tool_choice": "none"}}, at=at + 1.0)
    recorder.server_event({"type": "response.created", "response": {"id": "resp_2"}}, at=at + 1.1)
    answer = tone(1.5, 440.0, seed=1)
    heard = []
    for n, index in enumerate(range(0, answer.size, 4800)):  # 200 ms deltas
        chunk = answer[index : index + 4800]
        heard.append(chunk)
        recorder.server_event(
            {
                "type": "response.output_audio.delta",
                "response_id": "resp_2",
                "item_id": "item_a1",
                "delta": b64(chunk),
            },
            at=at + 1.3 + n * 0.2,
        )
    recorder.client_event(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a1",
            "content_index": 0,
            "audio_end_ms": 1000,
        },
        at=at + 2.4,
    )
    recorder.server_event(
        {
            "type": "conversation.item.truncated",
            "item_id": "item_a1",
            "content_index": 0,
            "audio_end_ms": 1000,
        },
        at=at + 2.4,
    )
    message = {
        "type": "message",
        "id": "item_a1",
        "content": [{"type": "output_audio", "transcript": ANSWER}],
    }
    recorder.server_event(
        {"type": "response.done", "response": {"id": "resp_2", "status": "completed", "output": [message]}},
        at=at + 2.5,
    )
    recorder.turn_timings({"response_id": "resp_2", "from": "speech_stopped", "llm_first_token_ms": 420.0})
    return {"sent": np.concatenate(sent), "produced": np.concatenate(heard), "speech_end_at": at - 0.2}


async def export(service: RecordingService, recording_id: str) -> bytes:
    out = io.BytesIO()
    await service.export(recording_id, out)
    return out.getvalue()


async def test_a_session_comes_back_as_sent_and_heard(storage: Storage, tmp_path: Path) -> None:
    key = generate_key()
    root = tmp_path / "recordings"
    service = await service_for(storage, root, key)
    recorder = service.start_session(
        session_id="sess_1", key_id="key_a", transport="websocket", model="gpt-realtime"
    )
    assert recorder is not None and recorder.mode == "full"
    assert service.start_session(session_id="s", key_id="key_quiet", transport="sip", model="m") is None
    played = play_session(recorder)
    recorder.close(at=T0 + 10)
    await service.flush()

    [meta] = await service.list(RecordingQuery(key_ids=["key_a"]))
    assert meta.id == recorder.recording_id and meta.status == "complete" and meta.ended_at == T0 + 10
    assert meta.caller_audio_ms == 2000 and meta.assistant_audio_ms == 1500
    assert meta.encryption_key == load_keyring(key).current.id
    assert await service.list(RecordingQuery(key_ids=["key_b"])) == []
    assert [m.id for m in await service.list(RecordingQuery(session_id="sess_1"))] == [meta.id]

    data = await export(service, meta.id)
    with read_bundle(data) as bundle:
        manifest = bundle.manifest
        assert manifest["complete"] and manifest["recording"]["id"] == meta.id
        assert np.array_equal(bundle.caller_audio(), played["sent"])
        assert np.array_equal(bundle.assistant_audio(), played["produced"])
        assert np.array_equal(bundle.assistant_audio(played=True), played["produced"][:24000])
        assert np.array_equal(bundle.caller_audio(2400, 4800), played["sent"][2400:4800])
        [turn] = bundle.turns
        assert turn.transcript == TRANSCRIPT and turn.answer == ANSWER and turn.answer_id == "resp_2"
        assert (turn.audio_start_ms, turn.audio_end_ms) == (100, 1800)
        assert turn.speech_end_at == pytest.approx(played["speech_end_at"], abs=0.05)
        assert turn.voice_to_voice_ms is not None and 1000 < turn.voice_to_voice_ms < 2000
        [call] = turn.tool_calls
        assert (call.name, call.arguments, call.output) == ("move", '{"meters": 10}', '{"ok": true}')
        assert call.followup == {"type": "response.create", "response": {"tool_choice": "none"}}
        assert turn.timings["llm_first_token_ms"] == 420.0
        assert bundle.session is not None and bundle.session["instructions"] == "You drive a robot."
        events = list(bundle.events())
        appends = [
            e["event"] for e in events if e.get("event", {}).get("type") == "input_audio_buffer.append"
        ]
        assert appends[0]["audio"] == {"track": "caller", "offset": 0, "samples": 960}
        assert sum(a["audio"]["samples"] for a in appends) == played["sent"].size
        assert not any("AAAA" in json.dumps(e) for e in events)  # no base64 audio in the journal
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        wav = archive.read("caller.wav")
        assert wav[:44] == wav_header(played["sent"].size)

    on_disk = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    assert len(on_disk) == meta.size_bytes
    for clear in (
        b"RIFF",
        b"WAVE",
        TRANSCRIPT.encode(),
        b"robot",
        b"transcript",
        b'"type"',
        played["sent"][:64].tobytes(),
    ):
        assert clear not in on_disk

    other = await service_for(storage, tmp_path / "elsewhere", generate_key())
    other.root = root  # the same files, another key
    with pytest.raises(UnreadableRecording):
        await export(other, meta.id)
    await other.close()

    assert await service.delete(meta.id)
    assert await service.get(meta.id) is None and not any(p.is_file() for p in root.rglob("*"))
    assert not await service.delete(meta.id)
    await service.close()


async def test_metadata_mode_keeps_everything_but_audio(storage: Storage, tmp_path: Path) -> None:
    service = await service_for(storage, tmp_path / "rec", generate_key(), mode="metadata")
    recorder = service.start_session(session_id="sess_1", key_id="key_a", transport="sip", model="m")
    assert recorder is not None
    played = play_session(recorder)
    recorder.caller_audio(tone(0.1, 300.0))
    recorder.assistant_audio("resp_2", "item_a1", tone(0.1, 300.0))
    recorder.close()
    await service.flush()
    files = sorted(p.name for p in (tmp_path / "rec").rglob("*") if p.is_file())
    assert files == ["events.orec"]
    with read_bundle(await export(service, recorder.recording_id)) as bundle:
        assert not bundle.has_audio
        assert not [name for name in bundle._zip.namelist() if name.endswith(".wav")]
        [turn] = bundle.turns
        assert turn.transcript == TRANSCRIPT and turn.tool_calls[0].output == '{"ok": true}'
        assert turn.speech_end_at == pytest.approx(played["speech_end_at"], abs=0.05)
        appends = [
            e["event"]
            for e in bundle.events()
            if e.get("event", {}).get("type") == "input_audio_buffer.append"
        ]
        assert appends[0]["audio"] == {"omitted": True, "samples": 960}
    await service.close()


async def test_rotation_deletion_by_key_and_retention(storage: Storage, tmp_path: Path) -> None:
    old_key = generate_key()
    clock = Clock(T0)
    root = tmp_path / "rec"
    service = await service_for(storage, root, old_key, clock=clock)
    ids = {}
    for name, key_id, age_days in (
        ("old_a", "key_a", 40),
        ("new_a", "key_a", 1),
        ("old_b", "key_b", 31),
        ("new_b", "key_b", 0),
    ):
        recorder = service.start_session(
            session_id=name, key_id=key_id, transport="websocket", model="m", at=T0 - age_days * 86_400
        )
        assert recorder is not None
        recorder.client_event({"type": "input_audio_buffer.append", "audio": b64(tone(0.2, 200))})
        recorder.close()
        ids[name] = recorder.recording_id
    await service.flush()
    await service.close()

    # a new key is appended: new recordings use it, the old ones still open
    rotated = f"{old_key},{generate_key()}"
    service = await service_for(storage, root, rotated, clock=clock, retention_days=30)
    # start-up swept the two older than 30 days
    left = await service.list(RecordingQuery())
    assert sorted(m.session_id for m in left) == ["new_a", "new_b"]
    assert len(await export(service, ids["new_a"])) > 1000
    recorder = service.start_session(session_id="rotated", key_id="key_a", transport="websocket", model="m")
    assert recorder is not None and recorder.meta.encryption_key == load_keyring(rotated).current.id
    recorder.close()
    await service.flush()

    assert await service.delete_key("key_a") == 2
    assert [m.session_id for m in await service.list(RecordingQuery())] == ["new_b"]
    # the day folders of the swept recordings are gone too
    days = {p.relative_to(root).as_posix()[:10] for p in root.rglob("*.orec")}
    assert days == {time.strftime("%Y/%m/%d", time.gmtime(T0))}

    clock.now = T0 + 31 * 86_400
    assert await service.sweep() == 1
    assert await service.list(RecordingQuery()) == []
    assert not any(root.rglob("*.orec"))
    await service.close()


async def test_a_live_recording_can_be_read_deleted_or_opted_out(storage: Storage, tmp_path: Path) -> None:
    service = await service_for(storage, tmp_path / "rec", generate_key())
    live = service.start_session(session_id="live", key_id="key_a", transport="sip", model="m")
    assert live is not None
    for _ in range(50):
        live.caller_audio(tone(0.02, 300))
    live.note("disclosure", {"text": "This call may be recorded."})
    with read_bundle(await export(service, live.recording_id)) as bundle:
        assert not bundle.manifest["complete"]  # still being written
        assert bundle.caller_audio().size == 50 * 480
        assert bundle.manifest["notes"][0]["kind"] == "disclosure"
    opted = service.start_session(session_id="opted", key_id="key_a", transport="sip", model="m")
    assert opted is not None
    opted.caller_audio(tone(0.5, 300))
    opted.opt_out()
    opted.caller_audio(tone(0.5, 300))  # ignored
    await service.flush()
    assert await service.get(opted.recording_id) is None
    assert await service.delete(live.recording_id)
    await service.flush()
    assert await service.list(RecordingQuery()) == []
    assert not any((tmp_path / "rec").rglob("*.orec"))
    await service.close()


async def test_recording_never_blocks_the_event_loop(storage: Storage, tmp_path: Path) -> None:
    """Thousands of 40 ms caller frames queued from the loop cost the loop's thread microseconds
    each: the writer thread does the work. Measured as the loop thread's CPU time, so other
    processes on a busy machine do not count."""
    service = await service_for(storage, tmp_path / "rec", generate_key())
    recorder = service.start_session(session_id="busy", key_id="key_a", transport="websocket", model="m")
    assert recorder is not None
    frame = tone(0.04, 300)
    payload = b64(frame)
    started = time.thread_time()
    for _ in range(5000):
        recorder.client_event({"type": "input_audio_buffer.append", "audio": payload})
        await asyncio.sleep(0) if _ % 100 == 0 else None
    per_call = (time.thread_time() - started) / 5000
    recorder.close()
    await service.flush()
    [meta] = await service.list(RecordingQuery())
    assert meta.caller_audio_ms == 5000 * 40
    print(f"per call {per_call * 1e6:.1f} us of the loop thread's CPU")
    assert per_call < 200e-6
    await service.close()


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, base64, sys, time
    from pathlib import Path
    from openrealtime.recording import RecordingPolicy, RecordingService, load_keyring
    from openrealtime.storage import make_storage

    async def main():
        storage = make_storage(f"sqlite:///{sys.argv[1]}/index.db")
        await storage.open()
        service = RecordingService(storage, load_keyring(sys.argv[2]), Path(sys.argv[1]) / "rec",
                                   RecordingPolicy("full"), flush_interval_s=0.05)
        await service.start()
        recorder = service.start_session(session_id="crash", key_id="key_a", transport="websocket", model="m")
        await service.flush()
        n = 0
        while True:
            n += 1
            recorder.client_event({"type": "input_audio_buffer.append",
                                   "audio": base64.b64encode(n.to_bytes(4, "little") * 240).decode()})
            if n % 25 == 0:
                await service.flush()  # on disk: the writer has appended and flushed it
                print(n, flush=True)
            await asyncio.sleep(0.002)

    asyncio.run(main())
    """
)


async def test_a_killed_process_keeps_what_it_recorded(storage: Storage, tmp_path: Path) -> None:
    key = generate_key()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), key], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    reported = 0
    for line in process.stdout:
        reported = int(line)
        if reported >= 300:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    crashed = make_storage(f"sqlite:///{tmp_path / 'index.db'}")
    await crashed.open()
    service = await service_for(crashed, tmp_path / "rec", key)
    [meta] = await service.list(RecordingQuery())
    assert meta.status == "recording" and meta.ended_at is None  # never closed
    with read_bundle(await export(service, meta.id)) as bundle:
        assert not bundle.manifest["complete"]
        audio = bundle.caller_audio()
        appended = audio.size // 480
        # everything written before the kill survived, and nothing torn came back
        assert appended >= reported, (appended, reported)
        values = audio.reshape(-1, 480).view(np.uint16)[:, 0].astype(np.int64)
        assert list(values[:appended]) == list(range(1, appended + 1))
    await service.close()
    await crashed.close()
