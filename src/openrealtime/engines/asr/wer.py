"""Word error rate with a small, documented text normalisation.

ASR output ("Mr. Dashwood's 10 cards.") and reference transcripts ("mister dashwoods ten
cards") differ in case, punctuation, digits and abbreviations; scoring them raw would count
formatting as recognition errors. Tests and benchmarks share this one normaliser so their
numbers are comparable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["WerResult", "corpus_wer", "edit_distance", "normalize", "number_to_words", "wer"]

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miss",
    "dr": "doctor",
    "st": "saint",
    "vs": "versus",
    "ok": "okay",
}
_CURRENCIES = {"$": "dollars", "\u20ac": "euros", "\u00a3": "pounds"}
_CURRENCY = re.compile(r"([$\u20ac\u00a3])\s?(\d[\d,]*(?:\.\d+)?)")
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "@": " at "}


def number_to_words(n: int) -> str:
    """Spell a non-negative integer the way a reference transcript writes it."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            words = number_to_words(high) + " " + name
            return words if rest == 0 else words + " " + number_to_words(rest)
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _spell_number(match: re.Match[str]) -> str:
    digits = match.group("int").replace(",", "")
    frac = match.group("frac")
    suffix = match.group("suffix")
    words = number_to_words(int(digits))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix and not frac:
        words = _ordinal(words)
    return f" {words} "


_NUMBER = re.compile(
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?(?P<suffix>st|nd|rd|th)?(?!\w)"
)


def normalize(text: str) -> list[str]:
    """Lower-case words with punctuation removed, numbers spelled out, abbreviations expanded.

    Hyphens and slashes split words ("ill-disposed" -> "ill disposed"); apostrophes are
    dropped inside words ("don't" -> "dont") so both sides agree whatever they chose.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = _CURRENCY.sub(lambda m: f"{m.group(2)} {_CURRENCIES[m.group(1)]}", text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = _NUMBER.sub(_spell_number, text)
    text = text.replace("'", "")
    text = re.sub(r"[^\w\s]|_", " ", text)
    return [_ABBREVIATIONS.get(word, word) for word in text.split()]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over tokens (substitutions, insertions, deletions cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (ref_word != hyp_word),
                )
            )
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class WerResult:
    """Errors and reference length, so several utterances can be pooled correctly."""

    errors: int
    reference_words: int

    @property
    def wer(self) -> float:
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.reference_words


def wer(reference: str, hypothesis: str) -> WerResult:
    """Word error rate of one utterance after :func:`normalize`."""
    ref = normalize(reference)
    return WerResult(edit_distance(ref, normalize(hypothesis)), len(ref))


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Pooled WER over (reference, hypothesis) pairs: total errors / total reference words."""
    errors = words = 0
    for reference, hypothesis in pairs:
        result = wer(reference, hypothesis)
        errors += result.errors
        words += result.reference_words
    return WerResult(errors, words).wer
