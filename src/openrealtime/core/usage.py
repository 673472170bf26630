"""Usage per response, counted the way the real service bills it (spec §9.3).

User audio costs 1 token per 100 ms, assistant audio 1 token per 50 ms (generated, played or
not); text tokens come from the language model's own tokenizer and prompt cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

USER_AUDIO_MS_PER_TOKEN = 100
ASSISTANT_AUDIO_MS_PER_TOKEN = 50


@dataclass
class Usage:
    input_text_tokens: int = 0
    cached_text_tokens: int = 0
    input_audio_ms: int = 0
    input_image_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_ms: int = 0

    def wire(self) -> dict[str, Any]:
        input_audio = self.input_audio_ms // USER_AUDIO_MS_PER_TOKEN
        output_audio = self.output_audio_ms // ASSISTANT_AUDIO_MS_PER_TOKEN
        input_total = self.input_text_tokens + input_audio + self.input_image_tokens
        output_total = self.output_text_tokens + output_audio
        cached = min(self.cached_text_tokens, self.input_text_tokens)
        return {
            "total_tokens": input_total + output_total,
            "input_tokens": input_total,
            "output_tokens": output_total,
            "input_token_details": {
                "text_tokens": self.input_text_tokens,
                "audio_tokens": input_audio,
                "image_tokens": self.input_image_tokens,
                "cached_tokens": cached,
                "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": self.output_text_tokens, "audio_tokens": output_audio},
        }
