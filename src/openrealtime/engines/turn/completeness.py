"""Is the text of the turn so far a finished utterance? Two ways to ask.

* :class:`RuleCompleteness`: a small classifier over the last words of the partial
  transcript, free to run. A turn that ends in an article, conjunction, possessive or
  "of"/"to" is not finished; Whisper's own end punctuation carries what it heard in the
  voice ("?" and "." versus "," or "..."; it writes "He might even..." for a cut-off);
  auxiliaries and pronouns ("... he was") end a turn only with end punctuation; anything else
  is a coin toss.
* :class:`LlamaEndOfUtterance`: the chat model's own view, in the spirit of LiveKit's turn
  detector: after the user's text in the chat template, the probability that what comes
  next ends the utterance: the end-of-turn token (``<|im_end|>`` for Qwen) or a sentence end
  (``.``, ``?``, ``!``; an instruct model that was not fine-tuned for this rarely closes a
  turn without one). Text is lower-cased and stripped of punctuation first, so the model
  judges the words and not Whisper's full stop. The shared
  prompt prefix stays in the KV cache, and a growing partial transcript only evaluates its
  new tokens. One call costs one forward pass over the new tokens: measured in
  ``bench/end_of_turn.py``.

Both implement :class:`TextCompleteness`: ``probability(text)`` in [0, 1], ``None`` when there
is no text to judge.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "INCOMPLETE_ENDINGS",
    "WEAK_ENDINGS",
    "LlamaEndOfUtterance",
    "RuleCompleteness",
    "TextCompleteness",
    "normalise",
]

INCOMPLETE_ENDINGS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "because",
        "if",
        "unless",
        "although",
        "though",
        "whereas",
        "of",
        "to",
        "into",
        "onto",
        "from",
        "with",
        "than",
        "my",
        "your",
        "his",
        "her",
        "its",
        "our",
        "their",
        "whose",
        "um",
        "uh",
        "er",
        "erm",
        "let's",
        "gonna",
        "wanna",
    ]
)
"""Words after which an English utterance is almost never finished, whatever the punctuation."""

WEAK_ENDINGS = frozenset(
    [
        "in",
        "on",
        "at",
        "for",
        "by",
        "about",
        "as",
        "like",
        "that",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "while",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "will",
        "would",
        "can",
        "could",
        "should",
        "shall",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "this",
        "these",
        "those",
        "some",
        "any",
        "every",
        "each",
        "no",
        "not",
        "very",
        "more",
        "most",
        "less",
        "i",
        "we",
        "you",
        "he",
        "she",
        "they",
        "it's",
        "i'm",
        "we're",
        "you're",
        "they're",
        "he's",
        "she's",
        "what",
        "how",
        "why",
        "just",
        "really",
        "then",
        "also",
        "even",
        "such",
        "so",
    ]
)
"""Words that end a sentence now and then ("that's what he was."): they count only when the
transcript shows no end punctuation."""

_WORD = re.compile(r"[a-z0-9']+")


def normalise(text: str) -> str:
    """Lower case, words and apostrophes only, single spaces."""
    return " ".join(_WORD.findall(text.lower().replace("\u2019", "'")))


@runtime_checkable
class TextCompleteness(Protocol):
    """Probability that ``text`` is a complete turn; ``None`` when there is nothing to judge."""

    def probability(self, text: str) -> float | None: ...


class RuleCompleteness:
    """Last word and end punctuation (see the module docs); costs microseconds."""

    def __init__(
        self,
        *,
        incomplete: float = 0.08,
        question: float = 0.85,
        full_stop: float = 0.7,
        continuing_mark: float = 0.2,
        unknown: float = 0.45,
    ) -> None:
        self.incomplete = incomplete
        self.question = question
        self.full_stop = full_stop
        self.continuing_mark = continuing_mark
        self.unknown = unknown

    def probability(self, text: str) -> float | None:
        words = normalise(text).split()
        if not words:
            return None
        stripped = text.rstrip()
        if stripped.endswith(("...", "…", ",", ";", ":", "-", "—")):
            return self.continuing_mark
        last = words[-1]
        ended = stripped.endswith(("?", ".", "!"))
        if last in INCOMPLETE_ENDINGS or (last in WEAK_ENDINGS and not ended):
            return self.incomplete
        if stripped.endswith("?"):
            return self.question
        if ended:
            return self.full_stop
        return self.unknown


class LlamaEndOfUtterance:
    """P(end-of-turn token | chat template + user text) from a GGUF chat model (llama.cpp).

    Thread-safe (one call at a time). ``model_path`` defaults to the embedded Qwen 0.5B.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_threads: int = 1,
        end_token: str = "<|im_end|>",
        sentence_ends: tuple[str, ...] = (".", "?", "!"),
        system: str = "You are a helpful voice assistant.",
        midpoint: float = 0.01,
        scale: float = 0.8,
    ) -> None:
        from llama_cpp import Llama

        from openrealtime.engines import assets

        path = Path(model_path) if model_path is not None else assets.resolve("qwen2.5-0.5b")
        self.model_path = path
        self.midpoint = midpoint
        self.scale = scale
        self._llm: Any = Llama(
            model_path=str(path),
            n_ctx=512,
            n_batch=128,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            verbose=False,
        )
        self._ends: list[int] = []
        for mark in (end_token, *sentence_ends):
            ids = self._llm.tokenize(mark.encode(), add_bos=False, special=True)
            if len(ids) != 1:
                raise ValueError(f"{mark!r} is not a single token of this model")
            self._ends.append(int(ids[0]))
        self._prefix = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
        import llama_cpp

        self._lc: Any = llama_cpp
        self._n_vocab = int(self._llm.n_vocab())
        self._tokens: list[int] = []
        self._lock = threading.Lock()
        self.last_new_tokens = 0

    def probability(self, text: str) -> float | None:
        """The calibrated probability (see :meth:`calibrate`)."""
        raw = self.raw_probability(text)
        return None if raw is None else self.calibrate(raw)

    def calibrate(self, raw: float) -> float:
        """The model's raw probabilities are small and spread over decades (0.1 after a full
        sentence, 1e-4 after "of the"): map their log onto [0, 1], ``midpoint`` -> 0.5."""
        z = self.scale * (math.log(max(raw, 1e-12)) - math.log(self.midpoint))
        return 1.0 / (1.0 + math.exp(-z))

    def raw_probability(self, text: str) -> float | None:
        """P(end-of-turn token or sentence end | template + normalised text)."""
        words = normalise(text)
        if not words:
            return None
        tokens = self._llm.tokenize((self._prefix + words).encode(), add_bos=False, special=True)
        with self._lock:
            common = 0
            for a, b in zip(self._tokens, tokens, strict=False):
                if a != b:
                    break
                common += 1
            common = min(common, len(tokens) - 1)  # at least one token is evaluated for logits
            self._llm.n_tokens = common
            self._llm.eval(tokens[common:])
            self._tokens = list(tokens)
            self.last_new_tokens = len(tokens) - common
            # the last evaluated position's logits (logits_all=False keeps only that row)
            raw = self._lc.llama_get_logits(self._llm.ctx)
            logits = np.ctypeslib.as_array(raw, shape=(self._n_vocab,)).astype(np.float64)
        top = float(logits.max())
        log_total = top + math.log(float(np.exp(logits - top).sum()))
        return float(sum(math.exp(float(logits[i]) - log_total) for i in self._ends))
