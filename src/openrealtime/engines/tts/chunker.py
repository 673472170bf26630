"""Cut an LLM's streaming text into pieces a TTS engine can speak as early as possible.

Time to first audio is dominated by how long we wait before handing text to the
synthesizer, so the first piece is cut at the first clause boundary once it has a few
words ("Sure, let me check that for you," is speakable long before the sentence ends).
Later pieces are whole sentences: a neural voice's prosody is better over a full sentence,
and by then the first piece's playback hides the wait.

A boundary is only taken once the characters after it are known: "3." may become "3.5",
"Dr." is followed by a name, so a cut is decided with lookahead, never on a guess. The
result therefore does not depend on how the text was split into deltas.

Pure and synchronous: no I/O, no clocks; the runtime feeds deltas and speaks what comes out.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ABBREVIATIONS", "NUMBER_ABBREVIATIONS", "ClauseChunker", "split_sentences"]

ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "cf", "gen",
        "col", "lt", "sgt", "capt", "cmdr", "rev", "hon", "gov", "sen", "rep", "pres", "messrs",
    }
)  # fmt: skip
"""Words whose period never ends a sentence ("Dr. Smith"); compared lower-case, no dot.
Words with inner dots ("e.g.", "U.S.", "p.m.") and single letters (initials) count too."""

NUMBER_ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "no", "nos", "vol", "p", "pp", "fig", "figs", "approx", "ca", "ch", "sec", "art", "eq",
        "ref", "tel", "ext", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
        "oct", "nov", "dec",
    }
)  # fmt: skip
"""Abbreviations only when a number follows ("No. 5", "Jan. 3"); "No." alone ends a sentence."""

_SENTENCE_MARKS = ".!?"
_CLAUSE_MARKS = ",;:"
_ELLIPSIS = "…"
_CLOSERS = "\"')]}\u201d\u2019\u00bb"
_OPENERS = "\"'([{\u201c\u2018\u00ab"


def _word_count(text: str) -> int:
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def _word_before(text: str, end: int) -> str:
    """The whitespace-delimited token that ends at ``end`` (exclusive), without its dots."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end].lstrip(_OPENERS)


