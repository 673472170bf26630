"""Tool-calling pieces shared by the LLM engines.

Small local models call tools reliably when (1) the decision is taken from the model's own
chat template with the tools rendered in it, at the first token of the answer, and (2) the
call itself is written under a grammar built from the tools' JSON schemas, so the JSON is
always well formed and names a real tool. This module holds the engine-independent parts:
message/tool conversion to the Chat Completions shape, call ids, the grammar's JSON schema,
argument validation, and parsing of a finished ``<tool_call>`` body.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from typing import Any

import jsonschema

from openrealtime.engines.base import ChatMessage, ToolCall, ToolChoice, ToolSpec

__all__ = [
    "DEFAULT_TOOL_GUIDANCE",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "call_json_schema",
    "check_tool_schema",
    "closest_tool_name",
    "forced_tool_name",
    "new_call_id",
    "normalise_parameters",
    "parse_tool_call",
    "to_chat_messages",
    "to_chat_tools",
    "tool_call_gbnf",
    "ungrounded_arguments",
    "validate_arguments",
]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

DEFAULT_TOOL_GUIDANCE = (
    "Call a function only when the user's latest message asks for something that function "
    "does; for greetings, chit-chat, opinions and general questions, answer directly in plain text."
)
"""Optional system-prompt line (``LlamaCppModel(tool_guidance=...)``). Off by default: on the
0.5B model it raised false calls on greetings instead of lowering them (bench/tool_accuracy.py)."""

_ID_ALPHABET = string.ascii_letters + string.digits + "-_"


def new_call_id() -> str:
    """``call_`` + 21 url-safe random characters, the shape OpenAI clients expect."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))


# --------------------------------------------------------------------------- chat shapes


def normalise_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters as an object schema (an empty schema means 'no arguments')."""
    schema = dict(parameters)
    if not schema or "type" not in schema:
        schema.setdefault("type", "object")
    if schema.get("type") == "object":
        schema.setdefault("properties", {})
    return schema


def to_chat_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tools in the Chat Completions ``tools`` shape (also what chat templates expect)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": normalise_parameters(tool.parameters),
            },
        }
        for tool in tools
    ]


def _arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments


def to_chat_messages(
    messages: Sequence[ChatMessage], *, arguments_as_object: bool = False
) -> list[dict[str, Any]]:
    """Messages in the Chat Completions shape.

    Chat templates (Jinja, Hugging Face convention) want tool-call arguments as an object and
    serialise them themselves; the HTTP API wants a JSON string: ``arguments_as_object``
    chooses.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        item: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": _arguments_object(call.arguments)
                        if arguments_as_object
                        else call.arguments,
                    },
                }
                for call in msg.tool_calls
            ]
            if not msg.content:
                item["content"] = None if not arguments_as_object else ""
        if msg.role == "tool" and msg.tool_call_id is not None:
            item["tool_call_id"] = msg.tool_call_id
        out.append(item)
    return out


def forced_tool_name(tool_choice: ToolChoice, tools: Sequence[ToolSpec]) -> str | None:
    """The function ``tool_choice`` forces, or None for ``auto``/``none``/``required``."""
    if tool_choice in ("auto", "none", "required"):
        return None
    if not any(tool.name == tool_choice for tool in tools):
        raise ValueError(f"tool_choice names {tool_choice!r}, which is not among the tools")
    return tool_choice


# --------------------------------------------------------------------------- grammar


def call_json_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON schema of one ``{"name": ..., "arguments": {...}}`` call to any of ``tools``."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": normalise_parameters(tool.parameters)},
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    if len(variants) == 1:
        return variants[0]
    return {"anyOf": variants}


@functools.lru_cache(maxsize=64)
def _gbnf_cached(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(schema_json))


def tool_call_gbnf(tools: Sequence[ToolSpec], *, arguments_only: bool = False) -> str:
    """A llama.cpp GBNF grammar for a call to one of ``tools``.

    With ``arguments_only`` (a single forced tool whose name is already written), the grammar
    covers just the arguments object. Grammars are cached by schema.
    """
    if arguments_only:
        if len(tools) != 1:
            raise ValueError("arguments_only needs exactly one tool")
        schema = normalise_parameters(tools[0].parameters)
    else:
        schema = call_json_schema(tools)
    # Key order matters: the grammar writes properties in schema order ("name" first).
    return _gbnf_cached(json.dumps(schema))


# --------------------------------------------------------------------------- validation


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def check_tool_schema(tool: ToolSpec) -> str | None:
    """An error message when the tool's parameters are not a valid JSON schema, else None."""
    try:
        _validator(json.dumps(normalise_parameters(tool.parameters), sort_keys=True))
    except jsonschema.SchemaError as exc:
        return f"tool {tool.name!r} has an invalid parameters schema: {exc.message}"
    return None


