"""The local conversation, mirrored into the upstream's.

The local session stays authoritative: its core owns the items, their ids and the turns
(the local VAD and turn detection commit the caller's audio; the upstream's turn detection
is off). Before each response the upstream's conversation is brought in line with the local
one: items it lacks are created (under the same ids; user audio as ``input_audio``, so the
upstream model hears the caller, not a transcript), items deleted here are deleted there,
and answers truncated here (barge-in) are truncated there to what the caller heard. Answers
the upstream produced are bound to the local items that carry them, so they are never sent
back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ...core.commands import StartResponse
from ...core.conversation import AudioTrack
from ...core.responses import Response
from .connection import RESPONSE_TAG

UPSTREAM_AUDIO_FORMAT = {"type": "audio/pcm", "rate": 24000}
"""Audio both ways is 24 kHz PCM, the session's own format inside."""
UNKNOWN_LENGTH_MS = 1 << 30
"""The upstream's length of an answer cancelled here: more than was relayed."""

Item = dict[str, Any]


def upstream_item(item: Mapping[str, Any], audio: Mapping[tuple[str, int], AudioTrack]) -> Item | None:
    """A local item as the upstream takes it in ``conversation.item.create`` (None for
    items only this server understands, such as MCP items)."""
    item_id = str(item.get("id") or "")
    kind = item.get("type")
    if kind == "function_call":
        return {
            "id": item_id,
            "type": "function_call",
            "call_id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": item.get("arguments") or "",
        }
    if kind == "function_call_output":
        return {
            "id": item_id,
            "type": "function_call_output",
            "call_id": item.get("call_id"),
            "output": item.get("output") or "",
        }
    if kind != "message":
        return None
    role = item.get("role")
    content: list[dict[str, Any]] = []
    for index, part in enumerate(item.get("content") or ()):
        part_type = part.get("type")
        words = part.get("text") if part_type in ("input_text", "output_text") else part.get("transcript")
        if part_type == "input_audio":
            track = audio.get((item_id, index))
            if track is not None and track.data:
                content.append({"type": "input_audio", "audio": base64.b64encode(track.data).decode()})
            elif words:
                content.append({"type": "input_text", "text": words})
        elif part_type == "input_image" and role == "user":
            content.append(
                {
                    "type": "input_image",
                    "image_url": part.get("image_url"),
                    "detail": part.get("detail") or "auto",
                }
            )
        elif words:
            content.append({"type": "output_text" if role == "assistant" else "input_text", "text": words})
    if not content:
        return None
    return {"id": item_id, "type": "message", "role": role, "content": content}


