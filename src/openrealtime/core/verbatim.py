"""Exact words from function results: the model decides when, the server says them.

A function result may carry texts that must be said word for word (terms of a sale, a legal
notice, a disclaimer) in a ``"verbatim"`` field of its JSON object::

    {"status": "booked", "verbatim": {"terms": "The fare is non-refundable after 24 hours."}}

(a string, a list of strings, or an object of named strings). The model never has to copy
those words: the tool message it reads shows each text as a short marker only, and
:data:`VERBATIM_INSTRUCTIONS` tells it to write the marker (``[[say:v1a2b]]``) where the text
belongs. The words themselves are kept from the model: the default model (Qwen2.5 0.5B),
shown marker and words, retold the words in 3 of 3 trials (a legal sentence came back as "The
cancellation terms of your ticket are non-refundable ..."); shown the marker alone it wrote
the marker in 6 of 6. A result that the model must also reason about says so in its other
fields (``{"refundable": false, "verbatim": ...}``). On the way out, :class:`VerbatimExpander` replaces each marker in the model's
streaming text with the exact words, before the text is cut into pieces for speech and
before it becomes the transcript, so both carry the same exact words. Markers are derived
from the call id and field, so a conversation renders the same on every turn (the LLM's
prompt cache keeps it).

Pure: no I/O, no clocks. The session core renders tool messages with
:func:`render_tool_output` and collects the markers of a response's context with
:func:`verbatim_texts`; the runtime runs the model's text deltas through a
:class:`VerbatimExpander`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MARKER_RE",
    "VERBATIM_FIELD",
    "VERBATIM_INSTRUCTIONS",
    "VerbatimExpander",
    "marker",
    "parse_verbatim",
    "render_tool_output",
    "verbatim_texts",
    "with_verbatim_instructions",
]

VERBATIM_FIELD = "verbatim"
"""The key of a function result's JSON object that holds texts to be said word for word."""

MAX_VERBATIM_CHARS = 4000
"""Longer texts are refused (kept in the result for the model to read, without a marker)."""

MARKER_RE = re.compile(r"\[\[\s*say\s*:\s*(?P<id>[A-Za-z0-9_]{1,32})\s*\]\]", re.IGNORECASE)
"""What the model writes: ``[[say:ID]]`` (spaces and case tolerated)."""

_MAX_HELD = 48  # a marker is never longer than this; a longer "[[" run is ordinary text

VERBATIM_INSTRUCTIONS = (
    "Some function results hold exact texts as markers like [[say:v1a2b]]. To say such a "
    "text, write its marker exactly: the exact words are spoken in its place. Never invent "
    "a marker."
)
"""Added to the instructions of a response whose context holds any verbatim text."""


def with_verbatim_instructions(instructions: str, texts: Mapping[str, str]) -> str:
    """The response's instructions, plus :data:`VERBATIM_INSTRUCTIONS` when its context holds
    verbatim texts (unchanged otherwise, so other prompts and their cache are untouched)."""
    if not texts:
        return instructions
    return (
        f"{instructions.rstrip()}\n\n{VERBATIM_INSTRUCTIONS}"
        if instructions.strip()
        else VERBATIM_INSTRUCTIONS
    )


def marker(marker_id: str) -> str:
    return f"[[say:{marker_id}]]"


def _marker_id(call_id: str, key: str) -> str:
    digest = hashlib.sha256(f"{call_id}\x00{key}".encode()).hexdigest()
    return "v" + digest[:4]


