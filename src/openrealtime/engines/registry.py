"""Building the engines one process shares between all its sessions.

Every engine kind (``llm``, ``asr``, ``tts``, ``vad``, ``turn``, ``vision``) has one or more
backends: ``embedded`` (the models shipped in packages, in this process), ``remote`` (an
OpenAI-compatible endpoint) and ``ray`` (a Ray Serve deployment, engines/ray/). The settings
choose a backend per kind (``backend_for``); ``BUILDERS`` maps ``(kind, backend)`` to the
function that builds it, so a new backend is one entry here and one module beside the others.
The embedded builders take explicit arguments and are what Ray's replicas run too. Remote
speech (``asr_base_url``, ``tts_base_url``) sits in front of the engine this process would
otherwise use, which stays as its fallback (``FRONTS``).

The result is an ``EngineSet``: the engines behind their Protocols (engines/base.py) plus the
few per-engine knobs the runtime needs (threads, partial transcripts, how many requests each
engine queue keeps in flight).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ..config import Settings
from .base import VAD, LanguageModel, Synthesizer, Transcriber, TurnDetector, VisionDescriber

log = logging.getLogger("openrealtime.engines")

Kind = Literal["llm", "asr", "tts", "vad", "turn", "vision"]
Backend = Literal["embedded", "remote", "ray"]
PartialsMode = Literal["whisper", "pocketsphinx", "none"]
WarmMode = Literal["auto", "always", "never"]
"""When the caller's words are evaluated on the LLM as they are heard (``warm_while_speaking``)."""


