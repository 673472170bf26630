"""A guard that keeps prompt scaffolding out of spoken answers.

A small model offered tools sometimes answers with the machinery instead of words: a tool's
name ("Tools: get_weather"), the JSON of a call, a sentence of its system prompt, or a
chat-template token. Such an answer is read aloud, so it must never leave the engine.

:class:`LeakGuard` sits on the engine's output. Pieces of text (one per token) go in; pieces
come out only once it is certain they are not the start of a leak: the unfinished last word
is held (a tool name is recognised when it is complete), and so are the last few words while
they could still begin a sentence of the protected text. When a leak is found, the held
pieces are handed back so the engine can drop them and write something else.

Talk about the machinery itself ("there is no function for that", "the available tools",
"a function call") counts too: the caller never hears about functions.

What is protected: the session's tool names when they look like identifiers (``get_weather``,
``lookupOrder``; a plain word such as ``weather`` is not: answers may say it), any
snake_case identifier (``five_minutes``: code, never speech), the markers of
a call (``{"name"``, ``"arguments"``, ``<tool_call>``, ``Tools:``), chat-template tokens
(``<|im_start|>``), and any run of ``PHRASE_WORDS`` words copied from the system text (the
instructions, tool descriptions, the template's own tool preamble). Quoted passages of the
instructions ("say 'Welcome to Acme' first") and a line's rest after "say ...:" or "reply
with this sentence:" are meant to be said, so they are not protected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "PHRASE_WORDS",
    "SAFE_ANSWER",
    "Leak",
    "LeakGuard",
    "find_leak",
    "identifier_like",
    "scaffolding_words",
]

SAFE_ANSWER = "Sorry, I can't help with that one. Could you put it another way?"
"""Said instead when an answer leaked before it said anything and could not be rewritten."""
PHRASE_WORDS = 6
"""A run of this many words copied from the system text is a leak (shorter runs are common
phrases: "how can I help you")."""

_MARKERS = re.compile(
    r"""<\||\|>|</?tool_call|</?tools>|<tool_response|\{\s*"|"name"\s*:|"arguments"|"parameters"\s*:"""
    r"""|\btools?\s*:|\bfunctions?\s*:|\#\s*tools\b|\bfunction\s+signatures?\b|\bim_(?:start|end)\b"""
    r"""|\b(?:function|tool)\s+calls?\b|\bno\s+(?:such\s+)?(?:functions?|tools?)\b"""
    r"""|\b(?:available|provided)\s+(?:functions|tools)\b|\barguments?\s*:"""
    r"""|\bcall(?:ing|s)?\s+(?:the\s+|a\s+|this\s+)?(?:\w+\s+)?functions?\b"""
    r"""|\\|\[\s*["\\]|\[\s*\[(?!\s*say\s*:)(?!\s*s?a?y?\s*$)""",
    re.IGNORECASE,
)
"""``[[say:ID]]`` is not markup: it is how the model asks for a function result's exact words
(core/verbatim.py), replaced after this guard."""
_MARKER_START = re.compile(
    r"(?:\btools?|\bfunctions?|\bcall(?:ing|s)?(?:\s+(?:the|a|this))?(?:\s+\w+)?|</?[|\w]*"
    r'|\{\s*"?\w*|"\w*|[|#\[\\])\s*$',
    re.IGNORECASE,
)
"""Text at the end of what is held that may still grow into a marker ("call the" + "function")."""
_IDENTIFIER = re.compile(r"[A-Za-z0-9]_[A-Za-z0-9]")
"""snake_case: code, never speech (a tool's name or argument written out)."""
_WORD = re.compile(r"[A-Za-z0-9_]+(?:'[A-Za-z]+)?")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|'[^']{3,}'(?=[\s.,;:!?)]|$)")
_TO_SAY = re.compile(
    r"\b(?:say|reply|replies|answer|respond|greet)\w*\b[^.:\n]{0,30}"
    r"\b(?:this|these|following|exactly|verbatim)\b[^.:\n]{0,20}:[^\n]*"
    r"|\bsay\s*:[^\n]*",
    re.IGNORECASE,
)
"""A line's rest after "say:" or "reply with exactly this sentence:" is meant to be said."""


def _unsaid_passages(text: str) -> list[str]:
    """The parts of ``text`` an answer must not copy: all but quotes and lines to be said."""
    passages: list[str] = []
    for part in _QUOTED.split(text):
        passages.extend(_TO_SAY.split(part))
    return passages


def identifier_like(name: str) -> bool:
    """Whether a tool name reads as code rather than a word (underscore, digit, inner capital)."""
    return bool(re.search(r"[_0-9]|[a-z][A-Z]|^[A-Z]{2,}[a-z]", name)) or "-" in name.strip("-")


def scaffolding_words(text: str) -> list[str]:
    """The lower-case words of ``text``, as the guard compares them."""
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class Leak:
    """What leaked (for logs and metrics) and the pieces held back, which were not emitted."""

    kind: str
    text: str
    held: tuple[str, ...]


def find_leak(text: str, tool_names: Iterable[str] = (), phrases: Iterable[str] = ()) -> str | None:
    """The first leak in a whole text, or None (the non-streaming form of the guard)."""
    guard = LeakGuard(tool_names=tool_names, protected=phrases)
    result = guard.push(text)
    if isinstance(result, Leak):
        return f"{result.kind}: {result.text}"
    end = guard.finish()
    return f"{end.kind}: {end.text}" if isinstance(end, Leak) else None


