"""Real recorded speech prepared as a caller would send it: room tone around each clip,
24 kHz pcm16, with the hand-annotated speech edges of every clip."""

from __future__ import annotations

import json
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from openrealtime.audio.resample import resample

AUDIO_DIR = Path(__file__).resolve().parents[2] / "shared" / "audio"
LEAD_MS = 1000
TRAIL_MS = 1500
TOLERANCE_MS = 100
PREFIX_MS = 300

# clip: (speech onset, speech offset) in ms from the start of the file.
REFERENCE_EDGES = {
    "cards-001": (180, 950),
    "cards-002": (120, 1700),  # "four": starts with a weak /f/
    "cards-003": (100, 1240),  # "seven": starts with /s/
    "cards-004": (200, 1220),  # "five": starts with a weak /f/
    "cards-005": (210, 3230),
    "goforward": (510, 2120),  # a click at 230 ms and a thump after the last word are not speech
    "librivox-0870": (240, 6750),
    "librivox-0880": (260, 2780),
    "librivox-0890": (275, 5070),
    "librivox-0920": (270, 5780),
    "librivox-0930": (275, 2950),
}


def load_clip(name: str) -> np.ndarray:
    with wave.open(str(AUDIO_DIR / f"{name}.wav")) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


def room_tone(clip: np.ndarray, n: int, seed: int, block: int = 512) -> np.ndarray:
    """Noise shaped like the clip's four quietest blocks (its background), ``n`` samples."""
    blocks = clip[: clip.size // block * block].reshape(-1, block)
    hf_energy = (np.diff(blocks, axis=1) ** 2).mean(1) + 0.01 * (blocks**2).mean(1)
    quiet = blocks[np.argsort(hf_energy)[:4]]
    window = np.hanning(block)
    magnitude = np.sqrt((np.abs(np.fft.rfft(quiet * window, axis=1)) ** 2).mean(0) / (window**2).mean())
    nfft = 1 << int(np.ceil(np.log2(n + block)))
    shape = np.interp(np.linspace(0, 1, nfft // 2 + 1), np.linspace(0, 1, magnitude.size), magnitude)
    noise = np.random.default_rng(seed).standard_normal(nfft)
    return np.fft.irfft(np.fft.rfft(noise) * shape / np.sqrt(block), nfft)[:n]


def caller_audio(name: str, seed: int = 1) -> np.ndarray:
    """The clip with room tone around it, as 24 kHz int16; the clip starts at LEAD_MS."""
    clip = load_clip(name)
    fade = 160
    ramp = np.linspace(0.0, 1.0, fade)
    head = room_tone(clip, LEAD_MS * 16 + fade, seed)
    tail = room_tone(clip, TRAIL_MS * 16 + fade, seed + 100)
    head[-fade:] = head[-fade:] * (1 - ramp) + clip[:fade] * ramp
    tail[:fade] = clip[-fade:] * (1 - ramp) + tail[:fade] * ramp
    signal = np.concatenate([head, clip[fade:-fade], tail])
    pcm16k = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    return resample(pcm16k, 16000, 24000)


def transcripts() -> dict[str, str]:
    """Reference transcripts by clip name (without ``.wav``)."""
    data = json.loads((AUDIO_DIR / "transcripts.json").read_text())
    return {name.removesuffix(".wav"): text for name, text in data.items()}


def espeak(text: str, rate: int = 24000) -> np.ndarray:
    """A synthetic utterance (a backchannel: no package ships recorded ones), float at
    ``rate``, trimmed to its sound. espeak-ng reads "mhm" as its letters: give a hum as
    phonemes ("[[m:'hm:]]")."""
    import soundfile  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        data, source_rate = soundfile.read(str(path), dtype="float32")
    audio = np.asarray(resample(np.asarray(data, dtype=np.float32), int(source_rate), rate), np.float32)
    active = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[active[0] : active[-1] + 1]