class VoiceResolver(Protocol):
    """Maps a session's voice name to an installed synthesizer voice; with ``language`` (ISO
    639-1), one that speaks it (a stand-in of the same kind when the name's own does not)."""

    def resolve(self, name: str, language: str | None = None) -> tuple[Synthesizer, str]: ...

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
    partials: PartialsMode = "whisper"
    """How the turn is transcribed while the caller speaks (``asr_partials``)."""
    asr_language: str = "en"
    """The callers' language until one is heard (``asr_language``; ``auto``: detect)."""
    llm_threads: int = 1
    llm_batch_threads: int = 1
    """Prompt-evaluation threads the embedded LLM may use while no other engine is busy."""
    preemptive: bool = True
    """Answers may be started on partial transcripts (``preemptive``)."""
    warm_while_speaking: WarmMode = "auto"
    """The caller's words are evaluated on the LLM as they are heard (``warm_while_speaking``)."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """Requests each engine queue keeps running at once (default 1): a remote engine takes
    several (``ray_concurrency``); a batching LLM backend would too."""

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


# --------------------------------------------------------------------------- embedded builders


def embedded_llm(
    profile: str,
    *,
    threads: int = 1,
    batch_threads: int | None = None,
    context: int = 8192,
    parallel: int = 1,
    seed: int | None = None,
    model_dir: Path | None = None,
) -> LanguageModel:
    """The embedded llama.cpp model (a profile name or a GGUF path); ``parallel`` generations
    decode together."""
    from .llm.llamacpp import LlamaCppModel

    return LlamaCppModel(
        profile,
        n_threads=threads,
        n_threads_batch=batch_threads,
        n_ctx=context,
        parallel=parallel,
        seed=seed,
        model_dir=model_dir,
    )


def embedded_transcriber(asr: str, *, threads: int = 1) -> Transcriber:
    """Whisper: a bundled model name or a CTranslate2 model directory."""
    from .asr.whisper import WhisperTranscriber

    model: str | Path = Path(asr) if Path(asr).is_dir() else asr
    return WhisperTranscriber(model, cpu_threads=threads)


def embedded_synthesizers(
    *,
    piper_voices: Sequence[str | Path] = (),
    kokoro: bool = False,
    kokoro_model: str | Path | None = None,
    kokoro_voices: Sequence[str | Path] = (),
    threads: int = 1,
) -> dict[str, Synthesizer]:
    """Every installed TTS engine by name (Piper, espeak-ng, Kokoro when enabled)."""
    from .tts.voices import default_engines

    return dict(
        default_engines(
            piper_voices=[str(p) for p in piper_voices],
            kokoro=kokoro or kokoro_model is not None,
            kokoro_model=kokoro_model,
            kokoro_voices=[str(p) for p in kokoro_voices],
            onnx_threads=threads,
        )
    )


def embedded_describer(model_dir: Path | None, *, threads: int = 1) -> VisionDescriber:
    """OCR and ImageNet labels, for a text-only LLM."""
    from .vision.embedded import EmbeddedDescriber

    return EmbeddedDescriber(model_dir, threads=threads)


# --------------------------------------------------------------------------- builders by settings


def _embedded_llm(settings: Settings) -> LanguageModel:
    return embedded_llm(
        settings.llm,
        threads=settings.llm_threads,
        batch_threads=settings.llm_threads,
        context=settings.llm_context,
        parallel=settings.llm_parallel,
        seed=settings.llm_seed,
        model_dir=settings.model_dir,
    )


def _remote_llm(settings: Settings) -> LanguageModel:
    """An OpenAI-compatible endpoint, with an embedded model as its fallback when
    ``llm_fallback`` names one."""
    from .llm.openai_compatible import OpenAICompatibleModel

    assert settings.llm_base_url is not None
    remote = OpenAICompatibleModel(
        settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key, vision=settings.llm_vision
    )
    if not settings.llm_fallback:
        return remote
    from .llm.failover import FailoverLanguageModel

    fallback = embedded_llm(
        settings.llm_fallback,
        threads=settings.llm_threads,
        context=settings.llm_context,
        parallel=settings.llm_parallel,
        seed=settings.llm_seed,
        model_dir=settings.model_dir,
    )
    return FailoverLanguageModel(remote, fallback)


def _ray_llm(settings: Settings) -> LanguageModel:
    from .ray.adapters import ray_language_model

    return ray_language_model(settings)


def _embedded_asr(settings: Settings) -> Transcriber:
    return embedded_transcriber(settings.asr, threads=settings.asr_threads)


def _ray_asr(settings: Settings) -> Transcriber:
    from .ray.adapters import ray_transcriber

    return ray_transcriber(settings)


def _embedded_tts(settings: Settings) -> dict[str, Synthesizer]:
    return embedded_synthesizers(
        piper_voices=settings.piper_voices,
        kokoro=settings.kokoro,
        kokoro_model=settings.kokoro_model,
        kokoro_voices=settings.kokoro_voices,
        threads=settings.tts_threads,
    )


def _ray_tts(settings: Settings) -> dict[str, Synthesizer]:
    from .ray.adapters import ray_synthesizers_for

    return dict(ray_synthesizers_for(settings))


def _embedded_vad(settings: Settings) -> VAD:
    from .vad.silero import SileroVAD

    return SileroVAD()


def _embedded_turn(settings: Settings) -> TurnDetector:
    from .turn.smart_turn import SmartTurnDetector

    return SmartTurnDetector(intra_op_num_threads=settings.vad_threads)


def _embedded_vision(settings: Settings) -> VisionDescriber:
    describer = embedded_describer(settings.model_dir, threads=settings.vision_threads)
    check = getattr(describer, "check", None)
    if settings.warm_up and check is not None:
        # load its models beside the other warm-ups, without delaying start-up; a missing part
        # (e.g. the classifier never exported) is logged and the analysis says it is unavailable
        def report() -> None:
            for problem in check():
                log.warning("image analysis limited: %s", problem)

        threading.Thread(target=report, name="vision-warm-up", daemon=True).start()
    return describer


def _ray_vision(settings: Settings) -> VisionDescriber:
    from .ray.adapters import ray_describer

    return ray_describer(settings)


def _remote_asr(settings: Settings, fallback: Transcriber) -> Transcriber:
    from .asr.remote import FailoverTranscriber, RemoteTranscriber
    from .remote import RemoteEndpoint

    assert settings.asr_base_url is not None
    endpoint = RemoteEndpoint(
        settings.asr_base_url, settings.asr_model, settings.asr_api_key, settings.asr_timeout_seconds
    )
    log.info("transcription on %s (model %s), local fallback", endpoint.base_url, endpoint.model)
    return FailoverTranscriber(RemoteTranscriber(endpoint), fallback)


def _remote_tts(settings: Settings, fallback: VoiceResolver) -> VoiceResolver:
    from .remote import RemoteEndpoint
    from .tts.remote import RemoteSynthesizer, RemoteVoiceTable

    assert settings.tts_base_url is not None
    endpoint = RemoteEndpoint(
        settings.tts_base_url, settings.tts_model, settings.tts_api_key, settings.tts_timeout_seconds
    )
    log.info("speech on %s (model %s), local fallback", endpoint.base_url, endpoint.model)
    return RemoteVoiceTable(RemoteSynthesizer(endpoint), fallback, remote_voices=settings.tts_remote_voices)


BUILDERS: Mapping[tuple[Kind, Backend], Callable[[Settings], Any]] = {
    ("llm", "embedded"): _embedded_llm,
    ("llm", "remote"): _remote_llm,
    ("llm", "ray"): _ray_llm,
    ("asr", "embedded"): _embedded_asr,
    ("asr", "ray"): _ray_asr,
    ("tts", "embedded"): _embedded_tts,
    ("tts", "ray"): _ray_tts,
    ("vad", "embedded"): _embedded_vad,
    ("turn", "embedded"): _embedded_turn,
    ("vision", "embedded"): _embedded_vision,
    ("vision", "ray"): _ray_vision,
}
"""(kind, backend) → the function that builds that engine from the settings."""

FRONTS: Mapping[tuple[Kind, Backend], Callable[[Settings, Any], Any]] = {
    ("asr", "remote"): _remote_asr,
    ("tts", "remote"): _remote_tts,
}
"""(kind, backend) → a builder of an engine in front of another (its fallback): remote speech
with this process's (or Ray's) engine behind it, warmed up, so a failover is fast."""

RAY_KINDS: tuple[Kind, ...] = ("llm", "asr", "tts", "vision")
"""Kinds that can run on Ray (VAD and the turn detector keep per-session state on 32 ms
frames: a network hop per frame would cost more than the model)."""


_REMOTE_URLS: dict[Kind, Callable[[Settings], str | None]] = {
    "llm": lambda settings: settings.llm_base_url,
    "asr": lambda settings: settings.asr_base_url,
    "tts": lambda settings: settings.tts_base_url,
}


def backend_for(kind: Kind, settings: Settings) -> Backend:
    """Where ``kind`` runs: an OpenAI-compatible endpoint when one is set for it, Ray for the
    kinds listed in ``ray_engines``, else in this process."""
    remote_url = _REMOTE_URLS.get(kind)
    if remote_url is not None and remote_url(settings):
        return "remote"
    return local_backend_for(kind, settings)


def local_backend_for(kind: Kind, settings: Settings) -> Backend:
    """Where ``kind`` runs when no remote endpoint is in front of it."""
    return "ray" if kind in settings.ray_engines else "embedded"


def build(kind: Kind, settings: Settings) -> Any:
    """Build one engine of ``kind`` on the backend the settings choose (for a remote front,
    the engine behind it)."""
    backend = backend_for(kind, settings)
    if (kind, backend) in FRONTS:
        backend = local_backend_for(kind, settings)
    builder = BUILDERS.get((kind, backend))
    if builder is None:
        raise ValueError(f"no {backend} backend for the {kind} engine")
    return builder(settings)


def _check_ray_engines(settings: Settings) -> None:
    unknown = set(settings.ray_engines) - set(RAY_KINDS)
    if unknown:
        raise ValueError(
            f"ray_engines: unknown engine(s) {sorted(unknown)}; choose from {', '.join(RAY_KINDS)}"
        )


def build_engines(settings: Settings, *, speech: bool = True) -> EngineSet:
    """Load every engine the settings ask for (once per process)."""
    _check_ray_engines(settings)
    engines = EngineSet(
        llm=build("llm", settings),
        partials=settings.asr_partials,
        asr_language=settings.asr_language,
        llm_threads=settings.llm_threads,
        llm_batch_threads=settings.llm_batch_threads,
        preemptive=settings.preemptive,
        warm_while_speaking=settings.warm_while_speaking,
        in_flight={kind: settings.ray_concurrency for kind in RAY_KINDS if kind in settings.ray_engines},
    )
    # generations at once: the embedded model's batch, or requests kept in flight at an endpoint
    # (llama-server's slots, vLLM's scheduler batch them there)
    llm_backend = backend_for("llm", settings)
    if llm_backend == "embedded":
        engines.in_flight["llm"] = settings.llm_parallel
    elif llm_backend == "remote":
        engines.in_flight["llm"] = settings.remote_concurrency
    if speech:
        from .tts.voices import VoiceTable

        engines.vad = build("vad", settings)
        engines.turn_detector = build("turn", settings)
        engines.transcriber = build("asr", settings)
        if settings.asr_partials == "pocketsphinx":
            from .asr.pocketsphinx import PocketSphinxTranscriber

            engines.partial_transcriber = PocketSphinxTranscriber()
        synthesizers = build("tts", settings)
        engines.voices = VoiceTable(synthesizers, overrides=settings.voices or None)
        log.info(
            "speech engines ready: asr=%s (%s) tts=%s (%s)",
            settings.asr,
            local_backend_for("asr", settings),
            ", ".join(sorted(synthesizers)),
            local_backend_for("tts", settings),
        )
    if backend_for("vision", settings) == "ray":
        engines.vision = build("vision", settings)
    elif settings.llm_base_url and settings.llm_vision:
        engines.llm_vision = True  # the endpoint sees images itself: no describer
    elif settings.vision != "none":
        engines.vision = build("vision", settings)
    if settings.warm_up:
        spent = warm_up(engines)
        log.info("engines warmed up: %s", ", ".join(f"{k} {v:.2f}s" for k, v in spent.items()))
    _put_remote_fronts(engines, settings)
    return engines


def _put_remote_fronts(engines: EngineSet, settings: Settings) -> None:
    """Remote speech in front of the engines just loaded, which stay as the fallback.

    Transcription while the caller speaks: remote finals only, unless ``asr_partials`` is set
    explicitly. Local Whisper partials would spend this process's cores on every talking
    caller, which is what a remote ASR is configured to take away (and their words need not
    match the remote's final); re-transcribing the growing turn on the remote every 0.8 s
    multiplies its load by 3-6 per turn. One remote call after the end of speech costs its
    round trip instead (measured in the README's backends table).
    """
    if backend_for("asr", settings) == "remote" and engines.transcriber is not None:
        engines.transcriber = FRONTS[("asr", "remote")](settings, engines.transcriber)
        if "asr_partials" not in settings.model_fields_set:
            engines.partials = "none"
        engines.in_flight["asr"] = max(engines.in_flight.get("asr", 1), settings.remote_concurrency)
    if backend_for("tts", settings) == "remote" and engines.voices is not None:
        engines.voices = FRONTS[("tts", "remote")](settings, engines.voices)
        engines.in_flight["tts"] = max(engines.in_flight.get("tts", 1), settings.remote_concurrency)


def warm_up(engines: EngineSet) -> dict[str, float]:
    """Run each engine once so the first caller does not pay for lazy loading, and put the
    default instructions into the LLM's prompt cache. Returns seconds per engine."""
    import numpy as np

    from ..protocol.session import DEFAULT_INSTRUCTIONS
    from .base import CancelToken, ChatMessage, ChatRequest

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
        log.warning("the language model did not answer at start-up: %s", exc)
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
