"""Ray Serve deployments that host the embedded engines on a Ray cluster.

Each engine is its own Serve application (``<app>-llm``, ``<app>-asr``, ``<app>-tts``,
``<app>-vision``) so one can be redeployed or scaled without touching the others. Replicas
declare their CPU (and optional GPU) share through ``ray_actor_options`` and autoscale on
ongoing requests per replica (``target_ongoing_requests``). Only deployment handles reach
them (the HTTP proxy is disabled): the gateway's adapters in ``adapters.py`` call them.

The engines are synchronous and take a ``CancelToken``; here they run on a worker thread per
request and stream through an asyncio queue, so when Serve cancels a request (the caller
cancelled, or went away) the token is set and the engine stops at its next check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ray import serve
from ray.serve.deployment import Application

from openrealtime.engines.base import CancelToken, ChatRequest, ImageAnalysis, LLMEvent, PcmAudio, VoiceInfo
from openrealtime.engines.registry import RAY_KINDS

ENGINES: tuple[str, ...] = RAY_KINDS
"""Engines that can run on Ray (see ``engines.registry.RAY_KINDS``)."""

_DONE = object()


@dataclass(frozen=True)
class ReplicaResources:
    """What each replica of one engine asks Ray for, and how far it may scale."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 1.0
    max_ongoing_requests: int = 8
    upscale_delay_s: float | None = None
    """How long the load must stay above target before a replica is added (Serve's default
    when None)."""

    def deployment_options(self) -> dict[str, Any]:
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        return {
            "ray_actor_options": actor,
            "max_ongoing_requests": self.max_ongoing_requests,
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": self.min_replicas,
                "max_replicas": max(self.min_replicas, self.max_replicas),
                "target_ongoing_requests": self.target_ongoing_requests,
                **({"upscale_delay_s": self.upscale_delay_s} if self.upscale_delay_s is not None else {}),
            },
        }


@dataclass(frozen=True)
class EngineOptions:
    """The engine settings a replica needs to build its engine (a picklable subset of
    ``Settings``, taken from the machine that runs ``openrealtime engines up``)."""

    llm: str = "qwen2.5-0.5b"
    llm_threads: int = 1
    llm_context: int = 8192
    llm_parallel: int = 8
    llm_seed: int | None = None
    asr: str = "whisper-base"
    asr_threads: int = 1
    tts_threads: int = 1
    piper_voices: tuple[str, ...] = ()
    kokoro: bool = False
    kokoro_model: str | None = None
    kokoro_voices: tuple[str, ...] = ()
    vision_threads: int = 1
    model_dir: str | None = None
    resources: dict[str, ReplicaResources] = field(default_factory=dict)

    def resources_for(self, engine: str) -> ReplicaResources:
        return self.resources.get(engine, ReplicaResources())


def _model_dir(options: EngineOptions) -> Any:
    from pathlib import Path

    return Path(options.model_dir) if options.model_dir else None