class ClauseChunker:
    """Turns streaming text deltas into speakable pieces.

    ``push(delta)`` returns the pieces completed by that delta (often none); ``flush()``
    returns the rest at the end of the response. Pieces are stripped slices of the input, so
    joining them with spaces gives back the text modulo whitespace.

    ``min_first_words``: a clause boundary (``, ; :`` or an ellipsis) ends the first piece
    only once it holds this many words; sentence ends and newlines always do.
    ``min_words``: later pieces end at sentence boundaries only once they hold this many
    words, so "Yes. No. Maybe." is spoken as one piece after the first.
    ``max_chars``: a run without any boundary is cut (at the last clause boundary or space)
    once it grows past this, bounding the latency and the engines' input length.
    ``first_clause``: set False to cut at sentence ends only (``split_sentences``).
    ``max_first_words``: when set, the first piece is cut at a word boundary once it holds
    this many words even without punctuation, so speech starts after a few tokens.
    """

    def __init__(
        self,
        *,
        min_first_words: int = 4,
        min_words: int = 3,
        max_chars: int = 300,
        first_clause: bool = True,
        max_first_words: int | None = None,
    ) -> None:
        if min_first_words < 1 or min_words < 1:
            raise ValueError("word minimums must be at least 1")
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.min_first_words = min_first_words
        self.min_words = min_words
        self.max_chars = max_chars
        self.first_clause = first_clause
        self.max_first_words = max_first_words
        self._buf = ""
        self._emitted = 0

    @property
    def pending(self) -> str:
        """Text received but not yet emitted (e.g. to know whether a flush will say anything)."""
        return self._buf

    def reset(self) -> None:
        """Forget everything, e.g. when the response was cancelled."""
        self._buf = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        """Add a text delta; return the pieces it completed."""
        if not delta:
            return []
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of text: return whatever is left (as sentence pieces), then start over."""
        pieces = self._drain(final=True)
        rest = self._buf.strip()
        if rest:
            pieces.append(rest)
        self.reset()
        return pieces

    def feed(self, deltas: Iterable[str]) -> list[str]:
        """Convenience: all pieces of a whole stream of deltas, flushed."""
        pieces: list[str] = []
        for delta in deltas:
            pieces.extend(self.push(delta))
        pieces.extend(self.flush())
        return pieces

    # ------------------------------------------------------------------ internals

    def _drain(self, *, final: bool) -> list[str]:
        pieces: list[str] = []
        while True:
            cut = self._next_cut(final)
            if cut is None:
                return pieces
            piece = self._buf[:cut].strip()
            self._buf = self._buf[cut:]
            if piece:
                pieces.append(piece)
                self._emitted += 1

    def _boundary(self, i: int, final: bool) -> tuple[str, int] | bool | None:
        """Classify the punctuation at ``i``.

        Returns ``(kind, end)`` for a confirmed boundary (``kind`` is ``"sentence"`` or
        ``"clause"``, ``end`` is where the piece ends), ``None`` when it is not a boundary and
        ``False`` when more text is needed to decide.
        """
        buf = self._buf
        n = len(buf)
        ch = buf[i]
        if ch == "\n":
            return ("line", i)
        j = i + 1
        while j < n and buf[j] in _SENTENCE_MARKS + _ELLIPSIS:
            j += 1
        while j < n and buf[j] in _CLOSERS:
            j += 1
        if j >= n:
            return ("sentence", n) if final else False
        if not buf[j].isspace():
            return None
        marks = buf[i:j].rstrip(_CLOSERS)
        if ch in _CLAUSE_MARKS:
            return ("clause", j)
        if "!" in marks or "?" in marks:
            return ("sentence", j)
        if marks.startswith("..") or _ELLIPSIS in marks:
            return ("clause", j)
        # A single period: abbreviation, initial, list number or a real sentence end?
        word = _word_before(buf, i).lower()
        if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or "." in word:
            return None
        if word.isdigit() and len(word) <= 2 and not buf[: i - len(word)].strip().strip(_OPENERS):
            return None  # "1. First item" at the start of a piece
        k = j
        while k < n and buf[k].isspace() and buf[k] != "\n":
            k += 1
        if k >= n:
            return ("sentence", j) if final else False
        if buf[k].islower() or (word in NUMBER_ABBREVIATIONS and buf[k].isdigit()):
            return None
        return ("sentence", j)

    def _next_cut(self, final: bool) -> int | None:
        buf = self._buf
        first = self._emitted == 0
        last_clause = -1
        for i, ch in enumerate(buf):
            if i >= self.max_chars:
                return self._forced_cut(last_clause)
            if ch not in _SENTENCE_MARKS and ch not in _CLAUSE_MARKS and ch != _ELLIPSIS and ch != "\n":
                continue
            found = self._boundary(i, final)
            if found is False:
                return None
            if found is None or isinstance(found, bool):
                continue
            kind, end = found
            if end > self.max_chars:
                return self._forced_cut(last_clause)
            words = _word_count(buf[:end])
            if kind == "line":
                if words:
                    return end
                continue
            if kind == "clause":
                last_clause = end
                if first and self.first_clause and words >= self.min_first_words:
                    return end
                continue
            if words >= (1 if first else self.min_words):
                return end
        if first and self.max_first_words is not None and not final:
            return self._early_first_cut()
        return None

    def _early_first_cut(self) -> int | None:
        """End of the ``max_first_words``-th word, once the next word has begun."""
        buf = self._buf
        count = 0
        in_word = False
        for i, ch in enumerate(buf):
            if ch.isspace():
                if in_word:
                    count += 1
                    in_word = False
                    if count == self.max_first_words:
                        rest = buf[i:]
                        return i if rest.strip() else None
            else:
                in_word = True
        return None

    def _forced_cut(self, last_clause: int) -> int:
        """Cut an overlong run at its last clause boundary, else its last space."""
        if last_clause > 0:
            return last_clause
        space = self._buf.rfind(" ", 0, self.max_chars)
        return space if space > 0 else self.max_chars


def split_sentences(text: str, *, max_chars: int = 300) -> list[str]:
    """Split a complete text into sentences (with the same rules as the streaming chunker)."""
    return ClauseChunker(first_clause=False, min_words=1, max_chars=max_chars).feed([text])
