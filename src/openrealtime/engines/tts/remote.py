"""Speech on a remote OpenAI-compatible audio API, streamed, with the local voices as fallback.

``RemoteSynthesizer`` posts each piece of an answer to ``{base_url}/audio/speech`` with
``response_format=pcm`` (24 kHz s16le, OpenAI's definition) and yields the PCM as it arrives,
so a server that streams (another openrealtime, Kokoro-FastAPI, speaches) is heard after its
first chunk rather than after the whole piece. A server that answers ``pcm`` with a WAV
header is read too (the header is skipped and its rate resampled to 24 kHz).

``RemoteVoiceTable`` stands where the local ``VoiceTable`` stood: every voice name resolves to
a ``FailoverSynthesizer`` that speaks with the remote voice of that name (or its mapping in
``TTS_REMOTE_VOICES``) and with the local table's voice of that name when the remote fails.
The switch happens only before the remote's first audio of a piece: a stream that breaks half
way through cannot be finished by another voice without repeating words, so that piece fails
(its response ends ``failed``) and the endpoint is skipped for the next pieces and turns.
Direct ``engine:voice`` references name a local engine and are spoken locally.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import httpx
import numpy as np

from openrealtime.audio.resample import StreamingResampler
from openrealtime.engines.base import CancelToken, PcmAudio, Synthesizer, VoiceInfo
from openrealtime.engines.remote import (
    Cooldown,
    RemoteEndpoint,
    RemoteEngineError,
    error_from_response,
    error_from_transport,
)
from openrealtime.engines.tts.voices import OPENAI_VOICES, UnknownVoiceError

__all__ = ["FailoverSynthesizer", "RemoteSynthesizer", "RemoteVoiceTable"]

log = logging.getLogger("openrealtime.tts.remote")

SAMPLE_RATE = 24_000
_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_LOCAL_VOICE = "marin"
"""The local voice of a name only the remote knows (``TTS_REMOTE_VOICES`` adds such names)."""


class _PcmReader:
    """Bytes as they arrive → int16 samples at 24 kHz (an odd byte waits for its pair)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._buffer = b""
        self._checked = False
        self._resampler: StreamingResampler | None = None

    def feed(self, block: bytes) -> PcmAudio:
        self._buffer += block
        if not self._checked:
            if len(self._buffer) < 4:
                return np.zeros(0, dtype=np.int16)
            if self._buffer.startswith(b"RIFF"):
                parsed = _wav_data_offset(self._buffer)
                if parsed is None:
                    if len(self._buffer) > _MAX_HEADER_BYTES:
                        raise RemoteEngineError(f"{self.label} sent a WAV header without audio data")
                    return np.zeros(0, dtype=np.int16)
                offset, rate, channels, bits = parsed
                if channels != 1 or bits != 16:
                    raise RemoteEngineError(
                        f"{self.label} sent {channels}-channel {bits}-bit audio, not mono s16"
                    )
                self._buffer = self._buffer[offset:]
                if rate != SAMPLE_RATE:
                    self._resampler = StreamingResampler(rate, SAMPLE_RATE, dtype=np.int16)
            self._checked = True
        whole = len(self._buffer) // 2 * 2
        pcm = np.frombuffer(self._buffer[:whole], dtype="<i2").astype(np.int16)
        self._buffer = self._buffer[whole:]
        if self._resampler is not None:
            return np.asarray(self._resampler.process(pcm), dtype=np.int16)
        return pcm

    def flush(self) -> PcmAudio:
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return np.asarray(self._resampler.flush(), dtype=np.int16)


def _wav_data_offset(data: bytes) -> tuple[int, int, int, int] | None:
    """(offset of the samples, rate, channels, bits) of a WAV header, or None while incomplete."""
    if len(data) < 12 or data[8:12] != b"WAVE":
        return None
    position = 12
    rate = channels = bits = 0
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        size = struct.unpack("<I", data[position + 4 : position + 8])[0]
        body = position + 8
        if kind == b"fmt ":
            if body + 16 > len(data):
                return None
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
        elif kind == b"data":
            return body, rate, channels, bits
        position = body + size + (size & 1)
    return None


