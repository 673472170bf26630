"""Content safety without I/O: rules files, the streaming output screen, input checks, counters."""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from openrealtime.config import Settings
from openrealtime.engines.tts.chunker import ClauseChunker
from openrealtime.safety import Moderation, RulesError, RulesModerator, build_moderation
from openrealtime.safety.rules import RuleSet, load_rules
from openrealtime.safety.screen import RulesJudge, screen_text
from openrealtime.telemetry.metrics import ModerationMetrics

RULES_YAML = """
rules:
  - id: launch-codes
    phrases: ["launch the missiles", "swordfish"]
  - id: competitor
    phrases: ACME Corp
    action: redact
    replacement: another company
    applies_to: output
  - id: card-number
    pattern: '\\b\\d(?:[ -]?\\d){12,15}\\b'
    action: redact
  - id: insult
    pattern: '\\byou idiot\\b'
    applies_to: input
"""


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    return load_rules(path)


def test_rules_files_in_yaml_and_json(tmp_path: Path, rules: RuleSet) -> None:
    assert [r.id for r in rules.rules] == ["launch-codes", "competitor", "card-number", "insult"]
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps([{"id": "x", "phrases": ["secret"], "action": "block"}]))
    assert load_rules(as_json).rules[0].regex.search("A SECRET plan")
    bad = [
        ({"id": "a b", "phrases": ["x"]}, "'id'"),
        ({"id": "a", "phrases": ["x"], "action": "warn"}, "'action'"),
        ({"id": "a", "pattern": "(", "action": "block"}, "invalid pattern"),
        ({"id": "a", "pattern": "x*"}, "matches empty text"),
        ({"id": "a", "phrases": ["x"], "pattern": "y"}, "either"),
        ({"id": "a", "phrase": ["x"]}, "unknown field"),
        ({"id": "a", "phrases": ["x"], "applies_to": "everything"}, "'applies_to'"),
    ]
    for raw, message in bad:
        as_json.write_text(json.dumps({"rules": [raw]}))
        with pytest.raises(RulesError, match=message):
            load_rules(as_json)
    as_json.write_text(json.dumps([{"id": "a", "phrases": ["x"]}, {"id": "a", "phrases": ["y"]}]))
    with pytest.raises(RulesError, match="duplicate"):
        load_rules(as_json)
    (tmp_path / "broken.yaml").write_text("rules: [unclosed")
    with pytest.raises(RulesError, match="YAML"):
        load_rules(tmp_path / "broken.yaml")


def test_verdicts_block_redact_and_respect_direction(rules: RuleSet) -> None:
    judge = RulesJudge(rules)
    assert judge("Nothing to see here.", "output").action == "pass"
    blocked = judge("The password is Swordfish.", "output")
    assert (blocked.action, blocked.text, blocked.rules) == ("block", "", ("launch-codes",))
    redacted = judge("Try acme   corp or pay with 4242 4242 4242 4242 today.", "output")
    assert redacted.action == "redact" and redacted.rules == ("competitor", "card-number")
    assert redacted.text == "Try another company or pay with [redacted] today."
    assert judge("acme corp", "input").action == "pass"  # an output-only rule
    assert judge("you idiot", "input").action == "block" and judge("you idiot", "output").action == "pass"
    both = judge("Use ACME Corp to launch the missiles.", "output")
    assert both.action == "block" and both.rules == ("launch-codes",)


def spoken(decisions: list) -> list[str]:  # type: ignore[type-arg]
    return [d.text for d in decisions if d.spoken]


def test_output_is_cut_before_the_offending_clause(rules: RuleSet) -> None:
    text = "Sure, I can help with that today. The code you need is swordfish, keep it safe. Anything else?"
    decisions = screen_text([text], RulesJudge(rules), ClauseChunker(min_first_words=3))
    assert spoken(decisions) == ["Sure, I can help with that today."]
    blocked = [d for d in decisions if d.action == "block"]
    assert len(blocked) == 1 and blocked[0].clause.text.startswith("The code you need is swordfish")
    assert blocked[0].rules == ("launch-codes",)
    assert decisions[-1] is blocked[0]  # nothing after the cut is even handed out


def test_a_phrase_across_a_clause_boundary_is_caught_where_it_ends(rules: RuleSet) -> None:
    chunker = ClauseChunker(min_first_words=3, max_first_words=3)
    deltas = ["Okay, ", "I will launch the ", "missiles right now. ", "Done."]
    decisions = screen_text(deltas, RulesJudge(rules), chunker)
    assert spoken(decisions) == ["Okay, I will"]
    assert decisions[-1].action == "block" and "missiles" in decisions[-1].clause.text


