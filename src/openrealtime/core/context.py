"""Turning conversation items into the chat request a language model sees.

Pure functions: the same items always give the same messages, which keeps the prompt prefix
stable across turns so the LLM's prompt cache can reuse it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..engines.base import ChatMessage, ChatRequest, ToolCall, ToolChoice, ToolSpec


def item_text(item: dict[str, Any]) -> str:
    """The words of a message item: typed text, transcripts of audio, a note for images."""
    pieces: list[str] = []
    for part in item.get("content") or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            pieces.append(part.get("text") or "")
        elif kind in ("input_audio", "output_audio"):
            transcript = part.get("transcript")
            if transcript:
                pieces.append(transcript)
        elif kind == "input_image":
            pieces.append(part.get("description") or "[The user shared an image.]")
    return " ".join(p.strip() for p in pieces if p and p.strip())


def item_to_messages(item: dict[str, Any]) -> list[ChatMessage]:
    kind = item.get("type")
    if kind == "message":
        text = item_text(item)
        role = item.get("role")
        if role == "system":
            return [ChatMessage(role="system", content=text)]
        if role == "assistant":
            return [ChatMessage(role="assistant", content=text)] if text else []
        return [ChatMessage(role="user", content=text)] if text else []
    if kind == "function_call":
        call = ToolCall(
            call_id=item.get("call_id") or "",
            name=item.get("name") or "",
            arguments=item.get("arguments") or "{}",
        )
        return [ChatMessage(role="assistant", tool_calls=(call,))]
    if kind == "function_call_output":
        return [ChatMessage(role="tool", content=item.get("output") or "", tool_call_id=item.get("call_id"))]
    return []


def tool_specs(tools: Sequence[dict[str, Any]]) -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(
            name=tool["name"],
            description=tool.get("description") or "",
            parameters=tool.get("parameters") or {"type": "object", "properties": {}},
        )
        for tool in tools
        if tool.get("type") == "function"
    )


def tool_choice_of(choice: Any) -> ToolChoice:
    if isinstance(choice, dict):
        return str(choice.get("name") or "auto")
    return str(choice)


def build_chat_request(
    items: Sequence[dict[str, Any]],
    *,
    instructions: str,
    tools: Sequence[dict[str, Any]],
    tool_choice: Any,
    max_output_tokens: int | None,
    count_tokens: Callable[[str], int] | None = None,
    max_input_tokens: int | None = None,
) -> ChatRequest:
    """Build the chat request for a response over ``items``.

    With ``max_input_tokens`` (truncation ``auto``), the oldest messages are dropped until the
    estimate fits, always keeping the instructions and the latest message.
    """
    messages: list[ChatMessage] = []
    for item in items:
        messages.extend(item_to_messages(item))
    system = ChatMessage(role="system", content=instructions)
    specs = tool_specs(tools)
    if count_tokens is not None and max_input_tokens is not None:
        fixed = count_tokens(instructions) + sum(
            count_tokens(json.dumps(spec.parameters)) + count_tokens(spec.description) for spec in specs
        )

        def size(message: ChatMessage) -> int:
            extra = sum(count_tokens(c.arguments) + 8 for c in message.tool_calls)
            return count_tokens(message.content) + 6 + extra

        total = fixed + sum(size(m) for m in messages)
        while len(messages) > 1 and total > max_input_tokens:
            total -= size(messages.pop(0))
        # a tool result must not lead the history without the call that produced it
        while len(messages) > 1 and messages[0].role == "tool":
            messages.pop(0)
    return ChatRequest(
        messages=(system, *messages),
        tools=specs,
        tool_choice=tool_choice_of(tool_choice) if specs else "none",
        max_output_tokens=max_output_tokens,
    )
