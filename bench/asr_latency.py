"""ASR latency benchmark: how long after the end of speech the final transcript is ready.

Each real-speech file of ``shared/audio`` (plus one long turn made of the five LibriVox
utterances back to back) is played as a caller would send it: 20 ms chunks at real-time pace
by wall clock, followed by ``--silence-ms`` of silence (the VAD's silence timeout before it
commits the turn). Then ``finish()`` is called; the time it takes is the latency reported
(end of speech, as the runtime sees it, to final text). Passes during speech run on a worker
thread, as in the server, so they compete for the CPU like they would there.

Configurations:

* ``*-full-pass``: no streaming; one transcription of the whole turn after commit (``base-30s``
  is stock Whisper with its 30 s window, the others use the short encoder window);
* ``*-streaming``: :class:`StreamingTranscription` re-transcribing while the user speaks
  (``-prefix``: the final pass is forced to continue the words already shown);
* ``tiny.en-deltas+base-final``: tiny.en passes for deltas, base for the end-of-speech pass;
* ``sphinx-partials+base``: PocketSphinx deltas while speaking, Whisper base for the final.

    python bench/asr_latency.py [--configs a,b] [--threads 1] [--silence-ms 200] [--repeats 1]
                                [--sweep]

``--sweep`` also times the decoding options (window length, beam size, timestamps) on whole
turns, for the shared files plus the long joined turn.

Writes bench/results/asr_latency.json (and a PNG when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.engines.asr.pocketsphinx import PocketSphinxTranscriber
from openrealtime.engines.asr.streaming import StreamingTranscription
from openrealtime.engines.asr.wer import corpus_wer, wer
from openrealtime.engines.asr.whisper import WhisperTranscriber
from openrealtime.engines.base import Transcriber

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SR = 16_000
CHUNK = 320  # 20 ms


def audio_dir() -> Path:
    for candidate in (ROOT.parent / "shared" / "audio", ROOT / "shared" / "audio"):
        if (candidate / "transcripts.json").is_file():
            return candidate
    raise SystemExit("shared/audio not found")


def load_wav(path: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    with wave.open(str(path)) as handle:
        assert handle.getframerate() == SR and handle.getnchannels() == 1
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def utterances() -> list[tuple[str, str, np.ndarray[Any, np.dtype[np.float32]]]]:
    folder = audio_dir()
    refs: dict[str, str] = json.loads((folder / "transcripts.json").read_text())
    items = [(name, text, load_wav(folder / name)) for name, text in refs.items()]
    libri = [item for item in items if item[0].startswith("librivox")]
    if libri:
        long_text = " ".join(text for _, text, _ in libri)
        items.append(("long-librivox (5 joined)", long_text, np.concatenate([a for _, _, a in libri])))
    return items


@dataclass
class Utterance:
    name: str
    audio_seconds: float
    latency_s: float
    hypothesis: str
    errors: int
    reference_words: int
    passes: int = 0
    reused: bool = False
    deltas: int = 0
    deltas_match: bool = True
    first_delta_s: float | None = None


@dataclass
class ConfigResult:
    name: str
    description: str
    wer: float
    latency_p50_s: float
    latency_p95_s: float
    latency_mean_s: float
    latency_max_s: float
    short_turns_latency_p50_s: float
    short_turns_latency_p95_s: float
    reused_fraction: float
    deltas_match_fraction: float
    first_delta_p50_s: float | None
    passes_per_turn: float
    whisper_fallbacks: int
    cpu_seconds_per_audio_second: float
    utterances: list[Utterance] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_full_pass(
    transcriber: Transcriber, audio: np.ndarray[Any, Any], silence_s: float
) -> tuple[str, float]:
    turn = np.concatenate([audio, np.zeros(int(silence_s * SR), np.float32)])
    started = time.perf_counter()
    text = transcriber.transcribe(turn, language="en").text
    return text, time.perf_counter() - started


def run_streaming(
    make: Callable[[ThreadPoolExecutor], StreamingTranscription],
    audio: np.ndarray[Any, Any],
    silence_s: float,
) -> tuple[str, float, StreamingTranscription, Any, float | None]:
    turn = np.concatenate([audio, np.zeros(int(silence_s * SR), np.float32)])
    first_delta: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        stream = make(pool)
        start = time.perf_counter()
        stream.on_delta = lambda _delta: (
            first_delta.append(time.perf_counter() - start) if not first_delta else None
        )
        for index, offset in enumerate(range(0, turn.size, CHUNK)):
            due = start + index * CHUNK / SR
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            stream.feed(turn[offset : offset + CHUNK])
        final = stream.finish()
    return final.transcript.text, final.wait_seconds, stream, final, first_delta[0] if first_delta else None


def bench_config(
    name: str,
    description: str,
    items: list[tuple[str, str, np.ndarray[Any, Any]]],
    silence_s: float,
    repeats: int,
    full: Transcriber | None = None,
    make: Callable[[ThreadPoolExecutor], StreamingTranscription] | None = None,
    whisper: WhisperTranscriber | None = None,
) -> ConfigResult:
    results: list[Utterance] = []
    fallbacks_before = whisper.fallbacks if whisper else 0
    cpu_start = time.process_time()
    audio_total = 0.0
    for _ in range(repeats):
        for utt_name, reference, audio in items:
            audio_total += audio.size / SR
            if full is not None:
                text, latency = run_full_pass(full, audio, silence_s)
                score = wer(reference, text)
                results.append(
                    Utterance(utt_name, audio.size / SR, latency, text, score.errors, score.reference_words)
                )
            else:
                assert make is not None
                text, latency, stream, final, first = run_streaming(make, audio, silence_s)
                score = wer(reference, text)
                results.append(
                    Utterance(
                        utt_name,
                        audio.size / SR,
                        latency,
                        text,
                        score.errors,
                        score.reference_words,
                        passes=final.passes,
                        reused=final.reused,
                        deltas=len(stream.deltas),
                        deltas_match=final.deltas_match,
                        first_delta_s=first,
                    )
                )
            print(f"  {utt_name:28s} {results[-1].latency_s * 1000:7.0f} ms  {text!r}", flush=True)
    latencies = [u.latency_s for u in results]
    short = [u.latency_s for u in results if u.audio_seconds <= 8.0]
    firsts = [u.first_delta_s for u in results if u.first_delta_s is not None]
    return ConfigResult(
        name=name,
        description=description,
        wer=corpus_wer((ref, u.hypothesis) for u, (_, ref, _) in zip(results, items * repeats, strict=True)),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_mean_s=float(np.mean(latencies)),
        latency_max_s=max(latencies),
        short_turns_latency_p50_s=percentile(short, 50),
        short_turns_latency_p95_s=percentile(short, 95),
        reused_fraction=sum(u.reused for u in results) / len(results),
        deltas_match_fraction=sum(u.deltas_match for u in results) / len(results),
        first_delta_p50_s=percentile(firsts, 50) if firsts else None,
        passes_per_turn=sum(u.passes for u in results) / len(results),
        whisper_fallbacks=(whisper.fallbacks - fallbacks_before) if whisper else 0,
        cpu_seconds_per_audio_second=(time.process_time() - cpu_start) / audio_total,
        utterances=results,
    )


def streaming_factory(
    engine: WhisperTranscriber,
    sphinx: PocketSphinxTranscriber | None = None,
    final_prefix: bool = False,
    final: WhisperTranscriber | None = None,
) -> Callable[[ThreadPoolExecutor], StreamingTranscription]:
    def make(pool: ThreadPoolExecutor) -> StreamingTranscription:
        partials = sphinx.stream() if sphinx is not None else None
        return StreamingTranscription(
            engine,
            language="en",
            executor=pool,
            partials=partials,
            final_prefix=final_prefix,
            final_transcriber=final,
        )

    return make


CONFIGS = [
    "base-30s-full-pass",
    "base-full-pass",
    "tiny.en-full-pass",
    "base-streaming",
    "base-streaming-prefix",
    "tiny.en-streaming",
    "tiny.en-deltas+base-final",
    "sphinx-partials+base",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 cpu_threads")
    parser.add_argument(
        "--silence-ms", type=float, default=200.0, help="silence after each file before commit"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "asr_latency.json")
    parser.add_argument(
        "--sweep", action="store_true", help="also time WhisperTranscriber options on whole turns"
    )
    args = parser.parse_args()

    info = machine_info("ctranslate2", "faster-whisper")
    print(json.dumps(info, indent=2), flush=True)
    items = utterances()
    silence_s = args.silence_ms / 1000.0
    wanted = [name for name in args.configs.split(",") if name]

    models: dict[str, WhisperTranscriber] = {}

    def whisper(model: str, **options: Any) -> WhisperTranscriber:
        key = model + json.dumps(options, sort_keys=True)
        if key not in models:
            models[key] = WhisperTranscriber(model, cpu_threads=args.threads, **options)
            models[key].transcribe(items[0][2])  # warm-up
        return models[key]

    sphinx: PocketSphinxTranscriber | None = None
    results: list[ConfigResult] = []
    for name in wanted:
        print(f"== {name}", flush=True)
        model = "whisper-tiny.en" if name.startswith("tiny") else "whisper-base"
        if name == "base-30s-full-pass":
            engine = whisper(model, min_window_seconds=30.0)
            result = bench_config(
                name,
                "stock 30 s window, one pass after commit",
                items,
                silence_s,
                args.repeats,
                full=engine,
                whisper=engine,
            )
        elif name.endswith("full-pass"):
            engine = whisper(model)
            result = bench_config(
                name,
                "short encoder window, one pass after commit",
                items,
                silence_s,
                args.repeats,
                full=engine,
                whisper=engine,
            )
        elif name == "tiny.en-deltas+base-final":
            engine = whisper("whisper-tiny.en")
            final = whisper("whisper-base")
            result = bench_config(
                name,
                "tiny.en re-transcribes while speaking for deltas, Whisper base for the final",
                items,
                silence_s,
                args.repeats,
                make=streaming_factory(engine, final=final),
                whisper=final,
            )
        elif "streaming" in name:
            engine = whisper(model)
            prefix = name.endswith("-prefix")
            result = bench_config(
                name,
                "re-transcribe while speaking, LocalAgreement deltas"
                + (", final forced to extend the deltas" if prefix else ", unconstrained final"),
                items,
                silence_s,
                args.repeats,
                make=streaming_factory(engine, final_prefix=prefix),
                whisper=engine,
            )
        elif name == "sphinx-partials+base":
            engine = whisper("whisper-base")
            sphinx = sphinx or PocketSphinxTranscriber()
            result = bench_config(
                name,
                "PocketSphinx deltas while speaking, Whisper base final",
                items,
                silence_s,
                args.repeats,
                make=streaming_factory(engine, sphinx),
                whisper=engine,
            )
        else:
            raise SystemExit(f"unknown config {name}")
        results.append(result)
        print(
            f"   WER {result.wer * 100:.1f}%  latency p50 {result.latency_p50_s * 1000:.0f} ms  "
            f"p95 {result.latency_p95_s * 1000:.0f} ms  reused {result.reused_fraction:.0%}  "
            f"deltas match final {result.deltas_match_fraction:.0%}",
            flush=True,
        )

    sweep = option_sweep(items, args.threads) if args.sweep else []
    info["load_average_end"] = list(os.getloadavg())
    payload = {
        "benchmark": "asr_latency",
        "machine": info,
        "method": {
            "pace": "real time by wall clock, 20 ms chunks",
            "silence_after_speech_ms": args.silence_ms,
            "latency": "wall time of finish() (full-pass: of transcribe()) after the last chunk",
            "cpu_threads": args.threads,
            "repeats": args.repeats,
        },
        "results": [asdict(result) for result in results],
        "option_sweep": sweep,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    print(
        f"{'config':24s} {'WER':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'reused':>7s} {'match':>6s} {'cpu/aud':>8s}"
    )
    for result in results:
        print(
            f"{result.name:24s} {result.wer * 100:5.1f}% {result.latency_p50_s * 1000:8.0f} "
            f"{result.latency_p95_s * 1000:8.0f} {result.reused_fraction:7.0%} "
            f"{result.deltas_match_fraction:6.0%} {result.cpu_seconds_per_audio_second:8.2f}"
        )
    plot(results, args.out.with_suffix(".png"))


SWEEP: list[tuple[str, str, dict[str, Any]]] = [
    ("whisper-base", "30 s window, greedy (stock)", {"min_window_seconds": 30.0}),
    ("whisper-base", "30 s window, no timestamps", {"min_window_seconds": 30.0, "timestamps": False}),
    ("whisper-base", "30 s window, beam 5", {"min_window_seconds": 30.0, "beam_size": 5}),
    ("whisper-base", "15 s min window", {"min_window_seconds": 15.0}),
    ("whisper-base", "10 s min window", {"min_window_seconds": 10.0}),
    ("whisper-base", "10 s min window, beam 5", {"min_window_seconds": 10.0, "beam_size": 5}),
    ("whisper-base", "10 s min window, no timestamps", {"min_window_seconds": 10.0, "timestamps": False}),
    ("whisper-base", "5 s min window (default)", {}),
    ("whisper-base", "5 s min window, beam 5", {"beam_size": 5}),
    ("whisper-base", "5 s min window, no timestamps", {"timestamps": False}),
    (
        "whisper-base",
        "window = audio + 1 s, no fallback",
        {"min_window_seconds": 1.0, "window_margin_seconds": 1.0, "fallback": False},
    ),
    ("whisper-tiny.en", "30 s window (stock)", {"min_window_seconds": 30.0}),
    ("whisper-tiny.en", "10 s min window (default)", {}),
    ("whisper-tiny.en", "5 s min window", {"min_window_seconds": 5.0}),
]


def option_sweep(items: list[tuple[str, str, np.ndarray[Any, Any]]], threads: int) -> list[dict[str, Any]]:
    """WER and time per whole-turn call for each decoding option (no streaming)."""
    rows: list[dict[str, Any]] = []
    for model, label, options in SWEEP:
        engine = WhisperTranscriber(model, cpu_threads=threads, **options)
        engine.transcribe(items[0][2], language="en")
        walls: list[float] = []
        cpus: list[float] = []
        pairs: list[tuple[str, str]] = []
        for _, reference, audio in items:
            wall, cpu = time.perf_counter(), time.process_time()
            text = engine.transcribe(audio, language="en").text
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            pairs.append((reference, text))
        error_rate, wall_p50, cpu_mean = corpus_wer(pairs), percentile(walls, 50), float(np.mean(cpus))
        rows.append(
            {
                "model": model,
                "option": label,
                "wer": error_rate,
                "wall_mean_s": float(np.mean(walls)),
                "wall_p50_s": wall_p50,
                "cpu_mean_s": cpu_mean,
                "fallbacks": engine.fallbacks,
                "hypotheses": [text for _, text in pairs],
            }
        )
        print(
            f"  {model:16s} {label:36s} WER {error_rate * 100:5.1f}%  wall p50 {wall_p50 * 1000:5.0f} ms"
            f"  cpu mean {cpu_mean * 1000:5.0f} ms  fallbacks {engine.fallbacks}",
            flush=True,
        )
    return rows


def plot(results: list[ConfigResult], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = [r.name for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(x - 0.2, [r.latency_p50_s * 1000 for r in results], 0.4, label="p50")
    ax.bar(x + 0.2, [r.latency_p95_s * 1000 for r in results], 0.4, label="p95")
    for i, r in enumerate(results):
        ax.text(i, r.latency_p95_s * 1000, f"WER {r.wer * 100:.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("end of speech to final text (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