def test_redactions_are_spoken_in_place(rules: RuleSet) -> None:
    decisions = screen_text(
        ["You could ask Acme ", "Corp. Your card 4111 1111 1111 1111 ", "was charged. Bye."],
        RulesJudge(rules),
    )
    assert (
        " ".join(spoken(decisions)) == "You could ask another company. Your card [redacted] was charged. Bye."
    )
    assert [d.action for d in decisions if d.action != "pass"] == ["redact", "redact"]


TEXT = st.lists(
    st.sampled_from(
        [
            "Sure",
            ",",
            " ",
            "the",
            "code",
            "is",
            "swordfish",
            ".",
            "Acme",
            "Corp",
            "ok",
            "!",
            "4242",
            "\n",
            "more",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=TEXT, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_decisions_do_not_depend_on_how_the_text_streamed(text: str, cuts: list[int]) -> None:
    rules = RuleSet.parse(
        [
            {"id": "code", "phrases": ["swordfish"]},
            {"id": "acme", "phrases": ["acme corp"], "action": "redact"},
        ]
    )
    bounds = sorted({0, len(text), *(c for c in cuts if 0 < c < len(text))})
    deltas = [text[a:b] for a, b in itertools.pairwise(bounds)]
    whole = screen_text([text], RulesJudge(rules))
    streamed = screen_text(deltas, RulesJudge(rules))
    assert [(d.action, d.text) for d in streamed] == [(d.action, d.text) for d in whole]
    said = " ".join(spoken(streamed)).lower()
    assert not re.search(r"\bswordfish\b", said)  # never spoken, however the deltas fell
    if not re.search(r"\bswordfish\b", text.lower()):
        assert not any(d.action == "block" for d in streamed)


class Counts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[str, ...], bool]] = []

    def count(self, direction: str, action: str, rules: tuple[str, ...], error: bool) -> None:
        self.calls.append((direction, action, rules, error))


async def test_streaming_check_and_input_check_count_without_text(
    rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    counts = Counts()
    moderation = Moderation(RulesModerator(rules), refusal="I can't help with that.", counter=counts)
    output = moderation.output(ClauseChunker(min_first_words=3), session_id="sess_1")
    caplog.set_level(logging.INFO, logger="openrealtime.safety")
    first = await output.push("Hello there, my friend. ")
    second = await output.push("The word is swordfish. And more text.")
    rest = await output.flush()
    assert [d.text for d in first + second] == ["Hello there, my friend.", ""]
    assert output.blocked is not None and output.blocked.rules == ("launch-codes",)
    assert rest == [] and await output.push("anything") == []

    refused = await moderation.check_input("you idiot, launch the missiles", session_id="sess_1")
    assert refused.blocked and refused.refusal == "I can't help with that." and refused.text == ""
    redacted = await moderation.check_input("my card is 4242-4242-4242-4242")
    assert not redacted.blocked and redacted.text == "my card is [redacted]" and redacted.refusal is None
    assert (await moderation.check_input("hello")).action == "pass"

    assert counts.calls == [
        ("output", "pass", (), False),
        ("output", "block", ("launch-codes",), False),
        ("input", "block", ("insult", "launch-codes"), False),  # in order of position
        ("input", "redact", ("card-number",), False),
        ("input", "pass", (), False),
    ]
    logged = caplog.text
    assert "block" in logged and "launch-codes" in logged and "sess_1" in logged
    for secret in ("swordfish", "idiot", "4242", "missiles"):
        assert secret not in logged


def test_moderation_metrics_by_direction_and_rule() -> None:
    registry = CollectorRegistry()
    metrics = ModerationMetrics(registry)
    metrics.count("output", "block", ("launch-codes",), False)
    metrics.count("input", "redact", ("card-number", "competitor"), False)
    metrics.count("output", "block", ("endpoint_error",), True)
    metrics.count("input", "pass", (), False)
    for n in range(80):  # an endpoint inventing categories cannot grow the series without bound
        metrics.count("output", "block", (f"endpoint:cat{n}",), False)
    text = generate_latest(registry).decode()
    assert 'openrealtime_moderation_blocks_total{direction="output",rule="launch-codes"} 1.0' in text
    assert 'openrealtime_moderation_redactions_total{direction="input",rule="competitor"} 1.0' in text
    assert 'openrealtime_moderation_errors_total{direction="output"} 1.0' in text
    assert 'openrealtime_moderation_checks_total{direction="input"} 2.0' in text
    assert 'rule="other"' in text
    assert (
        len([line for line in text.splitlines() if line.startswith("openrealtime_moderation_blocks_total")])
        <= 65
    )


def test_built_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    assert build_moderation(Settings()) is None
    moderation = build_moderation(
        Settings(moderation="rules", moderation_rules=path, moderation_refusal="No.")
    )
    assert moderation is not None and moderation.refusal == "No."
    path.write_text("rules: [{id: x}]")
    with pytest.raises(RulesError):
        build_moderation(Settings(moderation="rules", moderation_rules=path))
