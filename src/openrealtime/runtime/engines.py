"""The engines one server process shares between all its sessions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import Settings
from ..engines.base import VAD, LanguageModel, Synthesizer, Transcriber, TurnDetector, VisionDescriber


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
    vision: VisionDescriber | None = None
    """Describes images for a text-only LLM (None: the LLM only hears that one was shared)."""
    llm_vision: bool = False
    """The LLM takes images itself (a vision endpoint); no describer runs."""
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
    """The configured LLM: an OpenAI-compatible endpoint if set (with the embedded model as a
    fallback when ``llm_fallback`` names one), else embedded llama.cpp."""
    from ..engines.llm.llamacpp import LlamaCppModel

    if settings.llm_base_url:
        from ..engines.llm.openai_compatible import OpenAICompatibleModel

        remote = OpenAICompatibleModel(
            settings.llm_base_url,
            settings.llm_model,
            api_key=settings.llm_api_key,
            vision=settings.llm_vision,
        )
        if not settings.llm_fallback:
            return remote
        from ..engines.llm.failover import FailoverLanguageModel

        embedded = LlamaCppModel(
            settings.llm_fallback,
            n_threads=settings.llm_threads,
            n_ctx=settings.llm_context,
            seed=settings.llm_seed,
            model_dir=settings.model_dir,
        )
        return FailoverLanguageModel(remote, embedded)
    return LlamaCppModel(
        settings.llm,
        n_threads=settings.llm_threads,
        n_threads_batch=settings.llm_threads,
        n_ctx=settings.llm_context,
        seed=settings.llm_seed,
        model_dir=settings.model_dir,
    )


def build_engines(settings: Settings, *, speech: bool = True) -> EngineSet:
    """Load every engine the settings ask for (once per process)."""
    if settings.ray_engines:
        return _build_with_ray(settings, speech=speech)
    engines = EngineSet(llm=build_language_model(settings))
    engines.extra["llm_threads"] = settings.llm_threads
    engines.extra["llm_batch_threads"] = settings.llm_batch_threads
    engines.extra["asr_language"] = settings.asr_language
    engines.extra["mcp_allowed_hosts"] = list(settings.mcp_allowed_hosts)
    engines.extra["mcp_timeout_s"] = settings.mcp_timeout_seconds
    if speech:
        from .speech import load_speech_engines

        load_speech_engines(engines, settings)
    load_vision(engines, settings)
    if settings.warm_up:
        spent = warm_up(engines)
        logging.getLogger("openrealtime.engines").info(
            "engines warmed up: %s", ", ".join(f"{k} {v:.2f}s" for k, v in spent.items())
        )
    use_remote_speech(engines, settings)
    return engines


def _build_with_ray(settings: Settings, *, speech: bool) -> EngineSet:
    """Engines listed in ``ray_engines`` are called on Ray Serve; the others load here."""
    from ..engines.ray.adapters import load_ray_engines, ray_language_model

    remote_llm = "llm" in settings.ray_engines
    engines = EngineSet(llm=ray_language_model(settings) if remote_llm else build_language_model(settings))
    load_ray_engines(engines, settings, speech=speech)
    engines.extra["llm_threads"] = settings.llm_threads
    engines.extra["llm_batch_threads"] = settings.llm_batch_threads
    engines.extra["asr_language"] = settings.asr_language
    engines.extra["mcp_allowed_hosts"] = list(settings.mcp_allowed_hosts)
    engines.extra["mcp_timeout_s"] = settings.mcp_timeout_seconds
    engines.extra["scheduler_workers"] = {
        f"{engine}_workers": settings.ray_concurrency
        for engine in ("llm", "asr", "tts")
        if engine in settings.ray_engines
    }
    if "vision" not in settings.ray_engines:
        load_vision(engines, settings)
    if settings.warm_up:
        spent = warm_up(engines)
        logging.getLogger("openrealtime.engines").info(
            "engines warmed up: %s", ", ".join(f"{k} {v:.2f}s" for k, v in spent.items())
        )
    use_remote_speech(engines, settings)
    return engines


def use_remote_speech(engines: EngineSet, settings: Settings) -> None:
    """Put the remote audio endpoints (``ASR_BASE_URL``, ``TTS_BASE_URL``) in front of the
    loaded speech engines, which stay as the fallback (warmed up, so a failover is fast).

    Transcription while the caller speaks: remote finals only, unless ``ASR_PARTIALS`` is set
    explicitly. Local Whisper partials would spend this process's cores on every talking
    caller, which is what a remote ASR is configured to take away (and their words need not
    match the remote's final); re-transcribing the growing turn on the remote every 0.8 s
    multiplies its load by 3-6 per turn. One remote call after the end of speech costs its
    round trip instead (measured in the README's backends table). ``ASR_PARTIALS=whisper``
    sends those passes to the remote anyway (live deltas, final ready at end of speech);
    ``pocketsphinx`` streams cheap local partials and still takes the final from the remote.
    """
    from ..engines.remote import RemoteEndpoint

    log = logging.getLogger("openrealtime.engines")
    workers: dict[str, int] = dict(engines.extra.get("scheduler_workers", {}))
    if settings.asr_base_url and engines.transcriber is not None:
        from ..engines.asr.remote import FailoverTranscriber, RemoteTranscriber

        endpoint = RemoteEndpoint(
            settings.asr_base_url, settings.asr_model, settings.asr_api_key, settings.asr_timeout_seconds
        )
        engines.transcriber = FailoverTranscriber(RemoteTranscriber(endpoint), engines.transcriber)
        if "asr_partials" not in settings.model_fields_set:
            engines.extra["asr_partials"] = "none"
        workers["asr_workers"] = max(workers.get("asr_workers", 1), settings.remote_concurrency)
        log.info("transcription on %s (model %s), local fallback", endpoint.base_url, endpoint.model)
    if settings.tts_base_url and engines.voices is not None:
        from ..engines.tts.remote import RemoteSynthesizer, RemoteVoiceTable

        endpoint = RemoteEndpoint(
            settings.tts_base_url, settings.tts_model, settings.tts_api_key, settings.tts_timeout_seconds
        )
        engines.voices = RemoteVoiceTable(
            RemoteSynthesizer(endpoint), engines.voices, remote_voices=settings.tts_remote_voices
        )
        workers["tts_workers"] = max(workers.get("tts_workers", 1), settings.remote_concurrency)
        log.info("speech on %s (model %s), local fallback", endpoint.base_url, endpoint.model)
    if workers:
        engines.extra["scheduler_workers"] = workers


def load_vision(engines: EngineSet, settings: Settings) -> None:
    """The image describer; a missing part (e.g. the classifier never exported) is logged and
    the analysis says it is unavailable, instead of refusing to start."""
    engines.llm_vision = bool(settings.llm_base_url) and settings.llm_vision
    if engines.llm_vision or settings.vision == "none":
        return
    from ..engines.vision.embedded import EmbeddedDescriber

    describer = EmbeddedDescriber(settings.model_dir, threads=settings.vision_threads)
    engines.vision = describer
    if settings.warm_up:  # load its models beside the other warm-ups, without delaying start-up
        import threading

        def check() -> None:
            for problem in describer.check():
                logging.getLogger("openrealtime.engines").warning("image analysis limited: %s", problem)

        threading.Thread(target=check, name="vision-warm-up", daemon=True).start()


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
    try:
        for _ in engines.llm.generate(request, CancelToken()):
            pass
    except Exception as exc:  # a remote endpoint may come up later; turns apologise meanwhile
        logging.getLogger("openrealtime.engines").warning(
            "the language model did not answer at start-up: %s", exc
        )
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
