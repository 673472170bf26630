"""A ``LanguageModel`` backed by any OpenAI Chat Completions endpoint.

This is the production seam for bigger models: vLLM, llama.cpp's server, Ollama, or a hosted
API. Requests are streamed with a synchronous httpx client (engines run on worker threads);
tool calls arrive as fragments per ``index`` and are only emitted once complete, as the
``LanguageModel`` protocol promises. Usage comes from the stream's final chunk
(``stream_options.include_usage``) including ``prompt_tokens_details.cached_tokens`` when the
server reports it.

Token counts are exact only when the server reports usage. ``count_tokens`` and the fallback
usage (servers that ignore ``include_usage``) use a local tokenizer: a ``tokenizer.json`` you
pass, else the GPT-2-style byte-level BPE shipped with the Whisper tiny.en package, else
``ceil(utf-8 bytes / 4)``. For a remote model of another family this is an approximation
(typically within 10-20 % for English), which is acceptable for accounting but not for
context-window arithmetic close to the limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from openrealtime.engines.base import (
    CancelToken,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from openrealtime.engines.llm.leaks import SAFE_ANSWER, Leak, LeakGuard
from openrealtime.engines.llm.tool_calling import (
    forced_tool_name,
    new_call_id,
    to_chat_messages,
    to_chat_tools,
)

__all__ = ["OpenAICompatibleError", "OpenAICompatibleModel"]

log = logging.getLogger(__name__)

_CANCEL_POLL_S = 0.05
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


class OpenAICompatibleError(RuntimeError):
    """The endpoint refused the request or broke the stream."""


@dataclass
class _PendingCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _load_tokenizer(tokenizer_file: Path | None) -> Callable[[str], int] | None:
    path = tokenizer_file
    if path is None:
        from openrealtime.engines.assets import AssetError, package_file

        try:
            path = package_file("whisper-tiny.en", "tokenizer.json")
        except AssetError:
            return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    tokenizer = Tokenizer.from_file(str(path))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


@contextlib.contextmanager
def _cancel_watch(response: httpx.Response, cancel: CancelToken) -> Iterator[None]:
    """Shut the response's socket down as soon as ``cancel`` is set.

    A blocked read (the server still processing the prompt) is not woken by closing the
    response from another thread, but it is by ``shutdown``; the reader then sees the stream
    end and reports the generation cancelled.
    """
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(_CANCEL_POLL_S):
            if cancel.cancelled:
                stream = response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    watcher = threading.Thread(target=watch, name="llm-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()


class OpenAICompatibleModel:
    """Streams chat completions from ``base_url`` (e.g. ``http://host:8000/v1``).

    Thread-safe: every ``generate`` opens its own streamed request on a shared connection
    pool. Cancelling closes the connection within ~50 ms, even while the server is still
    processing the prompt (the server then stops generating).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        tokenizer_file: Path | None = None,
        include_usage: bool = True,
        client: httpx.Client | None = None,
        vision: bool = False,
        guard_leaks: bool = True,
    ) -> None:
        self.name = model
        self.guard_leaks = guard_leaks
        self.leaks = 0
        """Answers cut short because they began to leak scaffolding (see ``generate``)."""
        self.vision = vision
        """The endpoint takes images (``image_url`` content parts) instead of their analysis."""
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._extra_body = dict(extra_body or {})
        self._include_usage = include_usage
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), headers=all_headers
        )
        if client is not None:
            self._client.headers.update(all_headers)
        self._tokenizer: Callable[[str], int] | None = None
        self._tokenizer_file = tokenizer_file
        self._tokenizer_lock = threading.Lock()
        self._tokenizer_loaded = False

    # ------------------------------------------------------------------ tokens

    def count_tokens(self, text: str) -> int:
        """Approximate: a local tokenizer, not the remote model's (see the module docstring)."""
        if not text:
            return 0
        with self._tokenizer_lock:
            if not self._tokenizer_loaded:
                self._tokenizer = _load_tokenizer(self._tokenizer_file)
                self._tokenizer_loaded = True
        if self._tokenizer is not None:
            return self._tokenizer(text)
        return math.ceil(len(text.encode("utf-8")) / 4)

    # ------------------------------------------------------------------ generation

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(request),
            "stream": True,
            "temperature": request.temperature,
        }
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        if request.max_output_tokens is not None:
            body["max_tokens"] = request.max_output_tokens
        if request.tools:
            body["tools"] = to_chat_tools(request.tools)
            forced = forced_tool_name(request.tool_choice, request.tools)
            body["tool_choice"] = (
                {"type": "function", "function": {"name": forced}} if forced else request.tool_choice
            )
        body.update(self._extra_body)
        return body

    def _messages(self, request: ChatRequest) -> list[dict[str, Any]]:
        """Chat messages; a vision endpoint gets user images as ``image_url`` content parts."""
        messages = to_chat_messages(request.messages)
        if not self.vision:
            return messages
        for out, message in zip(messages, request.messages, strict=True):
            if message.images:
                words = message.content_without_images or ""
                out["content"] = [
                    *([{"type": "text", "text": words}] if words else []),
                    *(
                        {"type": "image_url", "image_url": {"url": image.url, "detail": image.detail}}
                        for image in message.images
                    ),
                ]
        return messages

    def _leak_guard(self, request: ChatRequest) -> LeakGuard:
        """Scaffolding of this request that must not be spoken (see engines/llm/leaks.py)."""
        system = [m.content for m in request.messages if m.role == "system" and m.content]
        return LeakGuard(
            tool_names=[t.name for t in request.tools],
            protected=[*system, *(t.description for t in request.tools if t.description)],
        )

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Stream text deltas, then complete tool calls, then one ``GenerationDone``.

        Text goes out through a ``LeakGuard``: tool names, call JSON, system text or template
        tokens in the answer end it before they are emitted (with ``SAFE_ANSWER`` when nothing
        was said yet)."""
        body = self._body(request)
        pending: dict[int, _PendingCall] = {}
        text_parts: list[str] = []
        finish = "stop"
        usage: dict[str, Any] | None = None
        guard = self._leak_guard(request) if self.guard_leaks else None
        leak: Leak | None = None

        if cancel.cancelled:
            yield self._done("cancelled", request, text_parts, pending, None)
            return
        try:
            with (
                self._client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response,
                _cancel_watch(response, cancel),
            ):
                if response.status_code >= 400:
                    detail = response.read().decode("utf-8", "replace")[:500]
                    raise OpenAICompatibleError(f"{response.status_code} from {self.base_url}: {detail}")
                for line in response.iter_lines():
                    if cancel.cancelled:
                        finish = "cancelled"
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError as exc:
                        raise OpenAICompatibleError(
                            f"bad stream chunk from {self.base_url}: {data[:200]}"
                        ) from exc
                    if "error" in chunk:
                        raise OpenAICompatibleError(f"error from {self.base_url}: {chunk['error']}")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            text_parts.append(content)
                            if guard is None:
                                yield TextDelta(content)
                            elif leak is None:
                                safe = guard.push(content)
                                if isinstance(safe, Leak):
                                    leak = safe
                                elif "".join(safe):
                                    yield TextDelta("".join(safe))
                        for frag in delta.get("tool_calls") or ():
                            part = pending.setdefault(int(frag.get("index", 0)), _PendingCall())
                            if frag.get("id") and not part.call_id:
                                part.call_id = frag["id"]
                            function = frag.get("function") or {}
                            # Some servers repeat the name in every fragment; names never arrive split.
                            if function.get("name") and not part.name:
                                part.name = function["name"]
                            if function.get("arguments"):
                                part.arguments.append(function["arguments"])
                        if choice.get("finish_reason"):
                            finish = _FINISH.get(choice["finish_reason"], "stop")
        except httpx.HTTPError as exc:
            if not cancel.cancelled:
                raise OpenAICompatibleError(f"request to {self.base_url} failed: {exc}") from exc
            finish = "cancelled"

        if guard is not None and finish != "cancelled":
            if leak is None:
                rest = guard.finish()
                if isinstance(rest, Leak):
                    leak = rest
                elif "".join(rest):
                    yield TextDelta("".join(rest))
            if leak is not None:
                # A remote stream cannot be rewound: the answer ends before the leak.
                self.leaks += 1
                log.warning("dropped scaffolding from %s's answer (%s)", self.base_url, leak.kind)
                if not guard.emitted.strip() and not pending:
                    yield TextDelta(SAFE_ANSWER)
        if finish != "cancelled":
            complete = [self._complete(fragments) for _, fragments in sorted(pending.items())]
            for call in complete:
                yield ToolCallDelta(call)
            if complete:
                finish = "tool_calls"
        yield self._done(finish, request, text_parts, pending, usage)

    @staticmethod
    def _complete(call: _PendingCall) -> ToolCall:
        arguments = "".join(call.arguments).strip() or "{}"
        # The runtime validates the arguments against the schema; a normalised form keeps
        # the history identical to what a template would render.
        with contextlib.suppress(ValueError):
            arguments = json.dumps(json.loads(arguments), ensure_ascii=False)
        return ToolCall(call_id=call.call_id or new_call_id(), name=call.name, arguments=arguments)

    def _done(
        self,
        finish: str,
        request: ChatRequest,
        text_parts: list[str],
        pending: dict[int, _PendingCall],
        usage: dict[str, Any] | None,
    ) -> GenerationDone:
        if usage is not None:
            details = usage.get("prompt_tokens_details") or {}
            prompt = int(usage.get("prompt_tokens") or 0)
            cached = int(details.get("cached_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
        else:
            prompt = sum(self.count_tokens(m.content) + 4 for m in request.messages)
            cached = 0
            completion = self.count_tokens("".join(text_parts)) + sum(
                self.count_tokens(call.name + "".join(call.arguments)) for call in pending.values()
            )
        reason: Any = finish
        return GenerationDone(
            finish_reason=reason,
            prompt_tokens=prompt,
            cached_prompt_tokens=cached,
            completion_tokens=completion,
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
