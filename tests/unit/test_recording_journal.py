"""The journal of a session: audio payloads become track references; what the server refused
never enters a track; formats follow the session; item audio is not duplicated."""

from __future__ import annotations

import base64
import json

import numpy as np

from openrealtime.audio import g711
from openrealtime.recording.journal import SessionJournal


def records(journal: SessionJournal) -> list[dict]:  # type: ignore[type-arg]
    lines, _, _ = journal.take()
    return [json.loads(line) for line in lines.splitlines()]


def append(data: bytes | str) -> dict[str, str]:
    audio = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {"type": "input_audio_buffer.append", "audio": audio}


def test_only_audio_the_server_accepted_enters_the_caller_track() -> None:
    journal = SessionJournal("full")
    good = np.arange(480, dtype=np.int16).tobytes()
    journal.client_event(append(good), 1.0)
    journal.client_event(append("not base64!!"), 1.1)
    journal.client_event(append(b"\x01\x02\x03"), 1.2)  # half a sample
    journal.client_event(append(good), 1.3, accepted=False)  # e.g. over the event rate
    journal.client_event(append(good), 1.4)
    got = records(journal)
    assert [r["event"]["audio"] for r in got] == [
        {"track": "caller", "offset": 0, "samples": 480},
        {"invalid": True, "chars": 12},
        {"invalid": True, "chars": 4},
        {"refused": True, "chars": len(append(good)["audio"])},
        {"track": "caller", "offset": 480, "samples": 480},
    ]
    assert journal.caller.samples == 960


def test_g711_input_is_kept_as_24khz_pcm_after_session_updated() -> None:
    journal = SessionJournal("full")
    journal.server_event(
        {"type": "session.updated", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}, 0.0
    )
    tone = (8000 * np.sin(np.arange(1600) * 2 * np.pi * 440 / 8000)).astype(np.int16)
    for start in range(0, 1600, 160):  # 20 ms frames of G.711
        journal.client_event(append(g711.ulaw_encode(tone[start : start + 160]).tobytes()), start / 8000)
    lines, caller, _ = journal.take()
    samples = len(caller) // 2
    assert abs(samples - 4800) <= 480  # 200 ms at 24 kHz, less what the resampler holds back
    refs = [json.loads(line)["event"]["audio"] for line in lines.splitlines()[1:]]
    assert sum(r["samples"] for r in refs) == samples and refs[0]["offset"] == 0

    metadata = SessionJournal("metadata")
    metadata.server_event(
        {"type": "session.created", "session": {"audio": {"input": {"format": {"type": "audio/pcma"}}}}}, 0.0
    )
    metadata.client_event(append(b"\xd5" * 160), 0.0)
    [_, record] = records(metadata)
    assert record["event"]["audio"] == {"omitted": True, "samples": 480}
    assert metadata.caller.samples == 0


def test_item_audio_is_not_duplicated_and_assistant_media_is_referenced() -> None:
    journal = SessionJournal("full")
    clip = base64.b64encode(b"\x00\x01" * 100).decode()
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": clip}]}
    journal.client_event({"type": "conversation.item.create", "item": item}, 0.0)
    journal.server_event({"type": "conversation.item.retrieved", "item": item}, 0.1)
    journal.assistant_audio("resp_1", "item_1", b"\x00\x00" * 480, 0.2)
    journal.caller_audio(b"\x00\x00" * 480, 0.3)
    journal.caller_audio(b"\x00\x00" * 480, 0.32)
    journal.note("disclosure", {"text": "This call may be recorded."}, 0.4)
    got = records(journal)
    assert got[0]["event"]["item"]["content"][0]["audio"] == clip  # a client item keeps its own audio
    assert got[1]["event"]["item"]["content"][0]["audio"] == {"omitted": True, "chars": len(clip)}
    assert got[2] == {
        "t": 0.2, "dir": "audio", "track": "assistant", "offset": 0, "samples": 480,
        "response_id": "resp_1", "item_id": "item_1",
    }  # fmt: skip
    assert got[3] == {"t": 0.32, "dir": "audio", "track": "caller", "t0": 0.3, "offset": 0, "samples": 960}
    assert got[4]["kind"] == "disclosure"
