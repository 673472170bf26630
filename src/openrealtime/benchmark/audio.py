"""The utterances a benchmark caller speaks: audio files, their end of speech, room tone.

Voice-to-voice latency is measured from the end of the user's speech, so every utterance needs
that instant. The bundled samples carry hand-annotated edges; for any other file the project's
own VAD (Silero) finds the last speech frame, and a ``<file>.txt`` beside it may hold the
reference transcript.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..audio.resample import float32_to_int16, resample

__all__ = ["Utterance", "bundled_utterances", "load_utterance", "room_tone", "speech_end_ms"]

RATE = 24000
"""The protocol's audio rate: what the caller sends, in pcm16."""
VAD_RATE = 16000
SPEECH_THRESHOLD = 0.5


@dataclass(frozen=True)
class Utterance:
    """One spoken clip as the caller sends it (24 kHz pcm16) with its end of speech."""

    name: str
    pcm: npt.NDArray[np.int16]
    speech_end_ms: float
    """End of speech, ms from the start of ``pcm``."""
    transcript: str | None = None

    @property
    def duration_s(self) -> float:
        return self.pcm.size / RATE


def _read_16k(path: Path) -> npt.NDArray[np.float32]:
    """Any soundfile-readable file as mono float32 at 16 kHz."""
    import soundfile  # type: ignore[import-untyped]

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    if mono.size == 0:
        raise ValueError(f"{path} holds no audio")
    return mono if rate == VAD_RATE else resample(mono, int(rate), VAD_RATE)


def speech_end_ms(audio16k: npt.NDArray[np.float32]) -> float:
    """End of the last 32 ms frame Silero VAD scores as speech; raises when there is none."""
    from ..engines.vad.silero import SileroVAD, frame_probabilities

    vad = SileroVAD()
    probabilities = frame_probabilities(vad, audio16k)
    speech = [i for i, p in enumerate(probabilities) if p >= SPEECH_THRESHOLD]
    if not speech:
        raise ValueError("no speech found in the file")
    return (speech[-1] + 1) * vad.frame_samples * 1000 / VAD_RATE


def load_utterance(path: Path, *, end_ms: float | None = None, transcript: str | None = None) -> Utterance:
    """Read ``path``; the end of speech is ``end_ms`` or found by the VAD; the reference
    transcript is ``transcript`` or the text of ``<path minus suffix>.txt`` when present."""
    audio = _read_16k(path)
    if end_ms is None:
        end_ms = speech_end_ms(audio)
    if transcript is None:
        sidecar = path.with_suffix(".txt")
        if sidecar.is_file():
            transcript = sidecar.read_text().strip() or None
    pcm = resample(float32_to_int16(audio), VAD_RATE, RATE)
    return Utterance(path.stem, pcm, float(end_ms), transcript)


def bundled_utterances() -> list[Utterance]:
    """The real-speech samples shipped with the package (see ``samples/README.md``)."""
    folder = resources.files("openrealtime.benchmark") / "samples"
    meta = json.loads((folder / "samples.json").read_text())
    utterances = []
    for file_name, info in meta["samples"].items():
        with resources.as_file(folder / file_name) as path:
            utterances.append(
                load_utterance(path, end_ms=info["speech_end_ms"], transcript=info["transcript"])
            )
    return utterances


def room_tone(clip: npt.NDArray[np.int16], n: int, seed: int, block: int = 512) -> npt.NDArray[np.int16]:
    """``n`` samples of noise shaped like the clip's four quietest blocks (its background), so
    the line never goes digitally silent between turns, as a real microphone never does."""
    samples = clip.astype(np.float64)
    usable = samples[: samples.size // block * block].reshape(-1, block)
    if usable.size == 0:
        return np.zeros(n, dtype=np.int16)
    hf_energy = (np.diff(usable, axis=1) ** 2).mean(1) + 0.01 * (usable**2).mean(1)
    quiet = usable[np.argsort(hf_energy)[:4]]
    window = np.hanning(block)
    magnitude = np.sqrt((np.abs(np.fft.rfft(quiet * window, axis=1)) ** 2).mean(0) / (window**2).mean())
    nfft = 1 << int(np.ceil(np.log2(n + block)))
    shape = np.interp(np.linspace(0, 1, nfft // 2 + 1), np.linspace(0, 1, magnitude.size), magnitude)
    noise = np.random.default_rng(seed).standard_normal(nfft)
    tone = np.fft.irfft(np.fft.rfft(noise) * shape / np.sqrt(block), nfft)[:n]
    return np.clip(np.rint(tone), -32768, 32767).astype(np.int16)
