"""The engines one server process shares between all its sessions."""

from __future__ import annotations

import logging
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
        settings.llm,
        n_threads=settings.llm_threads,
        n_threads_batch=settings.llm_threads,
        n_ctx=settings.llm_context,
        model_dir=settings.model_dir,
    )


def build_engines(settings: Settings, *, speech: bool = True) -> EngineSet:
    """Load every engine the settings ask for (once per process)."""
    engines = EngineSet(llm=build_language_model(settings))
    engines.extra["llm_threads"] = settings.llm_threads
    engines.extra["llm_batch_threads"] = settings.llm_batch_threads
    if speech:
        from .speech import load_speech_engines

        load_speech_engines(engines, settings)
    if settings.warm_up:
        spent = warm_up(engines)
        logging.getLogger("openrealtime.engines").info(
            "engines warmed up: %s", ", ".join(f"{k} {v:.2f}s" for k, v in spent.items())
        )
    return engines


def warm_up(engines: EngineSet) -> dict[str, float]:
    """Run each engine once so the first caller does not pay for lazy loading, and put the
    default instructions into the LLM's prompt cache. Returns seconds per engine."""
    import time

    import numpy as np

    from ..engines.base import CancelToken, ChatMessage, ChatRequest
    from ..protocol.session import DEFAULT_INSTRUCTIONS

    spent: dict[str, float] = {}
    start = time.monotonic()
    request = ChatRequest(
        messages=(
            ChatMessage(role="system", content=DEFAULT_INSTRUCTIONS),
            ChatMessage(role="user", content="Hello."),
        ),
        max_output_tokens=1,
    )
    for _ in engines.llm.generate(request, CancelToken()):
        pass
    spent["llm"] = time.monotonic() - start
    if engines.transcriber is not None:
        start = time.monotonic()
        engines.transcriber.transcribe(np.zeros(engines.transcriber.sample_rate, dtype=np.float32))
        spent["asr"] = time.monotonic() - start
    if engines.voices is not None:
        start = time.monotonic()
        for name in ("marin", "alloy"):
            synthesizer, voice = engines.voices.resolve(name)
            for _chunk in synthesizer.synthesize("Hello.", voice=voice):
                pass
        spent["tts"] = time.monotonic() - start
    if engines.turn_detector is not None:
        start = time.monotonic()
        engines.turn_detector.end_of_turn_probability(np.zeros(16_000, dtype=np.float32))
        spent["turn"] = time.monotonic() - start
    return spent