async def _stream_from_thread(produce: Callable[[CancelToken], Iterator[Any]]) -> AsyncIterator[list[Any]]:
    """Run a blocking engine stream on a thread and yield its items in lists: one item as soon
    as it exists, or everything that queued up meanwhile (each streamed message costs a few
    milliseconds of CPU, so a slow consumer gets fewer, bigger messages). When this generator
    is closed or cancelled (Serve cancels the request) the engine's token is set."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    token = CancelToken()

    def run() -> None:
        try:
            for item in produce(token):
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if token.cancelled:
                    break
        except BaseException as exc:  # handed to the async side, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    threading.Thread(target=run, name="serve-engine-stream", daemon=True).start()
    try:
        finished = False
        while not finished:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            if items[-1] is _DONE:
                finished = True
                items.pop()
            failed = next((i for i, item in enumerate(items) if isinstance(item, BaseException)), None)
            good = items if failed is None else items[:failed]
            if good:
                yield good
            if failed is not None:
                raise items[failed]
    finally:
        token.cancel()


class LLMDeployment:
    """The embedded llama.cpp model; up to ``llm_parallel`` generations per replica decode
    together (``engines/llm/batching.py``), more wait for a free sequence. A replica that dies
    fails only the generations it had in flight; Serve starts another."""

    def __init__(self, options: EngineOptions) -> None:
        from openrealtime.engines.llm.llamacpp import LlamaCppModel
        from openrealtime.engines.registry import embedded_llm

        model = embedded_llm(
            options.llm,
            threads=options.llm_threads,
            batch_threads=options.llm_threads,
            context=options.llm_context,
            parallel=options.llm_parallel,
            seed=options.llm_seed,
            model_dir=_model_dir(options),
        )
        assert isinstance(model, LlamaCppModel)
        self.model = model

    def info(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "model_path": str(self.model.model_path),
            "supports_tools": self.model.supports_tools,
            "n_ctx": self.model.n_ctx,
        }

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    async def generate(self, request: ChatRequest) -> AsyncIterator[list[LLMEvent]]:
        async for events in _stream_from_thread(lambda token: self.model.generate(request, token)):
            yield events


@dataclass(frozen=True)
class TranscriptionJob:
    audio: Any
    language: str | None
    prompt: str | None
    prefix: str | None


class ASRDeployment:
    """Whisper. Requests from many sessions are grouped with ``@serve.batch``: one thread hop
    per group, run back to back, so concurrent sessions never oversubscribe the replica's
    CTranslate2 threads and the queue the autoscaler sees is the real backlog."""

    def __init__(self, options: EngineOptions) -> None:
        from openrealtime.engines.asr.whisper import WhisperTranscriber
        from openrealtime.engines.registry import embedded_transcriber

        model = embedded_transcriber(options.asr, threads=options.asr_threads)
        assert isinstance(model, WhisperTranscriber)
        self.model = model

    def info(self) -> dict[str, Any]:
        return {"name": self.model.name, "sample_rate": self.model.sample_rate}

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def _run_jobs(self, jobs: list[TranscriptionJob]) -> list[Any]:
        results: list[Any] = []
        for job in jobs:
            try:
                results.append(
                    self.model.transcribe_segments(
                        job.audio, language=job.language, prompt=job.prompt, prefix=job.prefix
                    )
                )
            except Exception as exc:  # one bad clip must not fail the others in its batch
                results.append(exc)
        return results

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _transcribe_batch(self, jobs: list[TranscriptionJob]) -> list[Any]:
        return await asyncio.to_thread(self._run_jobs, jobs)

    async def transcribe(
        self, audio: Any, language: str | None, prompt: str | None, prefix: str | None
    ) -> Any:
        result = await self._transcribe_batch(TranscriptionJob(audio, language, prompt, prefix))
        if isinstance(result, Exception):
            raise result
        return result


class TTSDeployment:
    """The installed TTS engines (Piper, optional Kokoro, espeak-ng), streamed chunk by chunk."""

    def __init__(self, options: EngineOptions) -> None:
        from openrealtime.engines.registry import embedded_synthesizers

        self.engines = embedded_synthesizers(
            piper_voices=options.piper_voices,
            kokoro=options.kokoro,
            kokoro_model=options.kokoro_model,
            kokoro_voices=options.kokoro_voices,
            threads=options.tts_threads,
        )

    def info(self) -> dict[str, dict[str, Any]]:
        """Each engine's sample rate, voices and whether it takes a pitch."""
        return {
            name: {
                "sample_rate": engine.sample_rate,
                "voices": engine.voices(),
                "supports_pitch": bool(getattr(engine, "supports_pitch", False)),
            }
            for name, engine in self.engines.items()
        }

    def has_voice(self, engine: str, voice: str) -> bool:
        synthesizer: Any = self.engines.get(engine)
        if synthesizer is None:
            return False
        check = getattr(synthesizer, "has_voice", None)
        if callable(check):
            return bool(check(voice))
        return any(v.id == voice for v in synthesizer.voices())

    async def synthesize(
        self, engine: str, text: str, voice: str, speed: float, pitch: int | None
    ) -> AsyncIterator[list[PcmAudio]]:
        synthesizer: Any = self.engines[engine]

        def produce(token: CancelToken) -> Iterator[PcmAudio]:
            if pitch is not None:
                return iter(synthesizer.synthesize(text, voice=voice, speed=speed, cancel=token, pitch=pitch))
            return iter(synthesizer.synthesize(text, voice=voice, speed=speed, cancel=token))

        async for chunks in _stream_from_thread(produce):
            yield chunks


class VisionDeployment:
    """The embedded image describer (OCR + ImageNet labels)."""

    def __init__(self, options: EngineOptions) -> None:
        from openrealtime.engines.registry import embedded_describer
        from openrealtime.engines.vision.embedded import EmbeddedDescriber

        model = embedded_describer(_model_dir(options), threads=options.vision_threads)
        assert isinstance(model, EmbeddedDescriber)
        self.model = model

    def info(self) -> dict[str, Any]:
        return {"name": self.model.name, "problems": list(self.model.check())}

    async def describe(
        self, image: bytes, question_hint: str | None, detail: Literal["auto", "low", "high"]
    ) -> ImageAnalysis:
        return await asyncio.to_thread(self.model.describe, image, question_hint=question_hint, detail=detail)


_CLASSES: dict[str, type] = {
    "llm": LLMDeployment,
    "asr": ASRDeployment,
    "tts": TTSDeployment,
    "vision": VisionDeployment,
}
DEPLOYMENT_NAMES: dict[str, str] = {engine: cls.__name__ for engine, cls in _CLASSES.items()}


def app_name(prefix: str, engine: str) -> str:
    """The Serve application that hosts ``engine``."""
    return f"{prefix}-{engine}"


def build_application(engine: str, options: EngineOptions) -> Application:
    """A bound Serve application for one engine with its resources and autoscaling."""
    deployment: Any = serve.deployment(_CLASSES[engine], name=DEPLOYMENT_NAMES[engine])
    bound: Application = deployment.options(**options.resources_for(engine).deployment_options()).bind(
        options
    )
    return bound


def voices_from_info(info: dict[str, Any]) -> list[VoiceInfo]:
    return [v if isinstance(v, VoiceInfo) else VoiceInfo(**v) for v in info["voices"]]
