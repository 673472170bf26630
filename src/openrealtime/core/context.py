"""Turning conversation items into the chat request a language model sees.

Pure functions: the same items always give the same messages, which keeps the prompt prefix
stable across turns so the LLM's prompt cache can reuse it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engines.base import ChatImage, ChatMessage, ChatRequest, ToolCall, ToolChoice, ToolSpec
from .languages import language_instruction
from .verbatim import render_tool_output, verbatim_texts, with_verbatim_instructions

IMAGE_PENDING = "[The user shared an image; no analysis of it is available.]"


def item_text(item: Mapping[str, Any]) -> str:
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
            pieces.append(part.get("_analysis") or part.get("description") or IMAGE_PENDING)
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
        images = _chat_images(item)
        if images:
            own_words = item_text({"content": [p for p in item["content"] if p.get("type") != "input_image"]})
            return [ChatMessage(role="user", content=text, images=images, content_without_images=own_words)]
        return [ChatMessage(role="user", content=text)] if text else []
    if kind == "function_call":
        call = ToolCall(
            call_id=item.get("call_id") or "",
            name=item.get("name") or "",
            arguments=item.get("arguments") or "{}",
        )
        return [ChatMessage(role="assistant", tool_calls=(call,))]
    if kind == "function_call_output":
        return [ChatMessage(role="tool", content=_tool_output(item), tool_call_id=item.get("call_id"))]
    return []


def _tool_output(item: Mapping[str, Any]) -> str:
    """What the model reads of a function result: its verbatim texts shown with markers."""
    return render_tool_output(item.get("output") or "", item.get("call_id") or "")[0]


PENDING_RESULT = (
    "Still running: the result has not arrived yet and will be given later. "
    "Do not guess it; if the user asks, say it is on its way."
)
"""Stands in for the result of a call that is still pending, so that every tool call in the
prompt is followed by a tool message (chat templates and Chat Completions servers require it)."""
AWAITING_APPROVAL = "Not run yet: waiting for the user to approve this call."


def _call_message(call_id: str, name: str, arguments: str) -> ChatMessage:
    return ChatMessage(
        role="assistant", tool_calls=(ToolCall(call_id=call_id, name=name, arguments=arguments or "{}"),)
    )


def conversation_messages(items: Sequence[dict[str, Any]]) -> list[ChatMessage]:
    """Chat messages for ``items`` in which every tool call is answered by a tool message.

    Function calls are asynchronous: the caller may keep talking while one runs, and its
    ``function_call_output`` may arrive turns later. A call is rendered where it was made,
    followed by its output when the output came right after it (the usual round trip; calls
    of one response are grouped into one assistant message), else by ``PENDING_RESULT``.
    An output that arrived later is rendered where it arrived, as the call restated and its
    result, so the model reads it as news at that point of the conversation. Earlier turns
    therefore render the same before and after a late result (the prompt cache keeps them).
    MCP calls carry their own result; approval requests render as calls awaiting approval,
    and a denial as a note to the model.
    """
    calls = {item.get("call_id"): item for item in items if item.get("type") == "function_call"}
    requests = {item.get("id"): item for item in items if item.get("type") == "mcp_approval_request"}
    messages: list[ChatMessage] = []
    used_outputs: set[int] = set()
    index = 0
    while index < len(items):
        item = items[index]
        kind = item.get("type")
        if kind == "function_call":
            end = index
            while end < len(items) and items[end].get("type") in ("function_call", "function_call_output"):
                end += 1
            group = items[index:end]
            group_calls = [i for i in group if i.get("type") == "function_call"]
            outputs: dict[str, tuple[int, dict[str, Any]]] = {}
            for offset, entry in enumerate(group):
                call_id = entry.get("call_id") or ""
                if (
                    entry.get("type") == "function_call_output"
                    and call_id not in outputs
                    and any(c.get("call_id") == call_id for c in group_calls)
                ):
                    outputs[call_id] = (index + offset, entry)
            tool_calls = tuple(
                ToolCall(
                    call_id=c.get("call_id") or "",
                    name=c.get("name") or "",
                    arguments=c.get("arguments") or "{}",
                )
                for c in group_calls
            )
            messages.append(ChatMessage(role="assistant", tool_calls=tool_calls))
            for call in tool_calls:
                found = outputs.get(call.call_id)
                if found is not None:
                    used_outputs.add(found[0])
                result = _tool_output(found[1]) if found is not None else PENDING_RESULT
                messages.append(ChatMessage(role="tool", content=result, tool_call_id=call.call_id))
            for offset, entry in enumerate(group):
                if entry.get("type") == "function_call_output" and index + offset not in used_outputs:
                    messages.extend(_late_output(entry, calls))
            index = end
            continue
        if kind == "function_call_output":
            if index not in used_outputs:
                messages.extend(_late_output(item, calls))
        elif kind == "mcp_call":
            error = item.get("error")
            if item.get("output") is not None:
                result = render_tool_output(str(item.get("output")), item.get("id") or "")[0]
            elif isinstance(error, dict):
                result = f"Error: {error.get('message') or 'the tool failed'}"
            else:
                result = PENDING_RESULT
            call_id = item.get("id") or ""
            messages.append(_call_message(call_id, item.get("name") or "", item.get("arguments") or ""))
            messages.append(ChatMessage(role="tool", content=result, tool_call_id=call_id))
        elif kind == "mcp_approval_request":
            call_id = item.get("id") or ""
            messages.append(_call_message(call_id, item.get("name") or "", item.get("arguments") or ""))
            messages.append(ChatMessage(role="tool", content=AWAITING_APPROVAL, tool_call_id=call_id))
        elif kind == "mcp_approval_response":
            if not item.get("approve"):
                request = requests.get(item.get("approval_request_id"))
                name = request.get("name") if request is not None else None
                reason = f" ({item['reason']})" if item.get("reason") else ""
                messages.append(
                    ChatMessage(
                        role="system",
                        content=f"The user declined the call to {name or 'the tool'}{reason}, so it was "
                        "not run. Do not call it again; tell the user briefly.",
                    )
                )
        else:
            messages.extend(item_to_messages(item))
        index += 1
    return messages


def _late_output(item: dict[str, Any], calls: dict[Any, dict[str, Any]]) -> list[ChatMessage]:
    """A function result that arrived after other turns: the call restated, then its result."""
    call_id = item.get("call_id") or ""
    output = _tool_output(item)
    call = calls.get(call_id)
    if call is None:  # its call was deleted: the result still informs the model
        return [ChatMessage(role="system", content=f"A function result arrived (call {call_id}): {output}")]
    return [
        _call_message(call_id, call.get("name") or "", call.get("arguments") or ""),
        ChatMessage(role="tool", content=output, tool_call_id=call_id),
    ]


def _chat_images(item: dict[str, Any]) -> tuple[ChatImage, ...]:
    return tuple(
        ChatImage(url=part["image_url"], detail=part.get("detail") or "auto")
        for part in item.get("content") or ()
        if part.get("type") == "input_image" and part.get("image_url")
    )


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
        if choice.get("type") == "mcp" and not choice.get("name"):
            return "required"
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
    language: str | None = None,
) -> ChatRequest:
    """Build the chat request for a response over ``items``.

    With ``max_input_tokens`` (truncation ``auto``), the oldest messages are dropped until the
    estimate fits, always keeping the instructions and the latest message. The function
    results' verbatim texts and the answer's ``language`` add lines at the end of the
    instructions (the prefix before them stays the same for the prompt cache).
    """
    messages = conversation_messages(items)
    verbatim = verbatim_texts(items)
    instructions = with_verbatim_instructions(instructions, verbatim)
    line = language_instruction(language)
    if line is not None:
        instructions = f"{instructions.rstrip()}\n\n{line}" if instructions.strip() else line
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
        language=language,
        verbatim=verbatim,
    )


@dataclass(frozen=True)
class RequestOptions:
    """What a response asks of the model, fixed when the response is created."""

    instructions: str
    tools: list[dict[str, Any]]
    tool_choice: Any
    max_output_tokens: int | None
    max_input_tokens: int
    truncate: bool
    """Drop the oldest turns to fit (``truncation`` is not ``disabled``)."""


def request_for(
    context: Sequence[dict[str, Any]],
    outputs: Sequence[dict[str, Any]],
    options: RequestOptions,
    tools: Sequence[dict[str, Any]],
    count_tokens: Callable[[str], int],
    language: str | None = None,
) -> ChatRequest | None:
    """The request for a response that read ``context`` and produced ``outputs`` so far
    (continuing after MCP results), offering ``tools``; None when it does not fit and
    truncation is disabled."""
    tool_choice = options.tool_choice
    if any(item.get("type") == "mcp_call" for item in outputs):
        tool_choice = "auto"  # continuing after MCP results: never force another call
    request = build_chat_request(
        [*context, *outputs],
        instructions=options.instructions,
        tools=tools,
        tool_choice=tool_choice,
        max_output_tokens=options.max_output_tokens,
        count_tokens=count_tokens,
        max_input_tokens=options.max_input_tokens,
        language=language,
    )
    if not options.truncate:
        kept = sum(m.role != "tool" for m in request.messages) - 1  # without the instructions
        whole = sum(m.role != "tool" for m in conversation_messages([*context, *outputs]))
        if kept < whole:  # it would have needed truncating
            return None
    return request
