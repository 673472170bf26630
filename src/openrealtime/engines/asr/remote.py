"""Transcription on a remote OpenAI-compatible audio API, with the local model as fallback.

``RemoteTranscriber`` posts each turn as a 16 kHz WAV to ``{base_url}/audio/transcriptions``
(``response_format=json``, the one format every implementation has: OpenAI, another
openrealtime, speaches, vLLM). ``FailoverTranscriber`` puts the embedded Whisper behind it: a
connect error, an HTTP error, a timeout or an answer that is not a transcription is answered
locally, and the endpoint is then skipped for a while (``Cooldown``) so that the next turns do
not each wait for a dead host first.

The remote's partial results are not used while the caller speaks: see ``engines/registry.py``
(``use_remote_speech``) for why sessions default to remote finals only.
"""

from __future__ import annotations

import logging
import math
import threading

import httpx
import numpy as np

from openrealtime.audio.files import wav_bytes
from openrealtime.engines.asr.whisper import TranscriptionCancelled
from openrealtime.engines.base import CancelToken, FloatAudio, Transcriber, Transcript
from openrealtime.engines.remote import (
    Cooldown,
    RemoteEndpoint,
    RemoteEngineError,
    error_from_response,
    error_from_transport,
)

__all__ = ["FailoverTranscriber", "RemoteTranscriber"]

log = logging.getLogger("openrealtime.asr.remote")

SAMPLE_RATE = 16_000


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise TranscriptionCancelled


class RemoteTranscriber:
    """``Transcriber`` over ``POST {base_url}/audio/transcriptions``; safe from several threads."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, endpoint: RemoteEndpoint, *, client: httpx.Client | None = None) -> None:
        self.endpoint = endpoint
        self.name = f"remote:{endpoint.model}"
        self._url = endpoint.url("audio/transcriptions")
        self._client = client or endpoint.client()
        self.label = f"remote ASR {endpoint.base_url}"

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        seconds = samples.size / SAMPLE_RATE
        _check(cancel)
        pcm = np.clip(samples * 32767.0, -32768, 32767).astype(np.int16)
        form = {"model": self.endpoint.model, "response_format": "json", "temperature": "0"}
        if language:
            form["language"] = language
        if prompt:
            form["prompt"] = prompt
        try:
            response = self._client.post(
                self._url, data=form, files={"file": ("turn.wav", wav_bytes(pcm, SAMPLE_RATE), "audio/wav")}
            )
        except httpx.HTTPError as exc:
            raise error_from_transport(self.label, exc) from exc
        if response.status_code >= 400:
            raise error_from_response(self.label, response.status_code, response.content)
        try:
            body = response.json()
            text = body["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteEngineError(f"{self.label} sent no transcription: {exc}") from exc
        _check(cancel)
        usage = body.get("usage") if isinstance(body, dict) else None
        tokens = usage.get("output_tokens") if isinstance(usage, dict) else None
        detected = body.get("language") if isinstance(body.get("language"), str) else None
        return Transcript(
            text.strip(),
            detected or language,
            seconds,
            int(tokens) if isinstance(tokens, int) and not isinstance(tokens, bool) else 0,
        )


class FailoverTranscriber:
    """``primary`` (remote) first; ``fallback`` (local) when it fails or is cooling down.

    The scheduler keeps several remote requests in flight at once (they wait on the network,
    not the CPU), so local fallback work is serialised here to ``fallback_slots`` at a time:
    a dead endpoint then costs the cores what the local engine alone would.
    """

    def __init__(
        self,
        primary: RemoteTranscriber,
        fallback: Transcriber,
        *,
        cooldown: Cooldown | None = None,
        fallback_slots: int = 1,
    ) -> None:
        if fallback.sample_rate != primary.sample_rate:
            raise ValueError("the fallback transcriber must take the same sample rate as the remote one")
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.sample_rate = primary.sample_rate
        self.cooldown = cooldown or Cooldown()
        self._local = threading.Semaphore(max(1, fallback_slots))

    def count_tokens(self, text: str) -> int:
        """Whisper tokens of ``text`` when the fallback has a tokenizer (usage accounting)."""
        count = getattr(self.fallback, "count_tokens", None)
        if callable(count):
            return int(count(text))
        return math.ceil(len(text.encode("utf-8")) / 4)

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        if not self.cooldown.active:
            try:
                return self.primary.transcribe(audio, language=language, prompt=prompt, cancel=cancel)
            except TranscriptionCancelled:
                raise
            except Exception as exc:
                log.warning("%s; transcribing locally with %s", exc, self.fallback.name)
                self.cooldown.failed(exc)
        _check(cancel)
        with self._local:
            return self.fallback.transcribe(audio, language=language, prompt=prompt, cancel=cancel)
