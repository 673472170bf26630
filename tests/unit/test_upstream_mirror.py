"""The upstream's WebSocket address and the conversation mirrored into it."""

from __future__ import annotations

import base64

from openrealtime.core.conversation import AudioTrack
from openrealtime.runtime.upstream.connection import auth_headers, websocket_url
from openrealtime.runtime.upstream.mirror import UNKNOWN_LENGTH_MS, ConversationMirror, upstream_item


def test_websocket_urls_of_openai_azure_and_another_openrealtime() -> None:
    assert websocket_url("https://api.openai.com/v1", "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    assert websocket_url("https://res.openai.azure.com/openai/v1/", "my-deployment") == (
        "wss://res.openai.azure.com/openai/v1/realtime?model=my-deployment"
    )
    assert (
        websocket_url("http://127.0.0.1:8000/v1?x=1&model=old", "m")
        == "ws://127.0.0.1:8000/v1/realtime?x=1&model=m"
    )
    assert auth_headers("https://res.openai.azure.com/openai/v1", "k") == {
        "Authorization": "Bearer k",
        "api-key": "k",
    }
    assert auth_headers("https://api.openai.com/v1", "k") == {"Authorization": "Bearer k"}
    assert auth_headers("https://api.openai.com/v1", None) == {}


def user_audio(item_id: str) -> dict[str, object]:
    return {
        "id": item_id,
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": "hi"}],
    }


def test_items_go_upstream_with_their_audio_and_mcp_items_stay_here() -> None:
    pcm = bytes(range(96))
    audio = {("item_a", 0): AudioTrack(data=bytearray(pcm))}
    wire = upstream_item(user_audio("item_a"), audio)
    assert wire == {
        "id": "item_a",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": base64.b64encode(pcm).decode()}],
    }
    # audio no longer held: its transcript goes instead
    assert upstream_item(user_audio("item_b"), {})["content"] == [{"type": "input_text", "text": "hi"}]  # type: ignore[index]
    answer = {
        "id": "item_c",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Hello."}],
    }
    assert upstream_item(answer, {})["content"] == [{"type": "output_text", "text": "Hello."}]  # type: ignore[index]
    assert upstream_item({"id": "item_d", "type": "mcp_list_tools", "server_label": "x"}, {}) is None


def test_sync_creates_deletes_truncates_and_never_sends_answers_back() -> None:
    mirror = ConversationMirror()
    first, second = user_audio("item_1"), user_audio("item_2")
    events = mirror.sync([first], {})
    assert [e["type"] for e in events] == ["conversation.item.create"]
    assert "previous_item_id" not in events[0]  # appended
    # the upstream answers: its item is bound to the local one, with 1 s of audio there
    mirror.bind("item_up", "item_answer")
    mirror.answered("item_answer", 1000)
    answer = {
        "id": "item_answer",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Yes."}],
    }
    track = AudioTrack(data=bytearray(48 * 1000))
    assert mirror.sync([first, answer, second], {("item_answer", 0): track}) == [
        {
            "type": "conversation.item.create",
            "item": {
                "id": "item_2",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    ]
    # barge-in cut the answer to 400 ms here: the upstream's copy is cut too, once
    del track.data[48 * 400 :]
    truncations = mirror.sync([first, answer, second], {("item_answer", 0): track})
    assert truncations == [
        {"type": "conversation.item.truncate", "item_id": "item_up", "content_index": 0, "audio_end_ms": 400}
    ]
    assert mirror.sync([first, answer, second], {("item_answer", 0): track}) == []
    # an item inserted at the start is placed; deleted items are deleted there
    zeroth = user_audio("item_0")
    events = mirror.sync([zeroth, first, second], {})
    assert {"type": "conversation.item.delete", "item_id": "item_up"} in events
    created = [e for e in events if e["type"] == "conversation.item.create"]
    assert created[0]["previous_item_id"] == "root" and created[0]["item"]["id"] == "item_0"
    # a cancelled answer is truncated to what was relayed; strays are deleted
    mirror.bind("item_up2", "item_cut")
    mirror.answered("item_cut", UNKNOWN_LENGTH_MS)
    mirror.strays.append("item_never_relayed")
    cut = {
        "id": "item_cut",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Well"}],
    }
    events = mirror.sync(
        [zeroth, first, second, cut], {("item_cut", 0): AudioTrack(data=bytearray(48 * 250))}
    )
    assert events == [
        {"type": "conversation.item.delete", "item_id": "item_never_relayed"},
        {
            "type": "conversation.item.truncate",
            "item_id": "item_up2",
            "content_index": 0,
            "audio_end_ms": 250,
        },
    ]
