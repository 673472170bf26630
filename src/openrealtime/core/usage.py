"""Usage per response, counted the way the real service bills it (spec §9.3).

User audio costs 1 token per 100 ms, assistant audio 1 token per 50 ms (generated, played or
not); text tokens come from the language model's own tokenizer and prompt cache; images
count by OpenAI's image rule (images/tokens.py), whatever the LLM was shown for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .context import item_text

USER_AUDIO_MS_PER_TOKEN = 100
ASSISTANT_AUDIO_MS_PER_TOKEN = 50


@dataclass
class Usage:
    input_text_tokens: int = 0
    cached_text_tokens: int = 0
    input_audio_ms: int = 0
    input_audio_tokens: int | None = None
    """Set by ``account_audio`` (user audio at 100 ms and assistant audio at 50 ms per token,
    item by item); otherwise ``input_audio_ms`` is counted as user audio."""
    cached_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_image_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_ms: int = 0

    def wire(self) -> dict[str, Any]:
        input_audio = (
            self.input_audio_tokens
            if self.input_audio_tokens is not None
            else self.input_audio_ms // USER_AUDIO_MS_PER_TOKEN
        )
        cached_audio = min(self.cached_audio_tokens, input_audio)
        output_audio = self.output_audio_ms // ASSISTANT_AUDIO_MS_PER_TOKEN
        input_total = self.input_text_tokens + input_audio + self.input_image_tokens
        output_total = self.output_text_tokens + output_audio
        cached = min(self.cached_text_tokens, self.input_text_tokens)
        cached_image = min(self.cached_image_tokens, self.input_image_tokens)
        return {
            "total_tokens": input_total + output_total,
            "input_tokens": input_total,
            "output_tokens": output_total,
            "input_token_details": {
                "text_tokens": self.input_text_tokens,
                "audio_tokens": input_audio,
                "image_tokens": self.input_image_tokens,
                "cached_tokens": cached + cached_audio + cached_image,
                "cached_tokens_details": {
                    "text_tokens": cached,
                    "audio_tokens": cached_audio,
                    "image_tokens": cached_image,
                },
            },
            "output_token_details": {"text_tokens": self.output_text_tokens, "audio_tokens": output_audio},
        }


@dataclass(frozen=True)
class PromptImage:
    """One image in a response's context, as usage needs it."""

    billed_tokens: int
    """What the image is billed as (OpenAI's image rule, images/tokens.py)."""
    prompt_tokens: int
    """What it took in this LLM's prompt: its analysis text, or the image itself."""
    prefix_tokens: int
    """Estimated prompt tokens up to the end of the message that holds it."""


def account_images(usage: Usage, images: Sequence[PromptImage], cached_prefix: int | None = None) -> None:
    """Count images as image tokens: the LLM reported them inside its prompt (as analysis
    text, or as the image), so they move out of the text counts. An image counts as cached
    when the LLM's cached prefix (``cached_prefix``, default the cached text tokens) reaches
    the end of its message."""
    if not images:
        return
    limit = usage.cached_text_tokens if cached_prefix is None else cached_prefix
    cached = [image for image in images if image.prefix_tokens <= limit]
    usage.input_image_tokens += sum(image.billed_tokens for image in images)
    usage.cached_image_tokens += sum(image.billed_tokens for image in cached)
    usage.input_text_tokens = max(0, usage.input_text_tokens - sum(image.prompt_tokens for image in images))
    usage.cached_text_tokens = max(0, usage.cached_text_tokens - sum(image.prompt_tokens for image in cached))


@dataclass(frozen=True)
class PromptAudio:
    """One audio item in a response's context, as usage needs it."""

    audio_ms: int
    assistant: bool
    """Assistant audio costs 1 token per 50 ms, user audio 1 per 100 ms."""
    prompt_tokens: int
    """What the LLM read in its place: the transcript's tokens."""
    prefix_tokens: int
    """Estimated prompt tokens up to the end of the item's message."""