class RemoteSynthesizer:
    """``Synthesizer`` over ``POST {base_url}/audio/speech``; safe from several threads."""

    name = "remote"
    sample_rate: int = SAMPLE_RATE

    def __init__(self, endpoint: RemoteEndpoint, *, client: httpx.Client | None = None) -> None:
        self.endpoint = endpoint
        self._url = endpoint.url("audio/speech")
        self._client = client or endpoint.client()
        self.label = f"remote TTS {endpoint.base_url}"

    def voices(self) -> list[VoiceInfo]:
        """The names every OpenAI-compatible server is asked for (the remote decides)."""
        return [VoiceInfo(id=name, engine=self.name, description=self.label) for name in OPENAI_VOICES]

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[PcmAudio]:
        return self._stream(text, voice, speed, cancel)

    def _stream(self, text: str, voice: str, speed: float, cancel: CancelToken | None) -> Iterator[PcmAudio]:
        if not text.strip() or (cancel is not None and cancel.cancelled):
            return
        body = {
            "model": self.endpoint.model,
            "input": text,
            "voice": voice,
            "response_format": "pcm",
            "speed": speed,
        }
        reader = _PcmReader(self.label)
        try:
            with self._client.stream("POST", self._url, json=body) as response:
                if response.status_code >= 400:
                    raise error_from_response(self.label, response.status_code, response.read())
                for block in response.iter_bytes():
                    if cancel is not None and cancel.cancelled:
                        return
                    pcm = reader.feed(block)
                    if pcm.size:
                        yield pcm
        except httpx.HTTPError as exc:
            raise error_from_transport(self.label, exc) from exc
        tail = reader.flush()
        if tail.size:
            yield tail


class FailoverSynthesizer:
    """One voice: the remote's, or the local ``fallback_voice`` when the remote fails first.

    Local fallback work is serialised by ``local_slots`` (shared by every voice of a table):
    the scheduler keeps several remote syntheses in flight, which must not turn into several
    local ones competing for the same cores while the endpoint is down.
    """

    def __init__(
        self,
        remote: RemoteSynthesizer,
        fallback: Synthesizer,
        fallback_voice: str,
        *,
        cooldown: Cooldown,
        local_slots: threading.Semaphore,
    ) -> None:
        self.remote = remote
        self.fallback = fallback
        self.fallback_voice = fallback_voice
        self.cooldown = cooldown
        self.local_slots = local_slots
        self.name = remote.name
        self.sample_rate = remote.sample_rate

    def voices(self) -> list[VoiceInfo]:
        return self.remote.voices()

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[PcmAudio]:
        return self._stream(text, voice, speed, cancel)

    def _stream(self, text: str, voice: str, speed: float, cancel: CancelToken | None) -> Iterator[PcmAudio]:
        if not self.cooldown.active:
            stream = self.remote.synthesize(text, voice=voice, speed=speed, cancel=cancel)
            try:
                first = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                log.warning("%s; speaking locally with %s:%s", exc, self.fallback.name, self.fallback_voice)
                self.cooldown.failed(exc)
            else:
                yield first
                try:
                    yield from stream
                except Exception as exc:
                    log.warning("%s after its first audio; the next pieces are spoken locally", exc)
                    self.cooldown.failed(exc)
                    raise
                return
        if cancel is not None and cancel.cancelled:
            return
        yield from self._local(text, speed, cancel)

    def _local(self, text: str, speed: float, cancel: CancelToken | None) -> Iterator[PcmAudio]:
        with self.local_slots:
            resampler = StreamingResampler(self.fallback.sample_rate, SAMPLE_RATE, dtype=np.int16)
            for chunk in self.fallback.synthesize(
                text, voice=self.fallback_voice, speed=speed, cancel=cancel
            ):
                out = np.asarray(resampler.process(np.asarray(chunk, dtype=np.int16)), dtype=np.int16)
                if out.size:
                    yield out
            tail = np.asarray(resampler.flush(), dtype=np.int16)
            if tail.size:
                yield tail


