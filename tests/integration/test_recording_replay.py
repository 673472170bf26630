"""A real voice session recorded by the server (``OPENREALTIME_RECORDING=full``), read back
through ``/v1/recordings`` and replayed with ``openrealtime replay``, against a real server
(real speech, Silero VAD, Whisper, Qwen, Piper).

The recording must come back equal to what the openai SDK client sent and heard, be
unreadable on disk and to other keys, and replay to the same transcripts; a replay with
another configuration must show what changed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from openrealtime.engines.asr.wer import corpus_wer
from openrealtime.recording import (
    RecordingPolicy,
    RecordingService,
    UnreadableRecording,
    generate_key,
    load_keyring,
    read_bundle,
)
from openrealtime.server.auth import key_id
from openrealtime.storage import RecordingQuery, make_storage
from tests.speech_audio import caller_audio, transcripts
from tests.support import ServerProcess, run_server, validate_server_event

OTHER_KEY = "sk-other-" + os.urandom(6).hex()
ADMIN_KEY = "sk-admin-" + os.urandom(6).hex()
OWNER_KEY = "sk-owner-" + os.urandom(6).hex()
RECORDING_KEY = generate_key()

pytestmark = pytest.mark.slow

CLIPS = ("goforward", "cards-005", "librivox-0880")
INSTRUCTIONS = (
    "You control a small robot. When the user tells the robot to move, call the move function. "
    "Otherwise answer in one short sentence."
)
MOVE = {
    "type": "function",
    "name": "move",
    "description": "Move the robot.",
    "parameters": {
        "type": "object",
        "properties": {
            "direction": {"type": "string", "enum": ["forward", "backward", "left", "right"]},
            "meters": {"type": "number"},
        },
        "required": ["direction", "meters"],
    },
}
TOOL_RESULT = '{"ok": true, "position": "ten meters ahead"}'
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Recorded:
    server: ServerProcess
    key: str
    db_url: str
    root: Path
    bundle: Path
    recording_id: str
    session_id: str
    sent_audio: np.ndarray
    heard_audio: np.ndarray
    client_events: int
    server_events: int
    transcripts: list[str]
    answers: list[str]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


async def speak(send: Any, pcm: np.ndarray, chunk: int = 960) -> None:
    """Append ``pcm`` in 40 ms chunks at real-time pace."""
    start = time.monotonic()
    for index in range(0, pcm.size, chunk):
        piece = pcm[index : index + chunk]
        await send({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece.tobytes()).decode()})
        delay = start + (index + piece.size) / 24000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def record_session(server: ServerProcess, data: Path, tmp: Path) -> Recorded:
    client = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key)
    sent: list[np.ndarray] = []
    heard = bytearray()
    counts = {"client": 0, "server": 0}
    heard_transcripts: list[str] = []
    answers: list[str] = []
    calls: list[dict[str, Any]] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        created = validate_server_event(await connection.recv_bytes())
        assert created["type"] == "session.created"
        counts["server"] += 1

        async def send(event: dict[str, Any]) -> None:
            counts["client"] += 1
            if event["type"] == "input_audio_buffer.append":
                sent.append(np.frombuffer(base64.b64decode(event["audio"]), dtype="<i2"))
            await connection.send(event)  # type: ignore[arg-type]

        done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def receive() -> None:
            while True:
                event = validate_server_event(await connection.recv_bytes())
                counts["server"] += 1
                kind = event["type"]
                if kind == "response.output_audio.delta":
                    heard.extend(base64.b64decode(event["delta"]))
                elif kind == "conversation.item.input_audio_transcription.completed":
                    heard_transcripts.append(event["transcript"])
                elif kind in ("response.done", "session.updated", "error"):
                    await done.put(event)

        receiver = asyncio.create_task(receive())
        await send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": INSTRUCTIONS,
                    "tools": [MOVE],
                    "max_output_tokens": 60,
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                        }
                    },
                },
            }
        )
        assert (await asyncio.wait_for(done.get(), 30))["type"] == "session.updated"
        for index, clip in enumerate(CLIPS):
            await speak(send, caller_audio(clip, seed=index + 1))
            while True:
                event = await asyncio.wait_for(done.get(), 120)
                assert event["type"] == "response.done", event
                response = event["response"]
                function_calls = [item for item in response["output"] if item["type"] == "function_call"]
                messages = [item for item in response["output"] if item["type"] == "message"]
                for call in function_calls:
                    calls.append({"turn": index, "name": call["name"], "arguments": call["arguments"]})
                    await send(
                        {
                            "type": "conversation.item.create",
                            "item": {
                                "type": "function_call_output",
                                "call_id": call["call_id"],
                                "output": TOOL_RESULT,
                            },
                        }
                    )
                if function_calls:
                    await send({"type": "response.create"})
                    continue
                answers.append(
                    " ".join(
                        p.get("transcript") or p.get("text") or "" for m in messages for p in m["content"]
                    ).strip()
                )
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the last response's timings are recorded after its response.done
        receiver.cancel()
    session_id = created["session"]["id"]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        listed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not listed or listed[0]["status"] != "complete":  # the session's end is being written
            assert time.monotonic() < deadline, listed
            answer = await http.get(
                "/recordings", params={"session_id": session_id}, headers=auth(server.api_key)
            )
            assert answer.status_code == 200, answer.text
            listed = answer.json()["data"]
            await asyncio.sleep(0.2)
        [meta] = listed
        fetched = await http.get(f"/recordings/{meta['id']}", headers=auth(server.api_key))
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "application/zip"
    bundle = tmp / "recording.zip"
    bundle.write_bytes(fetched.content)
    return Recorded(
        server=server,
        key=RECORDING_KEY,
        db_url=f"sqlite:///{data / 'openrealtime.db'}",
        root=data / "recordings",
        bundle=bundle,
        recording_id=meta["id"],
        session_id=session_id,
        sent_audio=np.concatenate(sent),
        heard_audio=np.frombuffer(bytes(heard), dtype="<i2"),
        client_events=counts["client"],
        server_events=counts["server"],
        transcripts=heard_transcripts,
        answers=answers,
        tool_calls=calls,
    )


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its own server, not the shared one: the tests read every turn's timings in its log."""
    env = {
        "OPENREALTIME_API_KEYS": f"{OWNER_KEY},{OTHER_KEY},{ADMIN_KEY}",
        "OPENREALTIME_USAGE_ADMIN_KEYS": ADMIN_KEY,
        "OPENREALTIME_RECORDING": "off",
        "OPENREALTIME_RECORDING_KEYS": json.dumps({OWNER_KEY: "full"}),
        "OPENREALTIME_RECORDING_KEY": RECORDING_KEY,
    }
    with run_server(tmp_path_factory.mktemp("replay-server"), env=env) as server:
        yield dataclasses.replace(server, api_key=OWNER_KEY)