def parse_verbatim(output: str) -> dict[str, str]:
    """The verbatim texts of a function result by field name ({} when there are none).

    ``"verbatim": "text"`` gives ``{"text": ...}``; a list gives ``{"1": ..., "2": ...}``;
    an object gives its string values. Empty and over-long texts are ignored.
    """
    try:
        data = json.loads(output)
    except (TypeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    value = data.get(VERBATIM_FIELD)
    found: dict[str, str] = {}
    if isinstance(value, str):
        found["text"] = value
    elif isinstance(value, list):
        found.update({str(i): v for i, v in enumerate(value, start=1) if isinstance(v, str)})
    elif isinstance(value, dict):
        found.update({str(k): v for k, v in value.items() if isinstance(v, str)})
    return {k: " ".join(v.split()) for k, v in found.items() if v.strip() and len(v) <= MAX_VERBATIM_CHARS}


def render_tool_output(output: str, call_id: str) -> tuple[str, dict[str, str]]:
    """What the model reads for a function result, and its markers (id -> exact text).

    Each verbatim text is shown as its marker ``"[[say:ID]]"`` in place (the words stay with
    the server, so the model cannot retell them); the rest of the result is passed through
    unchanged (a result without verbatim texts is returned as it was, byte for byte).
    """
    texts = parse_verbatim(output)
    if not texts:
        return output, {}
    data: dict[str, Any] = json.loads(output)
    value = data[VERBATIM_FIELD]
    table: dict[str, str] = {}

    def shown(key: str) -> str | None:
        text = texts.get(key)
        if text is None:
            return None
        mid = _marker_id(call_id, key)
        table[mid] = text
        return marker(mid)

    if isinstance(value, str):
        data[VERBATIM_FIELD] = shown("text") or value
    elif isinstance(value, list):
        data[VERBATIM_FIELD] = [shown(str(i)) or v for i, v in enumerate(value, start=1)]
    else:
        data[VERBATIM_FIELD] = {k: shown(str(k)) or v for k, v in value.items()}
    return json.dumps(data, ensure_ascii=False), table


def verbatim_texts(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every marker of a conversation's function results (``function_call_output`` items and
    answered ``mcp_call`` items), id -> exact text."""
    table: dict[str, str] = {}
    for item in items:
        kind = item.get("type")
        if kind == "function_call_output":
            call_id, output = str(item.get("call_id") or ""), item.get("output")
        elif kind == "mcp_call":
            call_id, output = str(item.get("id") or ""), item.get("output")
        else:
            continue
        if isinstance(output, str):
            table.update(render_tool_output(output, call_id)[1])
    return table


class VerbatimExpander:
    """Replaces ``[[say:ID]]`` markers in streaming text with their exact words.

    ``push(delta)`` returns the text that is certain (a possible marker's beginning is held
    back until it completes or proves to be ordinary text); ``flush()`` returns the rest at
    the end of the model's output. A marker with an unknown id is dropped (``unknown`` lists
    them): a made-up marker must never be spoken as "say v-one".
    """

    def __init__(self, texts: Mapping[str, str]) -> None:
        self.texts = {k.lower(): v for k, v in texts.items()}
        self.unknown: list[str] = []
        self.used: list[str] = []
        self._buf = ""

    def push(self, delta: str) -> str:
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> str:
        return self._drain(final=True)

    def _replace(self, m: re.Match[str]) -> str:
        mid = m.group("id").lower()
        text = self.texts.get(mid)
        if text is None:
            self.unknown.append(m.group("id"))
            return ""
        self.used.append(mid)
        return text

    def _drain(self, *, final: bool) -> str:
        raw = self._buf
        hold = 0 if final else _held_tail(raw)
        self._buf = raw[len(raw) - hold :]
        return MARKER_RE.sub(self._replace, raw[: len(raw) - hold])


def _held_tail(text: str) -> int:
    """Length of the tail of ``text`` that may still grow into a marker."""
    start = text.rfind("[", max(0, len(text) - _MAX_HELD))
    while start > 0 and text[start - 1] == "[":
        start -= 1
    if start < 0:
        return 0
    tail = text[start:]
    return len(tail) if _could_be_marker(tail) else 0


def _could_be_marker(tail: str) -> bool:
    """True when ``tail`` is the beginning of a ``[[say:ID]]`` marker (spaces ignored)."""
    compact = re.sub(r"\s+", "", tail).lower()
    head = "[[say:"
    if len(compact) <= len(head):
        return head.startswith(compact)
    if not compact.startswith(head):
        return False
    return re.fullmatch(r"[a-z0-9_]{0,32}\]?", compact[len(head) :]) is not None