def account_audio(usage: Usage, audio: Sequence[PromptAudio], cached_prefix: int | None = None) -> None:
    """Count the context's audio as OpenAI bills it: every audio item of the conversation is
    input audio of every response (user and assistant alike), and it is cached when the LLM's
    cached prefix reaches the end of its message. The LLM read transcripts in its place, so
    those tokens move out of the text counts (as for images)."""
    limit = usage.cached_text_tokens if cached_prefix is None else cached_prefix

    def tokens(items: Sequence[PromptAudio]) -> int:
        user = sum(a.audio_ms for a in items if not a.assistant)
        assistant = sum(a.audio_ms for a in items if a.assistant)
        return user // USER_AUDIO_MS_PER_TOKEN + assistant // ASSISTANT_AUDIO_MS_PER_TOKEN

    cached = [a for a in audio if a.prefix_tokens <= limit]
    usage.input_audio_tokens = tokens(audio)
    usage.cached_audio_tokens = tokens(cached)
    usage.input_text_tokens = max(0, usage.input_text_tokens - sum(a.prompt_tokens for a in audio))
    usage.cached_text_tokens = max(0, usage.cached_text_tokens - sum(a.prompt_tokens for a in cached))


# --------------------------------------------------------------------------- a response's prompt


def _prompt_start(
    instructions: str, tools: Sequence[Mapping[str, Any]], count_tokens: Callable[[str], int]
) -> int:
    """Estimated prompt tokens before the first context item: instructions and tools."""
    return count_tokens(instructions) + sum(count_tokens(json.dumps(tool)) for tool in tools)


def prompt_audio(
    instructions: str,
    tools: Sequence[Mapping[str, Any]],
    context_items: Sequence[Mapping[str, Any]],
    audio_ms: Callable[[str], int],
    count_tokens: Callable[[str], int],
) -> list[PromptAudio]:
    """The audio items in a response's context with where they sit in the prompt (estimated
    the way ``prompt_images`` does); ``audio_ms`` gives an item's audio length."""
    position = _prompt_start(instructions, tools, count_tokens)
    audio: list[PromptAudio] = []
    for item in context_items:
        text = item_text(item)
        shown = count_tokens(text) if text else 0
        position += shown + 6 if text else 0
        duration = audio_ms(str(item.get("id") or ""))
        role = item.get("role")
        if duration <= 0 or role not in ("user", "assistant"):
            continue
        audio.append(PromptAudio(duration, role == "assistant", shown, position))
    return audio


def prompt_images(
    instructions: str,
    tools: Sequence[Mapping[str, Any]],
    context_items: Sequence[Mapping[str, Any]],
    count_tokens: Callable[[str], int],
    *,
    llm_sees_images: bool,
) -> list[PromptImage]:
    """The images in a response's context with where they sit in the prompt (estimated)."""
    position = _prompt_start(instructions, tools, count_tokens)
    images: list[PromptImage] = []
    for item in context_items:
        text = item_text(item)
        position += count_tokens(text) + 6 if text else 0
        for part in item.get("content") or ():
            if part.get("type") != "input_image" or "_image_tokens" not in part:
                continue
            billed = int(part["_image_tokens"])
            shown = billed if llm_sees_images else count_tokens(item_text({"content": [part]}))
            images.append(PromptImage(billed, shown, position))
    return images


def estimate_prompt_tokens(
    instructions: str, context_items: Sequence[Mapping[str, Any]], count_tokens: Callable[[str], int]
) -> int:
    """Input tokens of a response cancelled before the model reported its prompt."""
    texts = [instructions] if instructions else []
    for item in context_items:
        texts.append(item_text(item) or str(item.get("arguments") or item.get("output") or ""))
    return sum(count_tokens(text) for text in texts if text)


def account_context(
    usage: Usage,
    *,
    instructions: str,
    tools: Sequence[Mapping[str, Any]],
    context_items: Sequence[Mapping[str, Any]],
    audio_ms: Callable[[str], int],
    count_tokens: Callable[[str], int],
    llm_sees_images: bool,
) -> None:
    """Usage as billed: the audio and images of a response's context move out of the text
    counts into audio and image tokens (cached as far as the LLM's cached prefix reaches)."""
    cached_prefix = usage.cached_text_tokens
    account_audio(
        usage, prompt_audio(instructions, tools, context_items, audio_ms, count_tokens), cached_prefix
    )
    images = prompt_images(instructions, tools, context_items, count_tokens, llm_sees_images=llm_sees_images)
    account_images(usage, images, cached_prefix)