@pytest.fixture(scope="module")
def recorded(voice_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    data = voice_server.log_path.parent / "data"
    return asyncio.run(record_session(voice_server, data, tmp_path_factory.mktemp("recorded")))


def test_the_recording_is_what_was_said_and_heard_and_unreadable_on_disk(recorded: Recorded) -> None:
    references = transcripts()
    assert len(recorded.transcripts) == len(CLIPS)
    assert corpus_wer(zip([references[c] for c in CLIPS], recorded.transcripts, strict=True)) <= 0.10
    print("tool calls:", recorded.tool_calls, "answers:", recorded.answers)

    with read_bundle(recorded.bundle) as bundle:
        manifest = bundle.manifest
        assert manifest["complete"] and manifest["recording"]["session_id"] == recorded.session_id
        assert np.array_equal(bundle.caller_audio(), recorded.sent_audio)
        assert np.array_equal(bundle.assistant_audio(), recorded.heard_audio)
        assert np.array_equal(bundle.assistant_audio(played=True), recorded.heard_audio)  # nothing cut
        events = list(bundle.events())
        assert sum(1 for e in events if e["dir"] == "client") == recorded.client_events
        assert sum(1 for e in events if e["dir"] == "server") == recorded.server_events
        turns = bundle.turns
        assert [t.transcript for t in turns] == recorded.transcripts
        assert [t.answer for t in turns] == recorded.answers
        assert [(c.name, c.output) for t in turns for c in t.tool_calls] == [
            (call["name"], TOOL_RESULT) for call in recorded.tool_calls
        ]
        for turn in turns:
            assert turn.speech_end_at is not None and turn.status == "completed"
            assert 0 < turn.speech_stopped_ms < turn.voice_to_voice_ms < 120_000  # a loaded machine  # type: ignore[operator]
            assert turn.timings.get("response_id") == turn.answer_id
        assert bundle.session is not None and bundle.session["instructions"] == INSTRUCTIONS

    files = [p for p in recorded.root.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["assistant.orec", "caller.orec", "events.orec"]
    on_disk = b"".join(p.read_bytes() for p in files)
    secrets = [
        b"RIFF",
        b"WAVE",
        b"fmt ",
        b'"type"',
        b"transcript",
        b"response.done",
        INSTRUCTIONS[:20].encode(),
    ]
    secrets += [word.encode() for t in recorded.transcripts for word in t.split() if len(word) > 4]
    secrets += [recorded.sent_audio[48000:48032].tobytes()]
    for secret in secrets:
        assert secret not in on_disk, secret


async def test_a_wrong_key_cannot_read_it_and_the_retention_sweeper_deletes_it(
    recorded: Recorded, tmp_path: Path
) -> None:
    """On a copy of the server's index entry and files (the server keeps its own)."""
    source = make_storage(recorded.db_url)
    await source.open()
    original = await source.get_recording(recorded.recording_id)
    await source.close()
    assert original is not None
    root = tmp_path / "recordings"
    shutil.copytree(recorded.root / original.path, root / original.path)
    storage = make_storage(f"sqlite:///{tmp_path / 'index.db'}")
    await storage.open()
    await storage.put_recording(original)
    owner = key_id(OWNER_KEY)
    wrong = RecordingService(storage, load_keyring(generate_key()), root, RecordingPolicy("full"))
    await wrong.start(sweep=False)
    [meta] = await wrong.list(RecordingQuery(key_ids=[owner]))
    assert meta.id == recorded.recording_id and meta.status == "complete" and meta.mode == "full"
    assert await wrong.list(RecordingQuery(key_ids=["key_someone_else"])) == []
    with pytest.raises(UnreadableRecording):
        await wrong.export(meta.id, io.BytesIO())
    await wrong.close()

    later = meta.started_at + 2 * 86_400
    service = RecordingService(
        storage,
        load_keyring(recorded.key),
        root,
        RecordingPolicy("full"),
        retention_days=1,
        clock=lambda: later,
    )
    await service.start()  # the start-up sweep deletes the two-day-old recording
    assert await service.list(RecordingQuery()) == []
    assert not any(root.rglob("*.orec"))
    await service.close()
    await storage.close()


async def test_routes_list_filter_refuse_other_keys_and_delete(recorded: Recorded) -> None:
    rid, owner = recorded.recording_id, key_id(OWNER_KEY)
    async with httpx.AsyncClient(base_url=recorded.server.base_url, timeout=60) as http:
        mine = (await http.get("/recordings", headers=auth(OWNER_KEY))).json()["data"]
        assert [m["id"] for m in mine] == [rid] and mine[0]["key_id"] == owner and mine[0]["mode"] == "full"
        started = mine[0]["started_at"]
        for params, expected in (
            ({"key_id": owner}, [rid]),
            ({"start": started - 60, "end": started + 60}, [rid]),
            ({"start": started + 60}, []),
            ({"end": started - 60}, []),
            ({"session_id": "sess_other"}, []),
        ):
            answer = await http.get("/recordings", params=params, headers=auth(OWNER_KEY))
            assert [m["id"] for m in answer.json()["data"]] == expected, params
        # another API key sees nothing of it, cannot read or delete it, nor list the owner's
        assert (await http.get("/recordings", headers=auth(OTHER_KEY))).json()["data"] == []
        assert (await http.get(f"/recordings/{rid}", headers=auth(OTHER_KEY))).status_code == 404
        assert (await http.delete(f"/recordings/{rid}", headers=auth(OTHER_KEY))).status_code == 404
        refused = await http.get("/recordings", params={"key_id": owner}, headers=auth(OTHER_KEY))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
        # an ephemeral key of the owner is refused everywhere
        minted = await http.post(
            "/realtime/client_secrets", json={"session": {"type": "realtime"}}, headers=auth(OWNER_KEY)
        )
        ek = minted.json()["value"]
        assert ek.startswith("ek_")
        for answer in (
            await http.get("/recordings", headers=auth(ek)),
            await http.get(f"/recordings/{rid}", headers=auth(ek)),
            await http.delete(f"/recordings/{rid}", headers=auth(ek)),
        ):
            assert answer.status_code == 401 and "Ephemeral" in answer.json()["error"]["message"]
        assert (await http.get("/recordings", headers=auth("sk-nobody"))).status_code == 401
        # an admin key reads every key's recordings
        everything = (await http.get("/recordings", headers=auth(ADMIN_KEY))).json()["data"]
        assert rid in [m["id"] for m in everything]
        as_admin = await http.get(f"/recordings/{rid}", headers=auth(ADMIN_KEY))
        assert as_admin.status_code == 200
        with read_bundle(as_admin.content) as bundle:
            assert np.array_equal(bundle.caller_audio(), recorded.sent_audio)

        # the owner deletes it: gone from the index and from disk
        folder = next(p.parent for p in recorded.root.rglob("events.orec") if p.parent.name == rid)
        deleted = await http.delete(f"/recordings/{rid}", headers=auth(OWNER_KEY))
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert (await http.get(f"/recordings/{rid}", headers=auth(OWNER_KEY))).status_code == 404
        assert not folder.exists()
        # and everything left of the key (the replays' recordings) in one call
        wiped = await http.delete("/recordings", params={"key_id": owner}, headers=auth(ADMIN_KEY))
        assert wiped.status_code == 200
        assert (await http.get("/recordings", headers=auth(OWNER_KEY))).json()["data"] == []


def replay(recorded: Recorded, out: Path, *extra: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "openrealtime.cli", "replay", str(recorded.bundle),
        "--url", recorded.server.url, "--api-key", recorded.server.api_key,
        "--server-log", str(recorded.server.log_path), "--out", str(out), *extra,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "160"},
        cwd=out.parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout[-4000:])
    [report_path] = out.glob("replay-2*.json")
    report: dict[str, Any] = json.loads(report_path.read_text())
    png = report_path.with_suffix(".png").read_bytes()
    assert png.startswith(PNG) and len(png) > 20_000
    assert (out / "replay-latest.json").read_text() == report_path.read_text()
    assert "turn(s)" in done.stdout and "transcript WER" in done.stdout
    return report


def test_a_replay_against_the_same_server_reproduces_the_session(recorded: Recorded, tmp_path: Path) -> None:
    report = replay(recorded, tmp_path / "same")
    [section] = report["recordings"]
    assert section["recording_id"] == recorded.recording_id and section["turn_count"] == len(CLIPS)
    assert section["session"]["instructions"] == INSTRUCTIONS and section["unmatched_tool_calls"] == []
    totals = report["totals"]
    assert totals["turns"] == len(CLIPS) and totals["answered_after"] == len(CLIPS)
    assert totals["transcript_wer"] is not None and totals["transcript_wer"] <= 0.10
    for turn in section["turns"]:
        assert turn["replayed"]["status"] == "completed" and turn["replayed"]["answer"]
        assert turn["recorded"]["voice_to_voice_ms"] > 0 and turn["replayed"]["voice_to_voice_ms"] > 0
        # the recorded tool results answered the same calls
        assert [c["name"] for c in turn["replayed"]["tool_calls"]] == [
            c["name"] for c in turn["recorded"]["tool_calls"]
        ]
    v2v = totals["voice_to_voice_ms"]
    assert v2v["before"]["n"] == v2v["after"]["n"] == len(CLIPS)
    stages = totals["stages_ms_after_speech_end"]
    for side in ("before", "after"):
        for stage in ("speech_stopped", "llm_first_token", "first_audio_received"):
            assert stages[side][stage]["n"] == len(CLIPS), (side, stage)


def test_a_replay_with_another_configuration_shows_the_differences(
    recorded: Recorded, tmp_path: Path
) -> None:
    override = tmp_path / "offline.yaml"
    override.write_text(
        "instructions: 'Whatever the user says, reply with exactly this sentence: The robot is offline today.'\n"
        "tools: []\n"
    )
    report = replay(recorded, tmp_path / "other", "--session-config", str(override))
    [section] = report["recordings"]
    assert section["session"]["tools"] == [] and "offline" in section["session"]["instructions"]
    totals = report["totals"]
    assert totals["answered_after"] == len(CLIPS)
    assert totals["transcript_wer"] <= 0.10  # the same caller audio, heard the same way
    assert totals["answers_changed"] >= 2
    if recorded.tool_calls:
        assert totals["tool_call_differences"] >= 1
        differences = [d for t in section["turns"] for d in t["tool_call_differences"]]
        assert any(d.startswith("missing call move") for d in differences), differences
    assert any("offline" in (t["replayed"]["answer"] or "").lower() for t in section["turns"])
