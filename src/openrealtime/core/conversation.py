"""The default conversation: an ordered list of items addressable by id.

Items are kept in wire shape (plain dicts, built by the constructors in items.py) so that
what the client sees and what the model is given come from one place; audio lives beside
them as 24 kHz PCM, never inside the dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PCM_BYTES_PER_MS = 48
"""24 kHz int16 mono."""


@dataclass
class AudioTrack:
    """The audio of one content part (24 kHz int16 PCM), the wire format it is reported in,
    and what of its transcript each byte carried."""

    format: str = "audio/pcm"
    data: bytearray = field(default_factory=bytearray)
    bytes_per_ms: int = PCM_BYTES_PER_MS
    # (audio length in bytes after a chunk, transcript length when that chunk was produced)
    alignment: list[tuple[int, int]] = field(default_factory=list)

    @property
    def duration_ms(self) -> int:
        return len(self.data) // self.bytes_per_ms

    @property
    def heard_at_most_ms(self) -> int:
        """The longest ``audio_end_ms`` a client can claim to have played: the duration rounded
        up (G.711 clients count 1/8 ms per byte of a stream resampled from this one), plus 1 ms
        for clients that add up float milliseconds per delta and round the sum up (openai-agents
        does: an exact 2322 ms can come out as 2322.0000000004, sent as 2323)."""
        return -(-len(self.data) // self.bytes_per_ms) + 1

    def transcript_heard(self, transcript: str, audio_end_ms: int) -> str:
        """The part of ``transcript`` whose audio started before ``audio_end_ms``."""
        cut = audio_end_ms * self.bytes_per_ms
        spoken = 0
        start = 0
        for end_bytes, text_len in self.alignment:
            if start < cut:
                spoken = text_len
            start = end_bytes
        return transcript[:spoken].rstrip()


class Conversation:
    """Ordered conversation items with ``previous_item_id`` placement."""

    def __init__(self) -> None:
        self._order: list[str] = []
        self._items: dict[str, dict[str, Any]] = {}
        self.audio: dict[tuple[str, int], AudioTrack] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._order)

    def get(self, item_id: str) -> dict[str, Any] | None:
        return self._items.get(item_id)

    def items(self) -> list[dict[str, Any]]:
        return [self._items[i] for i in self._order]

    def ids(self) -> list[str]:
        return list(self._order)

    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def previous_of(self, item_id: str) -> str | None:
        index = self._order.index(item_id)
        return self._order[index - 1] if index > 0 else None

    def insert(self, item: dict[str, Any], previous_item_id: str | None = None) -> str | None:
        """Insert ``item``: append when ``previous_item_id`` is None, first for ``"root"``.

        Returns the id of the item now before it (None at the start). The caller has checked
        that the id is new and that ``previous_item_id`` exists.
        """
        item_id = item["id"]
        if previous_item_id is None:
            self._order.append(item_id)
        elif previous_item_id == "root":
            self._order.insert(0, item_id)
        else:
            self._order.insert(self._order.index(previous_item_id) + 1, item_id)
        self._items[item_id] = item
        return self.previous_of(item_id)

    def delete(self, item_id: str) -> None:
        self._order.remove(item_id)
        del self._items[item_id]
        for key in [k for k in self.audio if k[0] == item_id]:
            del self.audio[key]

    def has_call(self, call_id: str) -> bool:
        return any(
            item.get("type") == "function_call" and item.get("call_id") == call_id
            for item in self._items.values()
        )
