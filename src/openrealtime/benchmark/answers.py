"""Judging answers: does a text answer leak prompt scaffolding?

Written independently of the engine's ``LeakGuard`` (engines/llm/leaks.py) so that the
benchmark and the tests do not grade the guard with itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from openrealtime.engines.base import ToolSpec

__all__ = ["TEMPLATE_SENTENCES", "TEMPLATE_TOKENS", "answer_leak"]

TEMPLATE_SENTENCES = (
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "You may call one or more functions to assist with the user query.",
    "You are provided with function signatures within <tools></tools> XML tags:",
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:",
)
"""The tool preamble of Qwen2.5's chat template (the embedded models)."""

TEMPLATE_TOKENS = ("<|", "|>", "<tool_call", "</tool_call", "<tools>", "im_start", "im_end", "endoftext")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def answer_leak(answer: str, tools: Iterable[ToolSpec], system: Sequence[str], run: int = 6) -> str | None:
    """Why ``answer`` leaks scaffolding, or None: a tool name, a snake_case identifier, call
    JSON, "Tools:", talk about functions ("no function fits"), a chat-template token, or a run
    of ``run`` words copied from the system text, a tool description or the chat template's
    tool preamble."""
    lower = answer.lower()
    for tool in tools:
        name = tool.name.lower()
        if name in lower or re.search(rf"\b{re.escape(name.replace('_', ''))}\b", lower):
            return f"tool name {tool.name}"
    if re.search(r"[a-z0-9]_[a-z0-9]", lower):
        return "code identifier"
    if re.search(r"\{\s*\"|\"name\"|\"arguments\"", answer):
        return "call JSON"
    if re.search(r"\btools?\s*:", lower):
        return "Tools:"
    if re.search(
        r"\bfunctions?\b.{0,30}\b(?:fits?|exists?|available|call)|\b(?:no|available)\s+(?:functions?|tools?)\b"
        r"|\bcall(?:ing|s)?\s+(?:the\s+|a\s+|this\s+)?(?:\w+\s+)?functions?\b|\barguments?\s*:",
        lower,
    ):
        return "talks about functions"
    for token in TEMPLATE_TOKENS:
        if token in lower:
            return f"template token {token}"
    words = _words(answer)
    grams = {tuple(words[i : i + run]) for i in range(len(words) - run + 1)}
    sources = [*system, *(t.description for t in tools), *TEMPLATE_SENTENCES]
    for source in sources:
        ref = _words(source)
        for i in range(len(ref) - run + 1):
            if tuple(ref[i : i + run]) in grams:
                return f"system text: {' '.join(ref[i : i + run])}"
    return None