class _LocalVoices(Protocol):
    def resolve(self, name: Any, language: str | None = None) -> tuple[Synthesizer, str]: ...

    def describe(self) -> list[dict[str, Any]]: ...


class RemoteVoiceTable:
    """Resolves voice names to the remote endpoint, each backed by the local table's voice.

    ``remote_voices`` maps names to the remote's own voice ids (e.g. ``{"marin": "af_heart"}``
    for Kokoro-FastAPI); unmapped names are sent as they are, which another openrealtime and
    most OpenAI-compatible servers understand.
    """

    def __init__(
        self,
        remote: RemoteSynthesizer,
        local: _LocalVoices,
        *,
        remote_voices: Mapping[str, str] | None = None,
        cooldown: Cooldown | None = None,
        local_slots: int = 1,
    ) -> None:
        self.remote = remote
        self.local = local
        self.remote_voices = dict(remote_voices or {})
        self.cooldown = cooldown or Cooldown()
        self._slots = threading.Semaphore(max(1, local_slots))
        self._resolved: dict[str, tuple[Synthesizer, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, name: str | Mapping[str, Any], language: str | None = None) -> tuple[Synthesizer, str]:
        """The remote voice, backed by the local one; with a ``language`` other than English
        the local table's voice for it (the remote's voices are not known to speak it)."""
        key = _key(name)
        if ":" in key and key not in self.remote_voices:
            return self.local.resolve(name, language)  # a local engine named directly
        if language is not None and language != "en":
            try:
                return self.local.resolve(name, language)
            except UnknownVoiceError:
                if key not in self.remote_voices:
                    raise
                return self.local.resolve(DEFAULT_LOCAL_VOICE, language)
        with self._lock:
            cached = self._resolved.get(key)
        if cached is not None:
            return cached
        try:
            local, local_voice = self.local.resolve(name)
        except UnknownVoiceError:
            if key not in self.remote_voices:
                raise
            local, local_voice = self.local.resolve(DEFAULT_LOCAL_VOICE)
        voice = FailoverSynthesizer(
            self.remote, local, local_voice, cooldown=self.cooldown, local_slots=self._slots
        )
        result: tuple[Synthesizer, str] = (voice, self.remote_voices.get(key, key))
        with self._lock:
            self._resolved[key] = result
        return result

    def describe(self) -> list[dict[str, Any]]:
        """The local table's names, as spoken by the remote (the local voice is the fallback)."""
        rows: list[dict[str, Any]] = []
        names = [row["name"] for row in self.local.describe()]
        names += [name for name in self.remote_voices if name not in names]
        for name in names:
            try:
                synthesizer, voice = self.resolve(name)
            except (UnknownVoiceError, KeyError):
                continue
            fallback = synthesizer.fallback if isinstance(synthesizer, FailoverSynthesizer) else synthesizer
            fallback_voice = (
                synthesizer.fallback_voice if isinstance(synthesizer, FailoverSynthesizer) else voice
            )
            rows.append(
                {
                    "name": name,
                    "engine": self.remote.name,
                    "voice": voice,
                    "description": f"{self.remote.label}, voice '{voice}'",
                    "sample_rate": self.remote.sample_rate,
                    "builtin": name in OPENAI_VOICES,
                    "fallback": f"{fallback.name}:{fallback_voice}",
                }
            )
        return rows


def _key(name: str | Mapping[str, Any]) -> str:
    if isinstance(name, Mapping):
        value = name.get("id")
        if not isinstance(value, str) or not value:
            raise UnknownVoiceError("A custom voice must be an object with a string 'id'.")
        return value
    if not isinstance(name, str) or not name.strip():
        raise UnknownVoiceError("The voice must be a non-empty string.")
    return name.strip()
