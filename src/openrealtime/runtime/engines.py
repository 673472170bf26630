"""The engines one server process shares between all its sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import Settings
from ..engines.base import VAD, LanguageModel, Synthesizer, Transcriber, TurnDetector


class VoiceResolver(Protocol):
    """Maps a session's voice name to an installed synthesizer voice."""

    def resolve(self, name: str) -> tuple[Synthesizer, str]: ...

    def describe(self) -> list[dict[str, Any]]: ...


@dataclass
class EngineSet:
    """Everything a session runtime needs; speech engines are optional for text-only use."""

    llm: LanguageModel
    transcriber: Transcriber | None = None
    partial_transcriber: Transcriber | None = None
    vad: VAD | None = None
    turn_detector: TurnDetector | None = None
    voices: VoiceResolver | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def voice_problem(self, name: str) -> str | None:
        """Why ``name`` cannot be spoken with, or None when it can."""
        if self.voices is None:
            return None
        try:
            self.voices.resolve(name)
        except (KeyError, ValueError) as exc:
            return str(
                getattr(exc, "message", None) or (exc.args[0] if exc.args else f"Unknown voice '{name}'.")
            )
        return None


def build_language_model(settings: Settings) -> LanguageModel:
    """The configured LLM: an OpenAI-compatible endpoint if set, else embedded llama.cpp."""
    if settings.llm_base_url:
        from ..engines.llm.openai_compatible import OpenAICompatibleModel

        return OpenAICompatibleModel(settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key)
    from ..engines.llm.llamacpp import LlamaCppModel

    return LlamaCppModel(
        settings.llm, n_threads=settings.llm_threads, n_ctx=settings.llm_context, model_dir=settings.model_dir
    )


def build_engines(settings: Settings, *, speech: bool = True) -> EngineSet:
    """Load every engine the settings ask for (once per process)."""
    engines = EngineSet(llm=build_language_model(settings))
    if speech:
        from .speech import load_speech_engines

        load_speech_engines(engines, settings)
    return engines
