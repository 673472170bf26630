"""The AI disclosure: a sentence played to a media caller (WebRTC, SIP) before the first turn.

It is spoken with the session's voice straight into the call's playback, ahead of any answer,
under its own id (``DISCLOSURE_ID``), so ``output_audio_buffer.started``/``.stopped`` frame it
like an answer; it is not a conversation item, so the model never reads it. Observers get a
``disclosure`` note with the sentence (the recording keeps it with the session's events).
The synthesized sound is cached per (sentence, voice): every call says the same thing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ..audio import formats
from ..audio.resample import StreamingResampler
from ..core.events import PcmAudio
from ..engines.registry import EngineSet
from .scheduler import Scheduler

if TYPE_CHECKING:
    from .session_runtime import SessionRuntime

__all__ = ["DISCLOSURE_ID", "prepare_disclosure", "speak_disclosure", "voice_name"]

log = logging.getLogger("openrealtime.runtime")

DISCLOSURE_ID = "disclosure"
_CACHE: dict[tuple[int, str, str], PcmAudio] = {}
_CACHE_LIMIT = 16


def voice_name(voice: object) -> str:
    """A session's voice (a name or a ``{"id": …}`` object) as the name the voice table resolves."""
    if isinstance(voice, str):
        return voice
    found = getattr(voice, "id", None)
    return found if isinstance(found, str) else "marin"


async def prepare_disclosure(engines: EngineSet, scheduler: Scheduler, text: str, voice: str) -> None:
    """Synthesize the disclosure ahead of the first call (at start-up), so no call waits for it."""
    try:
        await _synthesize(engines, scheduler, text, voice)
    except Exception:
        log.exception("the disclosure could not be synthesized")


async def _synthesize(engines: EngineSet, scheduler: Scheduler, text: str, voice: str) -> PcmAudio | None:
    voices = engines.voices
    if voices is None:
        return None
    synthesizer, voice_id = voices.resolve(voice)
    key = (id(synthesizer), voice_id, text)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    resampler = StreamingResampler(synthesizer.sample_rate, formats.INTERNAL_RATE, dtype=np.int16)
    parts = [
        np.asarray(resampler.process(chunk), dtype=np.int16)
        async for chunk in scheduler.tts.stream(lambda: synthesizer.synthesize(text, voice=voice_id))
    ]
    parts.append(np.asarray(resampler.flush(), dtype=np.int16))
    pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = pcm
    return pcm


async def speak_disclosure(runtime: SessionRuntime, text: str) -> None:
    """Queue the disclosure in the call's playback (first, before any answer) and note it."""
    playback = runtime.playback
    if playback is None or not text.strip():
        return
    session = runtime.core.session
    voice = voice_name(getattr(getattr(getattr(session, "audio", None), "output", None), "voice", None))
    try:
        pcm = await _synthesize(runtime.engines, runtime.scheduler, text, voice)
    except Exception:
        log.exception("the disclosure could not be synthesized")
        return
    if pcm is None or runtime.closed:
        return
    playback.playout.push(DISCLOSURE_ID, DISCLOSURE_ID, pcm)
    runtime.observers.note(
        runtime.info, "disclosure", {"text": text, "audio_ms": len(pcm) * 1000 // formats.INTERNAL_RATE}
    )
    playback.finish(DISCLOSURE_ID)
