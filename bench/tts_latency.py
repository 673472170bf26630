"""TTS latency benchmark: time to first audio for short replies, real-time factor, and WER.

Time to first audio is what a caller hears as the assistant's reaction time, so it is
measured on the short first pieces the clause chunker hands to TTS; the real-time factor
(synthesis time / audio duration, < 1 means faster than playback) on a longer answer decides
whether a voice can keep up at all. Intelligibility is checked by transcribing the audio with
Whisper tiny.en, so a fast but garbled voice does not look good here.

    python bench/tts_latency.py [--engines piper,espeak,kokoro] [--threads 1] [--repeats 3]

Writes bench/results/tts_latency.json (and a PNG when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.engines.base import Synthesizer
from openrealtime.engines.tts.chunker import ClauseChunker

RESULTS = Path(__file__).resolve().parent / "results"

SHORT_REPLIES = [
    "Sure, I can help with that.",
    "Hello! How are you doing today?",
    "Of course, let me check that for you,",
    "Your order shipped yesterday.",
    "It is sunny and twenty two degrees in Paris.",
    "I set a timer for ten minutes.",
    "Sorry, could you repeat that?",
    "Yes, that works for me.",
    "Great, the message has been sent to Alex.",
    "Let me think about that for a second,",
]
LONG_REPLY = (
    "Thanks for waiting. I found your order from last Tuesday: it contains two blue mugs and a "
    "tea kettle, and it left our warehouse this morning. The courier expects to deliver it on "
    "Friday between nine and noon. If nobody is home, they will leave it with a neighbour or "
    "at the post office around the corner. Is there anything else I can help you with today?"
)
WER_SENTENCES = [
    "Please call me back when you get home tonight.",
    "I would like to book a table for four people at seven o'clock.",
    "The weather today is sunny with a light breeze from the west.",
    "Your package was delivered to the front door this morning.",
    "Thank you for calling, how can I help you today?",
]
VOICES = {
    "piper": ["en_US-joe-medium"],
    "espeak": ["en-us+f5", "en-us+klatt"],
    "kokoro": ["jf_alpha", "jm_kumo"],
}


@dataclass
class VoiceResult:
    engine: str
    voice: str
    sample_rate: int
    first_chunk_ms_p50: float
    first_chunk_ms_p95: float
    first_chunk_ms_max: float
    short_reply_samples: int
    rtf: float
    rtf_runs: list[float]
    long_audio_s: float
    chunker_first_audio_ms: float
    wer: float | None = None
    wer_hypotheses: list[str] | None = None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def first_chunk(engine: Synthesizer, text: str, voice: str) -> tuple[float, float]:
    """Seconds to the first chunk and audio seconds produced, draining the stream."""
    start = time.perf_counter()
    first = None
    samples = 0
    for chunk in engine.synthesize(text, voice=voice):
        if first is None:
            first = time.perf_counter() - start
        samples += len(chunk)
    return (first or 0.0), samples / engine.sample_rate


def rtf_run(engine: Synthesizer, text: str, voice: str) -> tuple[float, float]:
    start = time.perf_counter()
    samples = sum(len(c) for c in engine.synthesize(text, voice=voice))
    elapsed = time.perf_counter() - start
    audio = samples / engine.sample_rate
    return elapsed / audio, audio


def chunker_first_audio(engine: Synthesizer, voice: str) -> float:
    """First audio for a long reply cut by the clause chunker (what a session does)."""
    piece = ClauseChunker().feed([LONG_REPLY])[0]
    return first_chunk(engine, piece, voice)[0]


def transcribe(audios: list[tuple[np.ndarray, int]]) -> list[str]:
    import soxr
    from faster_whisper import WhisperModel

    from openrealtime.engines.assets import resolve

    model = WhisperModel(str(resolve("whisper-tiny.en")), device="cpu", compute_type="int8", cpu_threads=1)
    out = []
    for audio, rate in audios:
        pcm = soxr.resample(audio.astype(np.float32) / 32768.0, rate, 16000)
        segments, _ = model.transcribe(pcm, language="en", beam_size=1)
        out.append(" ".join(s.text.strip() for s in segments))
    return out


def build(name: str, threads: int) -> Synthesizer:
    if name == "piper":
        from openrealtime.engines.tts.piper import PiperSynthesizer

        return PiperSynthesizer(onnx_threads=threads)
    if name == "espeak":
        from openrealtime.engines.tts.espeak import EspeakSynthesizer

        return EspeakSynthesizer()
    if name == "kokoro":
        from openrealtime.engines.tts.kokoro import KokoroSynthesizer

        return KokoroSynthesizer(onnx_threads=threads)
    raise SystemExit(f"unknown engine {name!r}")


def bench_voice(engine: Synthesizer, voice: str, repeats: int, wer: bool) -> VoiceResult:
    list(engine.synthesize("Warm up.", voice=voice))  # session creation, first-run allocations
    firsts: list[float] = []
    for _ in range(repeats):
        for reply in SHORT_REPLIES:
            firsts.append(first_chunk(engine, reply, voice)[0])
    rtfs, audio_s = [], 0.0
    for _ in range(max(1, repeats)):
        value, audio_s = rtf_run(engine, LONG_REPLY, voice)
        rtfs.append(value)
    result = VoiceResult(
        engine=engine.name,
        voice=voice,
        sample_rate=engine.sample_rate,
        first_chunk_ms_p50=1000 * percentile(firsts, 50),
        first_chunk_ms_p95=1000 * percentile(firsts, 95),
        first_chunk_ms_max=1000 * max(firsts),
        short_reply_samples=len(firsts),
        rtf=statistics.median(rtfs),
        rtf_runs=[round(r, 4) for r in rtfs],
        long_audio_s=round(audio_s, 2),
        chunker_first_audio_ms=1000 * chunker_first_audio(engine, voice),
    )
    if wer:
        from openrealtime.engines.asr.wer import corpus_wer

        audios = [
            (np.concatenate(list(engine.synthesize(s, voice=voice))), engine.sample_rate)
            for s in WER_SENTENCES
        ]
        hyps = transcribe(audios)
        result.wer = corpus_wer(zip(WER_SENTENCES, hyps, strict=True))
        result.wer_hypotheses = hyps
    return result


def plot(results: list[VoiceResult], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = [f"{r.engine}\n{r.voice}" for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(results))
    ax1.bar(x - 0.2, [r.first_chunk_ms_p50 for r in results], 0.4, label="p50")
    ax1.bar(x + 0.2, [r.first_chunk_ms_p95 for r in results], 0.4, label="p95")
    ax1.set_xticks(x, labels, fontsize=8)
    ax1.set_ylabel("first audio chunk (ms), short replies")
    ax1.legend()
    ax2.bar(x, [r.rtf for r in results])
    ax2.axhline(1.0, color="red", linestyle="--", linewidth=1)
    ax2.set_xticks(x, labels, fontsize=8)
    ax2.set_ylabel("real-time factor (lower is faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engines", default="piper,espeak,kokoro")
    parser.add_argument("--threads", type=int, default=1, help="ONNX intra-op threads per engine")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-wer", action="store_true", help="skip the Whisper intelligibility check")
    parser.add_argument("--out", type=Path, default=RESULTS / "tts_latency.json")
    args = parser.parse_args(argv)

    info = machine_info("onnxruntime", "piper-tts")
    print("machine:", json.dumps(info))
    results: list[VoiceResult] = []
    skipped: dict[str, str] = {}
    for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
        try:
            engine = build(name, args.threads)
        except Exception as exc:  # an optional engine that is not installed is reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: skipped ({skipped[name]})")
            continue
        repeats = 1 if name == "kokoro" else args.repeats
        for voice in VOICES[name]:
            r = bench_voice(engine, voice, repeats, wer=not args.no_wer)
            results.append(r)
            wer_text = "" if r.wer is None else f"  WER {100 * r.wer:.1f}%"
            print(
                f"{r.engine:7} {r.voice:18} first chunk p50 {r.first_chunk_ms_p50:6.0f} ms"
                f"  p95 {r.first_chunk_ms_p95:6.0f} ms  RTF {r.rtf:.3f}"
                f"  chunked long reply {r.chunker_first_audio_ms:5.0f} ms{wer_text}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "onnx_threads": args.threads,
        "short_replies": SHORT_REPLIES,
        "long_reply": LONG_REPLY,
        "results": [asdict(r) for r in results],
        "skipped": skipped,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
