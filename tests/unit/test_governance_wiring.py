"""How recording, content safety and the disclosure join a session, one part at a time: the
core's ``content_filter`` ending, the screened clause cut of the speech path, the playback's
report of what each frame carried, and the recording observer on a real recording service."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openrealtime.core.events import AppendAudio, CreateItem, OutputAudio
from openrealtime.engines.tts.chunker import ClauseChunker
from openrealtime.protocol import client_events as ce
from openrealtime.protocol import server_events as se
from openrealtime.recording import RecordingPolicy, RecordingService, generate_key, load_keyring, read_bundle
from openrealtime.recording.observer import RecordingObserver, client_event_wire
from openrealtime.runtime.moderating import ScreenedClauses, ScreenedText
from openrealtime.runtime.observer import Observers, SessionInfo
from openrealtime.runtime.playback import MediaPlayback
from openrealtime.safety import Moderation, RulesModerator
from openrealtime.safety.rules import load_rules
from openrealtime.storage import RecordingQuery, Storage, make_storage
from tests.unit.test_core_session import Harness, only

RULES = """
rules:
  - id: dessert
    phrases: ["banana split"]
    applies_to: output
"""


def moderation(tmp_path: Path) -> Moderation:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return Moderation(RulesModerator(load_rules(path)), refusal="No.")


def test_a_content_filter_finish_ends_the_response_incomplete() -> None:
    h = Harness()
    h.events()
    h.user_text("hi")
    rid = h.create_response(output_modalities=["text"])
    done = only(h.finish(rid, finish_reason="content_filter"), "response.done")["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "content_filter"}


async def test_screened_clauses_stop_before_the_blocked_clause(tmp_path: Path) -> None:
    clauses = ScreenedClauses(ClauseChunker(min_first_words=3), moderation(tmp_path), "sess_1")
    spoken = await clauses.push("The weather is lovely today. I would love a banana ")
    spoken += await clauses.push("split right now. And then a walk. ")
    spoken += await clauses.flush()
    assert clauses.blocked
    assert spoken and all("banana" not in piece for piece in spoken)
    assert not any("walk" in piece for piece in spoken)  # nothing after the cut either
    plain = ScreenedClauses(ClauseChunker(min_first_words=3), None, "sess_1")
    assert "banana" in " ".join([*await plain.push("A banana split. Yes. "), *await plain.flush()])
    assert not plain.blocked


async def test_screened_text_keeps_the_models_spacing_and_stops_before_the_blocked_clause(
    tmp_path: Path,
) -> None:
    text = ScreenedText(moderation(tmp_path), "sess_1")
    deltas = [
        "Here is ",
        "a list:\n\n- The weather",
        " is lovely today.\n- Tea (hot",
        ") for two. ",
        "Then a banana ",
        "split. Bye.",
    ]
    shown = "".join([*[await text.push(d) for d in deltas], await text.flush()])
    assert text.blocked
    assert shown.startswith("Here is a list:\n\n- The weather is lovely today.\n- Tea (hot) for two."), shown
    assert "banana" not in shown and "Bye" not in shown
    plain_deltas = ["Here is ", "a list:\n\n- The weather", " is fine. Bye.\n"]
    screened = ScreenedText(moderation(tmp_path), "sess_1")
    released = "".join([*[await screened.push(d) for d in plain_deltas], await screened.flush()])
    assert released == "".join(plain_deltas)  # nothing lost or changed when nothing matches
    assert not screened.blocked
    passthrough = ScreenedText(None, "sess_1")
    assert [await passthrough.push(d) for d in plain_deltas] == plain_deltas  # no moderation: no wait
    assert await passthrough.flush() == ""


def test_playback_reports_what_each_frame_carried() -> None:
    played: list[tuple[str, str, int]] = []
    playback = MediaPlayback(lambda _: None, lambda: True, lambda r, i, pcm: played.append((r, i, len(pcm))))
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, np.ones(300, dtype=np.int16), "audio/pcm"))
    playback.audio(OutputAudio("resp_1", "item_2", 1, 0, np.ones(400, dtype=np.int16), "audio/pcm"))
    frames = [playback.pull() for _ in range(3)]
    assert all(len(frame) == 480 for frame in frames)
    assert played == [("resp_1", "item_1", 300), ("resp_1", "item_2", 180), ("resp_1", "item_2", 220)]


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = make_storage(f"sqlite:///{tmp_path / 'index.db'}")
    await store.open()
    yield store
    await store.close()


async def test_the_observer_records_a_media_session_and_honours_the_opt_out(
    storage: Storage, tmp_path: Path
) -> None:
    service = RecordingService(
        storage, load_keyring(generate_key()), tmp_path / "rec", RecordingPolicy("full")
    )
    await service.start(sweep=False)
    observers = Observers([RecordingObserver(service, opt_out_key="9")])
    call = SessionInfo("sess_call", "key_a", "sip", "gpt-realtime")
    observers.session_started(call)
    caller = (np.arange(4800) % 300).astype(np.int16)
    observers.caller_audio(call, caller, 1.0)
    observers.client_input(call, ce.ResponseCreate(type="response.create", event_id="evt_1"), True, 1.5)
    observers.client_input(call, None, False, 1.6)
    observers.server_event(call, se.ResponseCreated(response={"id": "resp_1", "object": "realtime.response"}))
    observers.note(call, "disclosure", {"text": "You are talking to an automated assistant."})
    observers.played_audio(call, "resp_1", "item_1", np.full(480, 7, dtype=np.int16))
    observers.output_audio(
        call, OutputAudio("resp_1", "item_1", 0, 0, np.zeros(9, dtype=np.int16), "audio/pcm")
    )
    observers.session_ended(call)
    await service.flush()
    [meta] = await service.list(RecordingQuery(session_id="sess_call"))
    out = io.BytesIO()
    await service.export(meta.id, out)
    with read_bundle(out.getvalue()) as bundle:
        assert np.array_equal(bundle.caller_audio(), caller)
        assert np.array_equal(bundle.assistant_audio(), np.full(480, 7, dtype=np.int16))  # played only
        events: list[dict[str, Any]] = list(bundle.events())
        clients = [e for e in events if e["dir"] == "client"]
        assert [e["event"]["type"] for e in clients] == ["response.create", "invalid"]
        assert any(e["dir"] == "note" and e["kind"] == "disclosure" for e in events)
        assert any(e["dir"] == "server" and e["event"]["type"] == "response.created" for e in events)

    opted = SessionInfo("sess_optout", "key_a", "sip", "gpt-realtime")
    observers.session_started(opted)
    observers.caller_audio(opted, caller, 2.0)
    observers.dtmf(opted, "1")  # not the opt-out key
    await service.flush()
    assert len(await service.list(RecordingQuery(session_id="sess_optout"))) == 1
    observers.dtmf(opted, "9")
    observers.session_ended(opted)
    await service.flush()
    assert await service.list(RecordingQuery(session_id="sess_optout")) == []
    await service.close()


def test_client_events_return_to_their_wire_shape() -> None:
    appended = client_event_wire(AppendAudio(np.zeros(10, dtype=np.int16), event_id="evt_a"))
    assert appended == {"type": "input_audio_buffer.append", "event_id": "evt_a"}
    assert (
        client_event_wire(ce.InputAudioBufferCommit(type="input_audio_buffer.commit"))["type"]
        == "input_audio_buffer.commit"
    )


def test_created_items_keep_their_decoded_audio() -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio"}]}
    created = ce.ConversationItemCreate(type="conversation.item.create", item=item)
    wire = client_event_wire(CreateItem(created, {0: np.full(4, 3, dtype=np.int16)}))
    audio = wire["item"]["content"][0]["audio"]
    assert np.array_equal(np.frombuffer(base64.b64decode(audio), "<i2"), np.full(4, 3))
