from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrealtime.engines.tts.chunker import ClauseChunker, split_sentences


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def run(text: str, cuts: list[int] | None = None, **kwargs: int) -> list[str]:
    """Feed ``text`` split at ``cuts`` (positions) and flush."""
    chunker = ClauseChunker(**kwargs)  # type: ignore[arg-type]
    bounds = sorted({0, len(text), *(c for c in (cuts or []) if 0 < c < len(text))})
    pieces: list[str] = []
    for start, end in itertools.pairwise(bounds):
        pieces.extend(chunker.push(text[start:end]))
    pieces.extend(chunker.flush())
    return pieces


# ---------------------------------------------------------------------------- examples


def test_first_piece_at_first_clause_with_enough_words() -> None:
    chunker = ClauseChunker()
    assert chunker.push("Sure, let") == []  # "Sure," is too short to be spoken alone
    assert chunker.push(" me check that for you, and") == ["Sure, let me check that for you,"]
    assert chunker.push(" then I will tell you. It") == ["and then I will tell you."]
    assert chunker.flush() == ["It"]


def test_later_pieces_are_sentences_not_clauses() -> None:
    text = "Hello there! Well, first of all, thanks for asking, it is a good one. Bye now, friend."
    assert run(text) == [
        "Hello there!",
        "Well, first of all, thanks for asking, it is a good one.",
        "Bye now, friend.",
    ]


def test_short_later_sentences_are_merged() -> None:
    assert run("Okay then. Yes. No. Maybe so. Fine by me.") == [
        "Okay then.",
        "Yes. No. Maybe so.",
        "Fine by me.",
    ]


def test_decimal_waits_for_the_next_character() -> None:
    chunker = ClauseChunker()
    assert chunker.push("It costs 3.") == []
    assert chunker.push("5 dollars. Next") == ["It costs 3.5 dollars."]
    assert chunker.pending == " Next"


def test_period_waits_for_the_next_word_to_rule_out_abbreviations() -> None:
    chunker = ClauseChunker()
    assert chunker.push("Call me tomorrow. ") == []
    assert chunker.push("Thanks") == ["Call me tomorrow."]


def test_question_and_exclamation_cut_without_lookahead() -> None:
    chunker = ClauseChunker()
    assert chunker.push("Really? ") == ["Really?"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith will see you now. Please wait.", ["Dr. Smith will see you now.", "Please wait."]),
        ("Bring fruit, e.g. apples and pears. Thanks.", ["Bring fruit, e.g. apples and pears.", "Thanks."]),
        (
            "Mr. and Mrs. Jones live in the U.S. today. Yes.",
            ["Mr. and Mrs. Jones live in the U.S. today.", "Yes."],
        ),
        ("See page No. 5 on Jan. 3 please. Done.", ["See page No. 5 on Jan. 3 please.", "Done."]),
        ("No. I don't think so.", ["No.", "I don't think so."]),
        ("J. R. R. Tolkien wrote it. True.", ["J. R. R. Tolkien wrote it.", "True."]),
        ("It grew 1,000 times at 10:30 today. Wow.", ["It grew 1,000 times at 10:30 today.", "Wow."]),
        ('He said "stop!" Then he left.', ['He said "stop!"', "Then he left."]),
        ("Wait... I think so. Right.", ["Wait... I think so.", "Right."]),
        ("It is done etc. and more to come. End.", ["It is done etc. and more to come.", "End."]),
    ],
)
def test_sentence_rules(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_numbered_list_lines() -> None:
    text = "Here are the steps:\n1. Open the app.\n2. Tap settings.\n3. Done."
    assert run(text) == ["Here are the steps:", "1. Open the app.", "2. Tap settings.", "3. Done."]


def test_overlong_run_is_cut_at_a_clause_or_space() -> None:
    text = ("word " * 100).strip()
    pieces = run(text, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert squash("".join(pieces)) == squash(text)
    with_clause = "alpha beta, " + "gamma " * 20
    assert run(with_clause, max_chars=40, min_first_words=10)[0] == "alpha beta,"


def test_flush_resets_and_empty_input() -> None:
    chunker = ClauseChunker()
    assert chunker.push("") == []
    assert chunker.flush() == []
    assert chunker.push("Hi") == []
    assert chunker.flush() == ["Hi"]
    assert chunker.push("Sure, one two three four, five") == ["Sure, one two three four,"]
    chunker.reset()
    assert chunker.flush() == []


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        ClauseChunker(min_first_words=0)
    with pytest.raises(ValueError):
        ClauseChunker(max_chars=5)


# ---------------------------------------------------------------------------- properties

WORDS = st.sampled_from(
    ["hello", "Dr.", "3.5", "e.g.", "No.", "U.S.", "1,000", "ok", "I", "A.", "10:30", "etc.", "wow", "5"]
)
PUNCT = st.sampled_from(["", "", "", ",", ".", "!", "?", ";", ":", "...", "\u2026", '."', "?)"])
SPACE = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", "\t"])


@st.composite
def texts(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 40))):
        parts.append(draw(WORDS) + draw(PUNCT) + draw(SPACE))
    text = "".join(parts)
    if draw(st.booleans()):
        text = text.rstrip()
    return text


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(texts(), st.text(max_size=200)), cuts=st.lists(st.integers(0, 400), max_size=30))
def test_pieces_reassemble_the_text(text: str, cuts: list[int]) -> None:
    pieces = run(text, cuts)
    assert squash("".join(pieces)) == squash(text)
    assert all(p and p == p.strip() for p in pieces)


@settings(max_examples=300, deadline=None)
@given(text=texts(), cuts=st.lists(st.integers(0, 400), max_size=30), max_chars=st.integers(20, 200))
def test_pieces_do_not_depend_on_how_the_text_was_streamed(
    text: str, cuts: list[int], max_chars: int
) -> None:
    assert run(text, cuts, max_chars=max_chars) == run(text, max_chars=max_chars)


@settings(max_examples=200, deadline=None)
@given(text=texts(), max_chars=st.integers(20, 200))
def test_pieces_respect_max_chars(text: str, max_chars: int) -> None:
    for piece in run(text, max_chars=max_chars):
        assert len(piece) <= max_chars


@settings(max_examples=200, deadline=None)
@given(text=texts())
def test_split_sentences_reassembles(text: str) -> None:
    assert squash("".join(split_sentences(text))) == squash(text)