@dataclass
class LeakGuard:
    """Streaming check of an answer; see the module doc.

    ``push`` takes one piece and returns the pieces now safe to emit (possibly none), or a
    :class:`Leak`; after a leak the held pieces are dropped and the guard goes on from the
    text already emitted. ``finish`` releases what is left at the end of the answer.
    """

    tool_names: Iterable[str] = ()
    protected: Iterable[str] = ()
    phrase_words: int = PHRASE_WORDS
    emitted: str = field(init=False, default="")
    _held: list[str] = field(init=False, default_factory=list)
    _names: frozenset[str] = field(init=False, default=frozenset())
    _grams: frozenset[tuple[str, ...]] = field(init=False, default=frozenset())
    _prefixes: frozenset[tuple[str, ...]] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        self._names = frozenset(n.lower() for n in self.tool_names if n and identifier_like(n))
        grams: set[tuple[str, ...]] = set()
        prefixes: set[tuple[str, ...]] = set()
        n = self.phrase_words
        for text in self.protected:
            for passage in _unsaid_passages(text):
                words = scaffolding_words(passage)
                for i in range(len(words) - n + 1):
                    gram = tuple(words[i : i + n])
                    grams.add(gram)
                    prefixes.update(gram[:k] for k in range(1, n))
        self._grams = frozenset(grams)
        self._prefixes = frozenset(prefixes)

    @property
    def held(self) -> tuple[str, ...]:
        return tuple(self._held)

    def push(self, piece: str) -> list[str] | Leak:
        self._held.append(piece)
        leak = self._check(final=False)
        if leak is not None:
            return leak
        return self._release(final=False)

    def finish(self) -> list[str] | Leak:
        leak = self._check(final=True)
        if leak is not None:
            return leak
        return self._release(final=True)

    def drop_held(self) -> None:
        self._held.clear()

    # ------------------------------------------------------------------ internals

    def _check(self, *, final: bool) -> Leak | None:
        pending = "".join(self._held)
        text = self.emitted + pending
        # Only look at text that involves the pending part (the emitted part was clean).
        window = text[max(0, len(self.emitted) - 64) :]
        marker = _MARKERS.search(window)
        if marker is not None and marker.end() > len(window) - len(pending):
            return self._leak("markup", marker.group(0))
        words = list(_WORD.finditer(window))
        complete = words if final or not window or not window[-1].isalnum() else words[:-1]
        for match in complete:
            if match.end() <= len(window) - len(pending) - 1:
                continue
            if match.group(0).lower() in self._names:
                return self._leak("tool name", match.group(0))
            if _IDENTIFIER.search(match.group(0)):
                return self._leak("identifier", match.group(0))
        if self._grams:
            tail = scaffolding_words(text)[-(self.phrase_words + len(scaffolding_words(pending)) + 1) :]
            for i in range(len(tail) - self.phrase_words + 1):
                gram = tuple(tail[i : i + self.phrase_words])
                if gram in self._grams:
                    return self._leak("system text", " ".join(gram))
        return None

    def _leak(self, kind: str, text: str) -> Leak:
        leak = Leak(kind, text, tuple(self._held))
        self._held.clear()
        return leak

    def _release(self, *, final: bool) -> list[str]:
        """Emit the held pieces that can no longer be part of a leak."""
        if final:
            out, self._held = self._held, []
            self.emitted += "".join(out)
            return out
        keep = self._must_hold()
        count = len(self._held) - keep
        out = self._held[:count]
        self._held = self._held[count:]
        self.emitted += "".join(out)
        return out

    def _must_hold(self) -> int:
        """How many trailing pieces to keep: the unfinished word, a possible marker start,
        and the words that still match the start of a protected phrase."""
        pieces = self._held
        if not pieces:
            return 0
        text = "".join(pieces)
        hold_chars = 0
        # the last word may still grow into a tool name ("get" -> "get_weather")
        last = re.search(r"[A-Za-z0-9_']+$", text)
        if last is not None:
            hold_chars = len(last.group(0))
        # "Tools" may be followed by ":", "{" by '"', "<" by "|", "call the" by "function"
        marker_start = _MARKER_START.search(text)
        if marker_start is not None:
            hold_chars = max(hold_chars, len(text) - marker_start.start())
        if self._prefixes:
            words = scaffolding_words(self.emitted + text)
            for k in range(min(self.phrase_words - 1, len(words)), 0, -1):
                if tuple(words[-k:]) in self._prefixes:
                    start = _start_of_last_words(self.emitted + text, k)
                    hold_chars = max(hold_chars, len(self.emitted) + len(text) - start)
                    break
        return _pieces_covering(pieces, hold_chars)


def _start_of_last_words(text: str, k: int) -> int:
    matches = list(_WORD.finditer(text))
    return matches[-k].start() if len(matches) >= k else 0


def _pieces_covering(pieces: Sequence[str], chars: int) -> int:
    """How many trailing pieces hold the last ``chars`` characters."""
    if chars <= 0:
        return 0
    count = 0
    total = 0
    for piece in reversed(pieces):
        count += 1
        total += len(piece)
        if total >= chars:
            break
    return count
