"""What a token costs: the price table (US dollars per 1M tokens) and the cost of a record.

The defaults are OpenAI's public list prices for ``gpt-realtime`` (openai.com/api/pricing, as
published at the GA launch of 2025-08-28); for transcription (input audio of sessions and
``/v1/audio/transcriptions``), ``gpt-4o-transcribe``'s (same page); for ``/v1/audio/speech``,
``gpt-4o-mini-tts``'s: $0.60 per 1M text tokens in and $12 per 1M audio tokens out, the audio
counted at 1 token per 50 ms (the rule of a session's assistant audio, which matches OpenAI's
published estimate of $0.015 per minute). Override any entry with ``OPENREALTIME_PRICES`` (a
JSON object, or the path of a JSON/TOML file holding one), e.g. ``{"audio_output": 20}``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..storage.base import UsageRecord

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class PriceTable:
    """US dollars per 1M tokens, by token type."""

    # gpt-realtime (responses)
    text_input: float = 4.00
    cached_text_input: float = 0.40
    text_output: float = 16.00
    audio_input: float = 32.00
    cached_audio_input: float = 0.40
    audio_output: float = 64.00
    image_input: float = 5.00
    cached_image_input: float = 0.50
    # gpt-4o-transcribe (input audio transcription, billed on its own)
    transcription_text_input: float = 2.50
    transcription_audio_input: float = 6.00
    transcription_text_output: float = 10.00
    # gpt-4o-mini-tts (the speech endpoint)
    speech_text_input: float = 0.60
    speech_audio_output: float = 12.00

    @classmethod
    def with_overrides(cls, overrides: dict[str, Any]) -> PriceTable:
        """The defaults with ``overrides`` applied; unknown names or bad values raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown price {unknown[0]!r}; known: {', '.join(sorted(known))}")
        values: dict[str, float] = {}
        for name, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"price {name!r} must be a non-negative number of USD per 1M tokens")
            values[name] = float(value)
        return replace(cls(), **values)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def cost(self, record: UsageRecord) -> float:
        """US dollars for ``record`` (its own ``cost_usd`` is ignored)."""
        if record.kind == "transcription":
            dollars = (
                record.input_text_tokens * self.transcription_text_input
                + record.input_audio_tokens * self.transcription_audio_input
                + record.output_text_tokens * self.transcription_text_output
            )
        elif record.kind == "speech":
            dollars = (
                record.input_text_tokens * self.speech_text_input
                + record.output_audio_tokens * self.speech_audio_output
            )
        else:
            dollars = (
                (record.input_text_tokens - record.cached_text_tokens) * self.text_input
                + record.cached_text_tokens * self.cached_text_input
                + (record.input_audio_tokens - record.cached_audio_tokens) * self.audio_input
                + record.cached_audio_tokens * self.cached_audio_input
                + (record.input_image_tokens - record.cached_image_tokens) * self.image_input
                + record.cached_image_tokens * self.cached_image_input
                + record.output_text_tokens * self.text_output
                + record.output_audio_tokens * self.audio_output
            )
        return dollars / PER_TOKENS


def load_prices(setting: dict[str, Any] | str | None) -> PriceTable:
    """The table from a setting: a mapping, a JSON object text, or a JSON/TOML file path."""
    if setting is None or setting == "" or setting == {}:
        return PriceTable()
    if isinstance(setting, dict):
        return PriceTable.with_overrides(setting)
    text = setting.strip()
    if text.startswith("{"):
        loaded: Any = json.loads(text)
    else:
        path = Path(text).expanduser()
        raw = path.read_text()
        loaded = tomllib.loads(raw) if path.suffix == ".toml" else json.loads(raw)
    if not isinstance(loaded, dict):
        raise ValueError("the price table must be a JSON/TOML object of name -> USD per 1M tokens")
    return PriceTable.with_overrides(loaded)
