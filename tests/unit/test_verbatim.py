"""Verbatim texts from function results: rendering for the model and the streaming expander."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from openrealtime.core.verbatim import (
    VERBATIM_INSTRUCTIONS,
    VerbatimExpander,
    marker,
    parse_verbatim,
    render_tool_output,
    verbatim_texts,
    with_verbatim_instructions,
)

LEGAL = "By confirming, you agree that the fare of $25 is non-refundable after 24 hours."


def test_parse_shapes() -> None:
    assert parse_verbatim(json.dumps({"verbatim": LEGAL})) == {"text": LEGAL}
    assert parse_verbatim(json.dumps({"verbatim": ["a", 3, "b"]})) == {"1": "a", "3": "b"}
    assert parse_verbatim(json.dumps({"verbatim": {"terms": "x  y\n z"}})) == {"terms": "x y z"}
    assert parse_verbatim("not json") == {}
    assert parse_verbatim("[1, 2]") == {}
    assert parse_verbatim(json.dumps({"verbatim": "x" * 5000})) == {}


def test_render_shows_the_marker_alone_and_leaves_other_results_alone() -> None:
    plain = '{"temperature": 21}'
    assert render_tool_output(plain, "call_1") == (plain, {})
    shown, table = render_tool_output(json.dumps({"status": "ok", "verbatim": {"terms": LEGAL}}), "call_1")
    [(mid, text)] = table.items()
    assert text == LEGAL
    data = json.loads(shown)
    assert data["status"] == "ok" and data["verbatim"]["terms"] == marker(mid)
    assert "refundable" not in shown  # the model cannot retell what it never reads
    # stable across renders (prompt cache) and distinct per call
    assert render_tool_output(json.dumps({"verbatim": {"terms": LEGAL}}), "call_1")[1] == table
    assert render_tool_output(json.dumps({"verbatim": {"terms": LEGAL}}), "call_2")[1].keys() != table.keys()
    assert "[[say:" in VERBATIM_INSTRUCTIONS


def test_instructions_mention_markers_only_when_needed() -> None:
    assert with_verbatim_instructions("Be brief.", {}) == "Be brief."
    assert with_verbatim_instructions("Be brief.", {"v1": "x"}) == f"Be brief.\n\n{VERBATIM_INSTRUCTIONS}"
    assert with_verbatim_instructions("", {"v1": "x"}) == VERBATIM_INSTRUCTIONS


def test_verbatim_texts_of_a_conversation() -> None:
    items = [
        {"type": "message", "role": "user", "content": []},
        {"type": "function_call_output", "call_id": "c1", "output": json.dumps({"verbatim": "one"})},
        {"type": "mcp_call", "id": "m1", "output": json.dumps({"verbatim": ["two"]})},
        {"type": "function_call_output", "call_id": "c2", "output": "plain"},
    ]
    assert sorted(verbatim_texts(items).values()) == ["one", "two"]


def test_expander_replaces_known_markers_and_drops_unknown() -> None:
    expander = VerbatimExpander({"v1a2b": LEGAL})
    out = expander.push("Please note: [[say:v1a2b]] Shall I book it? [[ say : nope ]] [x] [[")
    out += expander.flush()
    assert out == f"Please note: {LEGAL} Shall I book it?  [x] [["
    assert expander.used == ["v1a2b"] and expander.unknown == ["nope"]


def test_exact_text_is_not_expanded_again() -> None:
    expander = VerbatimExpander({"v1": "say [[say:v1]] literally", "v2": "x"})
    assert expander.push("[[say:v1]]") + expander.flush() == "say [[say:v1]] literally"


@given(st.lists(st.integers(min_value=0, max_value=80), max_size=6))
def test_any_split_of_the_stream_gives_the_same_text(cuts: list[int]) -> None:
    text = f"Sure. {marker('v9f00')} And [[say:V9F00]] again, [not a marker] end [[sa"
    expected = f"Sure. {LEGAL} And {LEGAL} again, [not a marker] end [[sa"
    expander = VerbatimExpander({"v9f00": LEGAL})
    pieces, last = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(text[last:cut])
        last = cut
    pieces.append(text[last:])
    assert "".join(expander.push(p) for p in pieces) + expander.flush() == expected
