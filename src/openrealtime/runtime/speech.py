"""Loading the speech engines (VAD, turn detector, ASR, voices) from the settings."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Settings
from .engines import EngineSet

log = logging.getLogger("openrealtime.speech")


def load_speech_engines(engines: EngineSet, settings: Settings) -> None:
    """Fill ``engines`` with the embedded (or user-supplied) speech engines."""
    from ..engines.asr.whisper import WhisperTranscriber
    from ..engines.tts.voices import VoiceTable, default_engines
    from ..engines.turn.smart_turn import SmartTurnDetector
    from ..engines.vad.silero import SileroVAD

    engines.vad = SileroVAD()
    engines.turn_detector = SmartTurnDetector(intra_op_num_threads=settings.vad_threads)
    asr_model: str | Path = settings.asr
    if Path(settings.asr).is_dir():
        asr_model = Path(settings.asr)
    engines.transcriber = WhisperTranscriber(asr_model, cpu_threads=settings.asr_threads)
    engines.extra["asr_partials"] = settings.asr_partials
    if settings.asr_partials == "pocketsphinx":
        from ..engines.asr.pocketsphinx import PocketSphinxTranscriber

        engines.partial_transcriber = PocketSphinxTranscriber()
    synthesizers = default_engines(
        piper_voices=[str(p) for p in settings.piper_voices],
        kokoro=settings.kokoro or settings.kokoro_model is not None,
        kokoro_model=settings.kokoro_model,
        kokoro_voices=[str(p) for p in settings.kokoro_voices],
        onnx_threads=settings.tts_threads,
    )
    engines.voices = VoiceTable(synthesizers, overrides=settings.voices or None)
    log.info("speech engines ready: asr=%s voices=%s", settings.asr, ", ".join(sorted(synthesizers)))