def validate_arguments(tool: ToolSpec, arguments: str) -> str | None:
    """Check a call's ``arguments`` against ``tool``'s schema: an error message, or None if valid.

    The message is written to be fed back to the model on a retry, so it names the field.
    """
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        return f"arguments for {tool.name!r} are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"arguments for {tool.name!r} must be a JSON object, got {type(value).__name__}"
    try:
        validator = _validator(json.dumps(normalise_parameters(tool.parameters), sort_keys=True))
    except jsonschema.SchemaError as exc:
        return f"tool {tool.name!r} has an invalid parameters schema: {exc.message}"
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"invalid arguments for {tool.name!r}" + (f" at {where!r}" if where else "") + f": {error.message}"


# --------------------------------------------------------------------------- parsing


def parse_tool_call(body: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """A complete call from the JSON written inside ``<tool_call>``, or None if it is not one.

    Arguments are re-serialised compactly-but-standard (``json.dumps``) so the call renders
    back into the chat template exactly as a template would, which keeps prefix caching hits.
    """
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    if not any(tool.name == name for tool in tools):
        return None
    return ToolCall(call_id=new_call_id(), name=name, arguments=json.dumps(arguments, ensure_ascii=False))


# --------------------------------------------------------------------------- grounding

_STOPWORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "from",
        "by",
        "with",
        "is",
        "are",
        "be",
        "my",
        "me",
        "you",
        "your",
        "i",
        "it",
        "this",
        "that",
        "please",
        "can",
        "could",
        "would",
        "will",
    ]
)


def _compact(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def _words(text: str) -> set[str]:
    return {
        w
        for w in re.findall(r"[0-9a-z]+", text.lower())
        if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())
    }


_NUMBER_WORDS = frozenset(
    [
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
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "half",
        "quarter",
        "dozen",
        "couple",
        "few",
        "second",
        "seconds",
        "minute",
        "minutes",
        "hour",
        "hours",
        "day",
        "days",
        "week",
        "weeks",
    ]
)


def _has_number(text: str) -> bool:
    return bool(re.search(r"\d", text)) or bool(set(re.findall(r"[a-z]+", text.lower())) & _NUMBER_WORDS)


def ungrounded_arguments(
    tool: ToolSpec, arguments: str, context: str, latest: str | None = None
) -> list[str]:
    """Required arguments whose value does not come from what the user said.

    Small models asked to call a tool for a request that needs none fill the arguments with
    their favourite example (``{"location": "Paris"}`` for "good morning", a 30-minute timer
    for "how long should I boil an egg?"). The tells: a required free-text argument (not an
    enum) sharing no word with ``context`` (the user's and tools' messages), or a required
    number when the ``latest`` user message mentions no quantity at all. Only a filter for
    ``auto`` decisions, never applied to forced calls.
    """
    try:
        values = json.loads(arguments)
    except ValueError:
        return []
    if not isinstance(values, dict):
        return []
    schema = normalise_parameters(tool.parameters)
    properties = schema.get("properties") or {}
    context_words = _words(context)
    context_compact = _compact(context)
    missing: list[str] = []
    for name in schema.get("required") or ():
        value = values.get(name)
        prop = properties.get(name) or {}
        if "enum" in prop or "const" in prop:
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if not _has_number(latest if latest is not None else context):
                missing.append(name)
            continue
        if not isinstance(value, str):
            continue
        compact = _compact(value)
        if not compact or compact in context_compact or _words(value) & context_words:
            continue
        missing.append(name)
    return missing


def closest_tool_name(name: str, tools: Sequence[ToolSpec]) -> str | None:
    """Map a name the model wrote freely to a real tool, or None if nothing is close.

    Small models often invent a near-synonym of a tool (``track_order`` for ``lookup_order``,
    ``start_timer`` for ``set_timer``); constraining the name token by token instead makes
    them pick whichever real name shares the first token, which is usually wrong.
    """
    names = [tool.name for tool in tools]
    if name in names:
        return name
    words = set(re.split(r"[^0-9a-z]+", name.lower())) - {""}
    best: tuple[float, str] | None = None
    for candidate in names:
        shared = len(words & (set(re.split(r"[^0-9a-z]+", candidate.lower())) - {""}))
        ratio = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
        if shared == 0 and ratio < 0.6:
            continue
        score = shared + ratio
        if best is None or score > best[0]:
            best = (score, candidate)
    return None if best is None else best[1]
