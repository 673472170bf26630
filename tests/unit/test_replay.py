"""Replay's pure parts: the configuration it sends, the turns it speaks, the recorded tool
results it answers with, the comparison it reports, and fetching a bundle by id."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from openrealtime.benchmark.caller import TurnResult
from openrealtime.recording import (
    Bundle,
    RecordingPolicy,
    RecordingService,
    generate_key,
    load_keyring,
    read_bundle,
)
from openrealtime.recording.replay import RecordedTools, load_recording, replay_config, replay_plan
from openrealtime.recording.replay_report import compare_turn, tool_differences
from openrealtime.recording.turns import RecordedTurn, ToolCall
from openrealtime.storage import Storage, make_storage
from tests.support import free_port
from tests.unit.test_recording_service import ANSWER, T0, TRANSCRIPT, play_session


@pytest.fixture
async def bundle_bytes(tmp_path: Path) -> bytes:
    storage: Storage = make_storage(f"sqlite:///{tmp_path / 'index.db'}")
    await storage.open()
    service = RecordingService(
        storage, load_keyring(generate_key()), tmp_path / "rec", RecordingPolicy("full")
    )
    await service.start()
    recorder = service.start_session(
        session_id="sess_1", key_id="key_a", transport="websocket", model="m", at=T0
    )
    assert recorder is not None
    play_session(recorder)
    recorder.close()
    await service.flush()
    out = io.BytesIO()
    await service.export(recorder.recording_id, out)
    await service.close()
    await storage.close()
    return out.getvalue()


def test_the_replayed_configuration(bundle_bytes: bytes) -> None:
    with read_bundle(bundle_bytes) as bundle:
        recorded = bundle.session
    assert recorded is not None
    recorded["audio"]["input"]["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 300}
    recorded["audio"]["input"]["format"] = {"type": "audio/pcmu"}
    session = replay_config(recorded)
    assert "id" not in session and "object" not in session and session["type"] == "realtime"
    assert session["instructions"] == "You drive a robot." and session["tools"][0]["name"] == "move"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}  # what replay speaks
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    changed = replay_config(recorded, {"instructions": "Be brief.", "audio": {"output": {"voice": "cedar"}}})
    assert changed["instructions"] == "Be brief." and changed["tools"] == session["tools"]
    assert changed["audio"]["output"]["voice"] == "cedar"  # merged, not replaced
    assert changed["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 300
    with pytest.raises(ValueError, match="turn detection"):
        replay_config(recorded, {"audio": {"input": {"turn_detection": None}}})
    with pytest.raises(ValueError, match="transcription"):
        replay_config({"type": "transcription"})


def test_the_turns_replay_speaks(bundle_bytes: bytes) -> None:
    with read_bundle(bundle_bytes) as bundle:
        plan, turns = replay_plan(bundle)
        [utterance] = plan
        assert turns[0].transcript == TRANSCRIPT and utterance.transcript == TRANSCRIPT
        # from 300 ms before the detected start to 200 ms after the detected end
        assert utterance.pcm.size == 24 * (1800 + 200)  # the start (100 ms) is clamped at 0
        assert utterance.speech_end_ms == 1800
        assert (utterance.pcm == bundle.caller_audio(0, 48000)).all()


def test_recorded_tool_results_by_name_and_order() -> None:
    turns = [
        RecordedTurn(
            0, "i1", 0, tool_calls=[ToolCall("move", "{}", "c1", "first move", {"type": "response.create"})]
        ),
        RecordedTurn(
            1,
            "i2",
            0,
            tool_calls=[
                ToolCall("look", "{}", "c2", "a wall"),
                ToolCall(
                    "move",
                    "{}",
                    "c3",
                    "second move",
                    {"type": "response.create", "event_id": "x", "response": {"tool_choice": "none"}},
                ),
            ],
        ),
    ]
    tools = RecordedTools(turns)
    first = tools([{"name": "move", "call_id": "new1"}, {"name": "look", "call_id": "new2"}])
    assert [e["item"]["output"] for e in first[:2]] == ["first move", "a wall"]
    assert [e["item"]["call_id"] for e in first[:2]] == ["new1", "new2"]
    assert first[2] == {"type": "response.create"}
    second = tools([{"name": "move", "call_id": "new3"}])
    assert second[0]["item"]["output"] == "second move"
    assert second[1] == {"type": "response.create", "response": {"tool_choice": "none"}}  # no stale event id
    third = tools([{"name": "move", "call_id": "new4"}])  # more calls than recorded
    assert "no result" in third[0]["item"]["output"] and tools.unmatched == ["move"]


def test_comparing_a_turn() -> None:
    assert (
        tool_differences(
            [{"name": "move", "arguments": '{"meters": 10, "direction": "forward"}'}],
            [{"name": "move", "arguments": '{"direction":"forward","meters":10}'}],
        )
        == []
    )
    assert tool_differences(
        [{"name": "move", "arguments": '{"meters": 10}'}, {"name": "look", "arguments": "{}"}],
        [{"name": "move", "arguments": '{"meters": 8}'}],
    ) == ['move arguments {"meters": 8} instead of {"meters": 10}', "missing call look({})"]
    assert tool_differences([], [{"name": "stop", "arguments": "{}"}]) == ["extra call stop({})"]
    before = TurnResult(0, 0, "t", voice_to_voice_ms=900.0, transcript="go forward ten meters", answer=ANSWER)
    after = TurnResult(0, 0, "t", voice_to_voice_ms=700.0, transcript="go forward 10 meters", answer="Okay.")
    turn = compare_turn(before, after)
    assert turn["transcript_wer"] == 0.0  # numbers are normalised
    assert turn["answer_changed"] and turn["answer_wer"] > 0.5
    assert turn["voice_to_voice_change_ms"] == -200.0


@pytest.fixture
def recordings_server(bundle_bytes: bytes) -> Iterator[str]:
    """A stand-in for ``GET /v1/recordings/{id}`` serving one bundle to one key."""
    app = FastAPI()
    with read_bundle(bundle_bytes) as bundle:
        recording_id = bundle.recording_id

    @app.get("/v1/recordings/{rid}")
    async def fetch(rid: str, request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer sk-owner":
            return JSONResponse({"error": {"message": "Incorrect API key provided."}}, status_code=401)
        if rid != recording_id:
            return JSONResponse({"error": {"message": f"No recording {rid}."}}, status_code=404)
        return Response(bundle_bytes, media_type="application/zip")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_recording_by_id_from_a_server(recordings_server: str, bundle_bytes: bytes, tmp_path: Path) -> None:
    with read_bundle(bundle_bytes) as expected:
        recording_id = expected.recording_id
    fetched: Bundle = load_recording(recording_id, recordings_server + "/v1", "sk-owner")
    assert fetched.recording_id == recording_id and fetched.turns[0].transcript == TRANSCRIPT
    fetched.close()
    with pytest.raises(ValueError, match="401: Incorrect API key"):
        load_recording(recording_id, recordings_server, "sk-other")
    with pytest.raises(ValueError, match="404"):
        load_recording("rec_missing", recordings_server, "sk-owner")
    with pytest.raises(ValueError, match="no such bundle"):
        load_recording(str(tmp_path / "nothing.zip"), recordings_server, "sk-owner")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an openrealtime recording"):
        load_recording(str(tmp_path / "junk.zip"))
