"""Moderation rules: patterns that block or redact text, loaded from a YAML or JSON file.

::

    rules:
      - id: competitor            # shown in /metrics and logs (never the text)
        phrases: ["acme corp", "acme corporation"]   # literal, any case, any spacing
        action: redact            # or block (the default)
        replacement: "another company"
        applies_to: output        # input (caller transcripts), output (model text) or both
      - id: card-number
        pattern: '\\b(?:\\d[ -]?){13,16}\\b'          # a Python regular expression
        action: redact

Matching ignores case unless a rule sets ``case_sensitive: true``. A rule id may only hold
letters, digits, ``_``, ``.`` and ``-`` (it becomes a metric label).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]

__all__ = ["Action", "Direction", "Match", "Rule", "RuleSet", "RulesError", "load_rules"]

Action = Literal["pass", "redact", "block"]
Direction = Literal["input", "output"]
_RULE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_REPLACEMENT = "[redacted]"


class RulesError(ValueError):
    """The rules file cannot be used (the message says where)."""


@dataclass(frozen=True)
class Rule:
    id: str
    regex: re.Pattern[str]
    action: Literal["block", "redact"] = "block"
    applies_to: Literal["input", "output", "both"] = "both"
    replacement: str = DEFAULT_REPLACEMENT

    def applies(self, direction: Direction) -> bool:
        return self.applies_to in ("both", direction)


@dataclass(frozen=True)
class Match:
    rule: Rule
    start: int
    end: int


def _phrase_regex(phrase: str) -> str:
    words = phrase.split()
    if not words:
        raise RulesError("an empty phrase")
    body = r"\s+".join(re.escape(word) for word in words)
    head = r"\b" if words[0][0].isalnum() else ""
    tail = r"\b" if words[-1][-1].isalnum() else ""
    return head + body + tail


def _rule(raw: Any, position: int) -> Rule:
    where = f"rule {position + 1}"
    if not isinstance(raw, Mapping):
        raise RulesError(f"{where}: expected a mapping with id, pattern or phrases, action")
    unknown = set(raw) - {"id", "pattern", "phrases", "action", "applies_to", "replacement", "case_sensitive"}
    if unknown:
        raise RulesError(f"{where}: unknown field(s) {sorted(unknown)}")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise RulesError(f"{where}: 'id' must be 1-64 letters, digits, '_', '.' or '-'")
    where = f"rule {rule_id!r}"
    action = raw.get("action", "block")
    if action not in ("block", "redact"):
        raise RulesError(f"{where}: 'action' must be 'block' or 'redact'")
    applies_to = raw.get("applies_to", "both")
    if applies_to not in ("input", "output", "both"):
        raise RulesError(f"{where}: 'applies_to' must be 'input', 'output' or 'both'")
    replacement = raw.get("replacement", DEFAULT_REPLACEMENT)
    if not isinstance(replacement, str):
        raise RulesError(f"{where}: 'replacement' must be text")
    pattern, phrases = raw.get("pattern"), raw.get("phrases")
    if (pattern is None) == (phrases is None):
        raise RulesError(f"{where}: give either 'pattern' or 'phrases'")
    if phrases is not None:
        if isinstance(phrases, str):
            phrases = [phrases]
        if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) for p in phrases):
            raise RulesError(f"{where}: 'phrases' must be a list of text")
        try:
            source = "|".join(f"(?:{_phrase_regex(p)})" for p in phrases)
        except RulesError as err:
            raise RulesError(f"{where}: {err}") from None
    elif isinstance(pattern, str) and pattern:
        source = pattern
    else:
        raise RulesError(f"{where}: 'pattern' must be a regular expression")
    flags = 0 if raw.get("case_sensitive") else re.IGNORECASE
    try:
        regex = re.compile(source, flags)
    except re.error as err:
        raise RulesError(f"{where}: invalid pattern ({err})") from None
    if regex.match(""):
        raise RulesError(f"{where}: the pattern matches empty text")
    return Rule(rule_id, regex, action, applies_to, replacement)


class RuleSet:
    """The rules, in file order."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        ids = [rule.id for rule in self.rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise RulesError(f"duplicate rule id(s) {duplicates}")

    @classmethod
    def parse(cls, data: Any) -> RuleSet:
        rules = data.get("rules") if isinstance(data, Mapping) else data
        if not isinstance(rules, list):
            raise RulesError("expected a list of rules (or a mapping with a 'rules' list)")
        return cls(_rule(raw, index) for index, raw in enumerate(rules))

    def matches(self, text: str, direction: Direction) -> list[Match]:
        """Every match of a rule for ``direction``, in order of position."""
        found = [
            Match(rule, m.start(), m.end())
            for rule in self.rules
            if rule.applies(direction)
            for m in rule.regex.finditer(text)
            if m.end() > m.start()
        ]
        return sorted(found, key=lambda m: (m.start, m.end))


def load_rules(path: Path) -> RuleSet:
    """Read a rules file: JSON when it ends in ``.json``, else YAML (a superset of JSON)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise RulesError(f"cannot read the moderation rules {path}: {err}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise RulesError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({err})"
        ) from None
    try:
        return RuleSet.parse(data)
    except RulesError as err:
        raise RulesError(f"{path}: {err}") from None


def redact(text: str, matches: Sequence[Match], offset: int = 0) -> str:
    """``text`` with each match (positions relative to ``text`` plus ``offset``) replaced by its
    rule's replacement; overlapping matches merge into the first one."""
    out: list[str] = []
    cursor = 0
    for match in matches:
        start, end = max(0, match.start - offset), min(len(text), match.end - offset)
        if end <= cursor or start >= len(text):
            continue
        if start < cursor:
            cursor = end  # overlaps the previous match: one replacement for both
            continue
        out.append(text[cursor:start])
        out.append(match.rule.replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)
