"""Conversation items: their constructors, and the client's operations on the conversation
(create, retrieve, delete, truncate), with the images and audio that come with items.

Items are wire-shaped dicts; every kind the server makes is built by one constructor here, so
its shape is written once. Keys starting with ``_`` are the server's own notes (an image's
token count and analysis) and never reach the client (``protocol.items.item_to_wire``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..images.data_url import CheckedImage, ImageInputError, check_data_url
from ..images.tokens import image_tokens
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.items import item_to_wire
from .commands import AnalyzeImage
from .conversation import AudioTrack
from .events import AudioClip, CreateItem, ImageAnalyzed, PcmAudio, RetrievedItem
from .state import SessionState

Item = dict[str, Any]

# --------------------------------------------------------------------------- constructors


def _item(item_id: str, kind: str, status: str, **fields: Any) -> Item:
    return {"id": item_id, "object": "realtime.item", "type": kind, "status": status, **fields}


def user_audio_message(item_id: str) -> Item:
    """A committed turn of the caller; its transcript arrives later."""
    return _item(
        item_id, "message", "completed", role="user", content=[{"type": "input_audio", "transcript": None}]
    )


def assistant_message(item_id: str) -> Item:
    """An answer being generated; its content is filled in when it closes."""
    return _item(item_id, "message", "in_progress", role="assistant", content=[])


def assistant_content(modality: str, text: str) -> list[dict[str, Any]]:
    """The final content of an assistant message."""
    if modality == "audio":
        return [{"type": "output_audio", "transcript": text}]
    return [{"type": "output_text", "text": text}]


def response_part(modality: str, text: str) -> dict[str, Any]:
    """A content part as ``response.content_part.*`` report it (``audio``/``text``, not the
    item's ``output_*``: clients validate this enum strictly)."""
    return {"type": "audio", "transcript": text} if modality == "audio" else {"type": "text", "text": text}


def function_call(item_id: str, name: str, call_id: str) -> Item:
    return _item(item_id, "function_call", "in_progress", name=name, call_id=call_id, arguments="")


def mcp_list_tools(item_id: str, server_label: str) -> Item:
    return _item(item_id, "mcp_list_tools", "in_progress", server_label=server_label, tools=[])


def mcp_approval_request(item_id: str, server_label: str, name: str, arguments: str) -> Item:
    return _item(
        item_id,
        "mcp_approval_request",
        "in_progress",
        server_label=server_label,
        name=name,
        arguments=arguments,
    )


def mcp_call(item_id: str, server_label: str, name: str, approval_request_id: str | None) -> Item:
    return _item(
        item_id,
        "mcp_call",
        "in_progress",
        server_label=server_label,
        name=name,
        arguments="",
        approval_request_id=approval_request_id,
        output=None,
        error=None,
    )


def client_item(fields: Item, item_id: str) -> Item:
    """An item the client created, as stored: its own fields, completed."""
    fields.update(id=item_id, object="realtime.item", status="completed")
    return fields


def pcm_bytes(pcm: PcmAudio) -> bytes:
    return pcm.astype("<i2", copy=False).tobytes()


# --------------------------------------------------------------------------- the client's operations


class Items:
    """``conversation.item.create / retrieve / delete / truncate`` and image analysis."""

    def __init__(self, state: SessionState, *, decide_approval: Callable[[Item], None]) -> None:
        self.state = state
        self.decide_approval = decide_approval
        """Checks and records an ``mcp_approval_response`` (raises ``RealtimeError``)."""

    @property
    def input_format(self) -> str:
        return self.state.session.audio.input.format.type

    def create(self, created: CreateItem) -> None:
        state, conversation = self.state, self.state.conversation
        event = created.event
        parsed = ce.parse_item(event.item, "item", event.event_id)
        item = parsed.model_dump(mode="json", exclude_none=True)
        if len(conversation) >= state.limits.max_items:
            raise RealtimeError(
                "conversation_too_many_items",
                f"The conversation already holds {state.limits.max_items} items; delete some first.",
                param="item",
            )
        previous = event.previous_item_id
        if previous is not None and previous != "root" and previous not in conversation:
            raise RealtimeError(
                "item_create_invalid_previous_item_id",
                f"Previous item with id '{previous}' does not exist.",
                param="previous_item_id",
            )
        item_id = item.get("id") or state.new_id("item_")
        if item_id in conversation:
            raise RealtimeError(
                "item_create_duplicate_item_id", f"Item with id '{item_id}' already exists.", param="item.id"
            )
        tracks: dict[int, AudioTrack] = {}
        images: dict[int, CheckedImage] = {}
        if item["type"] == "message":
            for index, part in enumerate(item["content"]):
                if item["role"] == "assistant" and part["type"] == "output_audio":
                    raise RealtimeError(
                        "unsupported_content_type",
                        "Assistant messages created by the client may only contain 'output_text'.",
                        param=f"item.content[{index}].type",
                    )
                if part["type"] == "input_audio":
                    part.pop("audio", None)
                    pcm = created.audio.get(index)
                    if pcm is not None and len(pcm):
                        tracks[index] = AudioTrack(format=self.input_format, data=bytearray(pcm_bytes(pcm)))
                    part.setdefault("transcript", None)
                if part["type"] == "input_image":
                    images[index] = self.accept_image(part, index)
        elif item["type"] == "function_call_output" and not conversation.has_call(item["call_id"]):
            raise RealtimeError(
                "item_create_invalid_call_id",
                f"No function call with call_id '{item['call_id']}' exists in the conversation.",
                param="item.call_id",
            )
        elif item["type"] == "function_call":
            item.setdefault("call_id", state.new_id("call_"))
        elif item["type"] == "mcp_approval_response":
            self.decide_approval(item)
        item = client_item(item, item_id)
        placed_after = conversation.insert(item, previous)
        for index, track in tracks.items():
            conversation.audio[(item_id, index)] = track
        wire = item_to_wire(item)
        state.emit(se.ConversationItemAdded(item=wire, previous_item_id=placed_after))
        state.emit(se.ConversationItemDone(item=wire, previous_item_id=placed_after))
        self._analyze_images(item, images)

    def retrieve(self, event: ce.ConversationItemRetrieve) -> None:
        conversation = self.state.conversation
        item = conversation.get(event.item_id)
        if item is None:
            raise RealtimeError(
                "item_retrieve_invalid_item_id",
                f"Item with item_id not found: {event.item_id}",
                param="item_id",
            )
        wire = item_to_wire(item, include_audio=True)
        clips: dict[int, AudioClip] = {}
        for index, part in enumerate(wire.get("content") or []):
            track = conversation.audio.get((event.item_id, index))
            if track is not None and part.get("type") in ("input_audio", "output_audio"):
                clips[index] = AudioClip(bytes(track.data), track.format)
        self.state.emit(RetrievedItem(se.ConversationItemRetrieved(item=wire), clips))

    def delete(self, event: ce.ConversationItemDelete) -> None:
        if event.item_id not in self.state.conversation:
            raise RealtimeError(
                "item_delete_invalid_item_id",
                f"Item with item_id not found: {event.item_id}",
                param="item_id",
            )
        self.state.conversation.delete(event.item_id)
        self.state.emit(se.ConversationItemDeleted(item_id=event.item_id))

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        """Cut assistant audio to what was heard, and its transcript to the words spoken."""
        conversation = self.state.conversation
        item = conversation.get(item_id)
        if item is None:
            raise RealtimeError(
                "item_truncate_invalid_item_id", f"Item with item_id not found: {item_id}", param="item_id"
            )
        content = item.get("content") or []
        track = conversation.audio.get((item_id, content_index))
        if (
            item.get("type") != "message"
            or item.get("role") != "assistant"
            or content_index >= len(content)
            or content[content_index].get("type") != "output_audio"
            or track is None
            or (audio_end_ms == 0 and track.duration_ms == 0)
        ):
            raise RealtimeError(
                "unsupported_content_type",
                "Only model output audio messages can be truncated",
                param="item_id",
            )
        if audio_end_ms > track.heard_at_most_ms:
            raise RealtimeError(
                "invalid_value",
                f"Audio content of {track.duration_ms}ms is already shorter than {audio_end_ms}ms",
                param="audio_end_ms",
            )
        part = content[content_index]
        part["transcript"] = track.transcript_heard(part.get("transcript") or "", audio_end_ms)
        cut = audio_end_ms * track.bytes_per_ms
        del track.data[cut:]
        kept: list[tuple[int, int]] = []
        start = 0
        for end, text_len in track.alignment:
            if start < cut:  # this chunk began before the cut: its words were heard
                kept.append((min(end, cut), text_len))
            start = end
        track.alignment = kept
        self.state.emit(
            se.ConversationItemTruncated(
                item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
            )
        )

    # ---- images

    def accept_image(self, part: dict[str, Any], index: int, prefix: str = "item") -> CheckedImage:
        """Check an ``input_image`` data URL; its token count is kept on the part. (Images in a
        ``response.create`` input are billed but not analysed: the model hears one was shared.)"""
        try:
            checked = check_data_url(part["image_url"])
        except ImageInputError as exc:
            raise RealtimeError(exc.code, exc.message, param=f"{prefix}.content[{index}].image_url") from None
        part["_image_tokens"] = image_tokens(checked.width, checked.height, part.get("detail", "auto"))
        return checked

    def _analyze_images(self, item: Item, images: Mapping[int, CheckedImage]) -> None:
        """Ask the runtime to describe each new image once; the analysis is cached on the item."""
        if not images or self.state.llm_sees_images:
            return
        hint = " ".join(
            str(part.get("text") or "") for part in item["content"] if part.get("type") == "input_text"
        ).strip()
        for index, checked in images.items():
            detail = item["content"][index].get("detail", "auto")
            self.state.command(AnalyzeImage(item["id"], index, checked.data, detail, hint or None))

    def image_analyzed(self, result: ImageAnalyzed) -> None:
        item = self.state.conversation.get(result.item_id)
        content = (item or {}).get("content") or []
        if result.content_index < len(content) and content[result.content_index].get("type") == "input_image":
            content[result.content_index]["_analysis"] = result.text
