"""Engine Protocol implementations that call the Ray Serve deployments.

The runtime calls engines on its scheduler's worker threads, never on the event loop, so
these adapters use Serve handles synchronously: ``DeploymentResponse.result()`` for one-shot
calls and plain iteration over the ``DeploymentResponseGenerator`` of a streaming handle
(``handle.options(stream=True)``) for LLM tokens and TTS audio. A watcher thread cancels the
Serve request as soon as the session's ``CancelToken`` is set, also while the caller is blocked
waiting for the next item; the replica then sets the engine's own token.

A replica that dies (or any other Ray failure) surfaces as :class:`RayEngineError`, which the
runtime turns into a failed response; Serve starts a replacement replica and later calls go to
it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from openrealtime.engines.base import (
    CancelToken,
    ChatRequest,
    FloatAudio,
    GenerationDone,
    ImageAnalysis,
    LLMEvent,
    PcmAudio,
    Transcript,
    VoiceInfo,
)
from openrealtime.engines.ray.deployments import DEPLOYMENT_NAMES, app_name, voices_from_info

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from openrealtime.config import Settings
    from openrealtime.engines.asr.whisper import SegmentedTranscript

__all__ = [
    "RayEngineError",
    "RayLanguageModel",
    "RaySynthesizer",
    "RayTranscriber",
    "RayVisionDescriber",
    "connect",
    "ray_describer",
    "ray_language_model",
    "ray_synthesizers_for",
    "ray_transcriber",
]

log = logging.getLogger("openrealtime.engines.ray")

_CANCEL_POLL_S = 0.02
_INFO_TIMEOUT_S = 120.0


class RayEngineError(RuntimeError):
    """A call to an engine on Ray failed (replica died, deployment missing, engine error)."""


def connect(address: str, *, namespace: str = "openrealtime") -> None:
    """Join the Ray cluster at ``address`` (``auto`` or the GCS ``HOST:PORT``)
    as a driver, once per process."""
    import ray

    if ray.is_initialized():
        return
    _check_reachable(address)
    ray.init(
        address=address,
        namespace=namespace,
        ignore_reinit_error=True,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a GCS address nothing listens at (Ray itself keeps retrying for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster reachable at {address}: {exc}") from exc


def _handle(prefix: str, engine: str) -> Any:
    from ray import serve

    return serve.get_deployment_handle(DEPLOYMENT_NAMES[engine], app_name=app_name(prefix, engine))


@contextlib.contextmanager
def _cancel_watch(response: Any, cancel: CancelToken | None) -> Iterator[None]:
    """Cancel the Serve request as soon as ``cancel`` is set."""
    if cancel is None:
        yield
        return
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(_CANCEL_POLL_S):
            if cancel.cancelled:
                with contextlib.suppress(Exception):
                    response.cancel()
                return

    watcher = threading.Thread(target=watch, name="ray-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()


def _is_cancellation(exc: BaseException) -> bool:
    from ray.exceptions import TaskCancelledError
    from ray.serve.exceptions import RequestCancelledError

    return isinstance(exc, RequestCancelledError | TaskCancelledError)


def _replica_lost(exc: BaseException | None) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    return isinstance(exc, ActorDiedError | ActorUnavailableError)


def _off_loop(call: Callable[[], Any]) -> Any:
    """``call()`` here, or on a short-lived thread when this thread runs an event loop (start-up
    builds and warms the engines inside the server's lifespan; Serve's blocking calls refuse
    to run on an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ray-call") as pool:
        return pool.submit(call).result()


def _stream(response: Any, cancel: CancelToken | None, what: str) -> Iterator[Any]:
    """Items of a streaming Serve response whose messages are lists of items; stops quietly
    once cancelled, any Ray failure becomes ``RayEngineError``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        yield from _stream_here(response, cancel, what)
        return
    yield from _off_loop(lambda: list(_stream_here(response, cancel, what)))


def _stream_here(response: Any, cancel: CancelToken | None, what: str) -> Iterator[Any]:
    with _cancel_watch(response, cancel):
        iterator = iter(response)
        while True:
            try:
                items = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                if (cancel is not None and cancel.cancelled) or _is_cancellation(exc):
                    return
                raise RayEngineError(f"{what} on Ray failed: {type(exc).__name__}: {exc}") from exc
            yield from items
            if cancel is not None and cancel.cancelled:
                with contextlib.suppress(Exception):
                    response.cancel()
                return


def _result(response: Any, cancel: CancelToken | None, what: str, timeout_s: float | None = None) -> Any:
    return _off_loop(lambda: _result_here(response, cancel, what, timeout_s))


def _result_here(response: Any, cancel: CancelToken | None, what: str, timeout_s: float | None) -> Any:
    with _cancel_watch(response, cancel):
        try:
            return response.result(timeout_s=timeout_s)
        except Exception as exc:
            if (cancel is not None and cancel.cancelled) or _is_cancellation(exc):
                raise
            raise RayEngineError(f"{what} on Ray failed: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- language model


def _local_counter(model_path: str, profile: str, model_dir: Path | None) -> Callable[[str], int] | None:
    """The model's own tokenizer loaded here without weights (``vocab_only``), so counting
    tokens (done on the event loop for every item) needs no round trip: the file the replica
    reports when it is visible here, else the same embedded profile assembled locally."""
    candidates: list[Path] = [Path(model_path)]
    try:
        from openrealtime.engines import assets
        from openrealtime.engines.llm.llamacpp import PROFILES

        known = PROFILES.get(profile)
        if known is not None:
            candidates.append(assets.resolve(known.asset, model_dir))
    except Exception as exc:  # the gateway may not have the model: fall back to the replica
        log.debug("no local copy of %s: %s", profile, exc)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            from llama_cpp import Llama

            vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
        except Exception as exc:
            log.warning("could not load the tokenizer of %s: %s", path, exc)
            continue

        def count(text: str, vocab: Any = vocab) -> int:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

        return count
    return None


class RayLanguageModel:
    """A ``LanguageModel`` whose generations run on the ``<app>-llm`` deployment."""

    def __init__(self, handle: Any, *, model_dir: Path | None = None, local_tokenizer: bool = True) -> None:
        self._handle = handle
        self._stream_handle = handle.options(stream=True)
        info: dict[str, Any] = _result(handle.info.remote(), None, "llm info", _INFO_TIMEOUT_S)
        self.name: str = info["name"]
        self.supports_tools: bool = bool(info.get("supports_tools", True))
        self.n_ctx: int = int(info.get("n_ctx", 0))
        counter = (
            _local_counter(info.get("model_path", ""), self.name, model_dir) if local_tokenizer else None
        )
        self.local_tokenizer = counter is not None
        self._count = counter or functools.lru_cache(maxsize=4096)(self._remote_count)

    def _remote_count(self, text: str) -> int:
        return int(_result(self._handle.count_tokens.remote(text), None, "llm count_tokens"))

    def count_tokens(self, text: str) -> int:
        return self._count(text) if text else 0

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        done = False
        produced = False
        for attempt in range(2):
            try:
                for event in _stream(
                    self._stream_handle.generate.remote(request), cancel, "the language model"
                ):
                    produced = True
                    done = done or isinstance(event, GenerationDone)
                    yield event
                break
            except RayEngineError as exc:
                # a replica that died before its first token is retried once on another one
                if produced or attempt or not _replica_lost(exc.__cause__):
                    raise
                log.warning("llm replica lost before its first token, retrying: %s", exc)
        if not done:
            if not cancel.cancelled:
                raise RayEngineError("the language model on Ray ended its stream without finishing")
            yield GenerationDone("cancelled", 0, 0, 0)


# --------------------------------------------------------------------------- speech in


class RayTranscriber:
    """A ``Transcriber`` (with Whisper's segments and ``prefix``) on the ``<app>-asr``
    deployment."""

    supports_prefix = True

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        info: dict[str, Any] = _result(handle.info.remote(), None, "asr info", _INFO_TIMEOUT_S)
        self.name: str = info["name"]
        self.sample_rate: int = int(info["sample_rate"])
        self._count = functools.lru_cache(maxsize=4096)(self._remote_count)

    def _remote_count(self, text: str) -> int:
        return int(_result(self._handle.count_tokens.remote(text), None, "asr count_tokens"))

    def count_tokens(self, text: str) -> int:
        return self._count(text) if text else 0

    def transcribe_segments(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        prefix: str | None = None,
        cancel: CancelToken | None = None,
    ) -> SegmentedTranscript:
        from openrealtime.engines.asr.whisper import TranscriptionCancelled

        if cancel is not None and cancel.cancelled:
            raise TranscriptionCancelled()
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        response = self._handle.transcribe.remote(samples, language, prompt, prefix)
        try:
            result: SegmentedTranscript = _result(response, cancel, "transcription")
        except RayEngineError:
            raise
        except Exception as exc:
            raise TranscriptionCancelled() from exc
        return result

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        prefix: str | None = None,
    ) -> Transcript:
        return self.transcribe_segments(
            audio, language=language, prompt=prompt, prefix=prefix, cancel=cancel
        ).transcript


# --------------------------------------------------------------------------- speech out


class RaySynthesizer:
    """One TTS engine (``piper``, ``kokoro``, ``espeak``) of the ``<app>-tts`` deployment."""

    def __init__(
        self, handle: Any, engine: str, sample_rate: int, voices: list[VoiceInfo], supports_pitch: bool
    ) -> None:
        self._handle = handle
        self._stream_handle = handle.options(stream=True)
        self.name = engine
        self.sample_rate = sample_rate
        self._voices = voices
        self._voice_ids = {v.id for v in voices}
        self.supports_pitch = supports_pitch
        self._has_voice: Callable[[str], bool] = functools.lru_cache(maxsize=1024)(self._remote_has_voice)

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def _remote_has_voice(self, voice: str) -> bool:
        return bool(_result(self._handle.has_voice.remote(self.name, voice), None, "tts has_voice"))

    def has_voice(self, voice: str) -> bool:
        """Listed ids at once; other forms (``espeak`` variants, ``piper`` speakers) are asked
        of the replica once each."""
        return voice in self._voice_ids or self._has_voice(voice)

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        pitch: int | None = None,
    ) -> Iterator[PcmAudio]:
        response = self._stream_handle.synthesize.remote(self.name, text, voice, speed, pitch)
        yield from _stream(response, cancel, "speech synthesis")


def ray_synthesizers(handle: Any) -> dict[str, RaySynthesizer]:
    """Every engine the TTS deployment has, as local ``Synthesizer`` objects."""
    info: dict[str, dict[str, Any]] = _result(handle.info.remote(), None, "tts info", _INFO_TIMEOUT_S)
    return {
        name: RaySynthesizer(
            handle,
            name,
            int(detail["sample_rate"]),
            voices_from_info(detail),
            bool(detail.get("supports_pitch")),
        )
        for name, detail in info.items()
    }


# --------------------------------------------------------------------------- images in


class RayVisionDescriber:
    """A ``VisionDescriber`` on the ``<app>-vision`` deployment (images travel encoded)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        info: dict[str, Any] = _result(handle.info.remote(), None, "vision info", _INFO_TIMEOUT_S)
        self.name: str = f"ray:{info['name']}"
        for problem in info.get("problems", []):
            log.warning("image analysis limited: %s", problem)

    def describe(
        self,
        image: bytes | PILImage,
        *,
        question_hint: str | None = None,
        detail: Literal["auto", "low", "high"] = "auto",
    ) -> ImageAnalysis:
        if not isinstance(image, bytes):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            image = buffer.getvalue()
        analysis: ImageAnalysis = _result(
            self._handle.describe.remote(image, question_hint, detail), None, "image analysis"
        )
        return analysis


# --------------------------------------------------------------------------- builders

# What engines/registry.py builds for the ``ray`` backend of each engine kind; the other kinds,
# and the engines not listed in ``ray_engines``, are built by the registry in this process.


def _connected(settings: Settings) -> str:
    """Join the cluster (once) and return the Serve application prefix."""
    connect(settings.ray_address or "auto")
    return settings.ray_app


def ray_language_model(settings: Settings) -> RayLanguageModel:
    """The LLM adapter for the ``<ray_app>-llm`` deployment."""
    model = RayLanguageModel(_handle(_connected(settings), "llm"), model_dir=settings.model_dir)
    log.info("llm on Ray: %s (local tokenizer: %s)", model.name, model.local_tokenizer)
    return model


def ray_transcriber(settings: Settings) -> RayTranscriber:
    """The transcriber adapter for the ``<ray_app>-asr`` deployment."""
    return RayTranscriber(_handle(_connected(settings), "asr"))


def ray_synthesizers_for(settings: Settings) -> dict[str, RaySynthesizer]:
    """Every TTS engine of the ``<ray_app>-tts`` deployment."""
    return ray_synthesizers(_handle(_connected(settings), "tts"))


def ray_describer(settings: Settings) -> RayVisionDescriber:
    """The image describer of the ``<ray_app>-vision`` deployment."""
    return RayVisionDescriber(_handle(_connected(settings), "vision"))
