"""Server configuration: environment variables ``OPENREALTIME_*``, a TOML file, CLI flags.

Precedence: CLI flags > environment > TOML file (``OPENREALTIME_CONFIG``) > defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openrealtime"


class Settings(BaseSettings):
    """Every knob of the server. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="OPENREALTIME_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default_factory=_default_data_dir)
    model_dir: Path | None = None
    """Where assembled model files are cached (default ``~/.cache/openrealtime/models``)."""
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated API keys; when empty a key is generated once into the data dir."""
    log_level: str = "info"
    warm_up: bool = True
    """Run every engine once at start-up (and prime the LLM's prompt cache)."""

    # language model
    llm: str = "qwen2.5-0.5b"
    """Embedded profile (``qwen2.5-0.5b``, ``qwen2.5-1.5b``, ``smollm2-135m``) or a GGUF path."""
    llm_base_url: str | None = None
    """An OpenAI-compatible Chat Completions endpoint; when set it replaces the embedded LLM."""
    llm_model: str = "default"
    llm_api_key: str | None = None
    llm_threads: int = 1
    llm_batch_threads: int = 1
    """Threads for prompt evaluation when no other engine is busy (decode stays on
    ``llm_threads``; with other work queued, prompt evaluation uses ``llm_threads`` too).
    2 halves the cached first token for a single caller on 2 idle cores, but worsened p95
    with two callers at once (bench/voice_latency.py), so the default is 1."""
    llm_context: int = 8192

    # speech
    asr: str = "whisper-base"
    """``whisper-base``, ``whisper-tiny.en`` or a CTranslate2 Whisper model directory."""
    asr_partials: Literal["whisper", "pocketsphinx", "none"] = "whisper"
    """How the turn is transcribed while the caller speaks: Whisper re-passes (default),
    PocketSphinx true streaming partials, or not at all (transcribe after the turn)."""
    asr_threads: int = 1
    tts_threads: int = 1
    voices: dict[str, str] = Field(default_factory=dict)
    """Overrides of the voice table: ``{"marin": "piper:en_US-joe-medium", ...}``."""
    piper_voices: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Extra Piper voice files (``.onnx`` with ``.onnx.json`` beside them)."""
    vad_threads: int = 1
    kokoro: bool = False
    """Load the Kokoro voices (natural, but slower than real time on 2 busy cores)."""
    kokoro_model: Path | None = None
    """A user-supplied Kokoro ONNX model (default: the embedded int8 model)."""
    kokoro_voices: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """User-supplied Kokoro voice files (``.npz`` / ``.bin``)."""

    # limits
    max_session_minutes: int = 60
    max_message_bytes: int = 24 * 1024 * 1024
    max_input_buffer_seconds: int = 15 * 60

    @field_validator("api_keys", "piper_voices", "kokoro_voices", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the TOML file named by ``OPENREALTIME_CONFIG``, env and overrides."""
        file_values: dict[str, Any] = {}
        path = os.environ.get("OPENREALTIME_CONFIG")
        if path:
            with open(path, "rb") as handle:
                file_values = tomllib.load(handle)
        env_names = {name for name in cls.model_fields if f"OPENREALTIME_{name.upper()}" in os.environ}
        merged = {k: v for k, v in file_values.items() if k not in env_names}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**merged)