class ConversationMirror:
    """What the upstream's conversation holds, and how to bring it in line."""

    def __init__(self) -> None:
        self.to_upstream: dict[str, str] = {}
        """Local item id → the upstream's id of the same item."""
        self.order: list[str] = []
        """The upstream's item ids, in its order, as far as this session put them there."""
        self.audio_ms: dict[str, int] = {}
        """Local id of an upstream answer → its audio length on the upstream."""
        self.session: dict[str, Any] | None = None
        self.strays: list[str] = []
        """Upstream items no local item carries (an answer cancelled before any of it was
        relayed): deleted there at the next sync."""

    def bind(self, upstream_id: str, local_id: str, previous_upstream_id: str | None = None) -> None:
        """An item the upstream created (an answer) is the local item ``local_id``."""
        if local_id in self.to_upstream:
            return
        self.to_upstream[local_id] = upstream_id
        if previous_upstream_id in self.order:
            self.order.insert(self.order.index(previous_upstream_id) + 1, upstream_id)
        else:
            self.order.append(upstream_id)

    def answered(self, local_id: str, audio_ms: int) -> None:
        """The upstream's answer ``local_id`` has ``audio_ms`` of audio there."""
        self.audio_ms[local_id] = max(self.audio_ms.get(local_id, 0), audio_ms)

    def sync(
        self, items: Sequence[Mapping[str, Any]], audio: Mapping[tuple[str, int], AudioTrack]
    ) -> list[dict[str, Any]]:
        """The events that make the upstream's conversation hold ``items`` (the local one)."""
        events: list[dict[str, Any]] = [
            {"type": "conversation.item.delete", "item_id": up} for up in self.strays
        ]
        self.strays.clear()
        local_ids = {str(item.get("id")) for item in items}
        known = {up: local for local, up in self.to_upstream.items()}
        for up in list(self.order):
            gone = known.get(up)
            if gone is None or gone not in local_ids:
                events.append({"type": "conversation.item.delete", "item_id": up})
                self.order.remove(up)
                if gone is not None:
                    del self.to_upstream[gone]
                    self.audio_ms.pop(gone, None)
        previous: str | None = None
        for item in items:
            local = str(item.get("id"))
            mirrored = self.to_upstream.get(local)
            if mirrored is not None:
                events.extend(self._truncation(local, mirrored, audio))
                previous = mirrored
                continue
            wire = upstream_item(item, audio)
            if wire is None:
                continue
            event: dict[str, Any] = {"type": "conversation.item.create", "item": wire}
            if previous != (self.order[-1] if self.order else None):  # not appended: placed
                event["previous_item_id"] = previous or "root"
            events.append(event)
            self.bind(local, local, previous)
            previous = local
        return events

    def _truncation(
        self, local: str, up: str, audio: Mapping[tuple[str, int], AudioTrack]
    ) -> list[dict[str, Any]]:
        there = self.audio_ms.get(local)
        track = audio.get((local, 0))
        if there is None or track is None or track.duration_ms >= there:
            return []
        self.audio_ms[local] = track.duration_ms
        return [
            {
                "type": "conversation.item.truncate",
                "item_id": up,
                "content_index": 0,
                "audio_end_ms": track.duration_ms,
            }
        ]

    def session_update(self, command: StartResponse, response: Response) -> dict[str, Any] | None:
        """``session.update`` when the upstream's session differs from what this one needs:
        24 kHz PCM both ways, no turn detection or transcription there (both are done here),
        the session's instructions and voice."""
        wanted = {
            "type": "realtime",
            "instructions": response.options.instructions or "",
            "audio": {
                "input": {"format": UPSTREAM_AUDIO_FORMAT, "turn_detection": None, "transcription": None},
                "output": {"format": UPSTREAM_AUDIO_FORMAT, "voice": command.voice, "speed": command.speed},
            },
        }
        if wanted == self.session:
            return None
        sent = json.loads(json.dumps(wanted))
        if self.session is not None and self.session["audio"]["output"]["voice"] != command.voice:
            sent["audio"]["output"].pop("voice")  # fixed once the upstream has spoken
        self.session = wanted
        return {"type": "session.update", "session": sent}

    def response_create(
        self,
        command: StartResponse,
        response: Response,
        audio: Mapping[tuple[str, int], AudioTrack],
        event_id: str,
    ) -> dict[str, Any]:
        """``response.create`` for a local response: its modality, instructions, function
        tools and limits; out-of-band responses send their input along (references to
        mirrored items, the rest inline)."""
        options = response.options
        params: dict[str, Any] = {
            "output_modalities": [command.modality],
            "instructions": options.instructions or "",
            "tools": [tool for tool in options.tools if tool.get("type") == "function"],
            "tool_choice": options.tool_choice,
            "max_output_tokens": options.max_output_tokens
            if options.max_output_tokens is not None
            else "inf",
            "metadata": {**(response.metadata or {}), RESPONSE_TAG: response.id},
        }
        if command.modality == "audio":
            params["audio"] = {"output": {"format": UPSTREAM_AUDIO_FORMAT, "voice": command.voice}}
        if response.out_of_band:
            params["conversation"] = "none"
            entries: list[dict[str, Any]] = []
            for item in response.context_items:
                up = self.to_upstream.get(str(item.get("id")))
                if up is not None:
                    entries.append({"type": "item_reference", "id": up})
                    continue
                wire = upstream_item(item, audio)
                if wire is not None:
                    wire.pop("id", None)
                    entries.append(wire)
            params["input"] = entries
        return {"type": "response.create", "event_id": event_id, "response": params}
