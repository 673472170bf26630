"""Per-voice benchmark of the voice table: first chunk, real-time factor idle and busy, WER.

For every distinct voice the built-in names map to (the server's own table, Kokoro enabled
unless ``--no-kokoro``), through the same synthesizer the session uses (text normalisation
included):

* first chunk: time from ``synthesize()`` to the first audio chunk for ten short replies
  (what a caller hears as the reaction time of a first clause), p50 / p95;
* real-time factor (synthesis time / audio duration) of a ~20 s answer, with the machine
  otherwise as it is ("idle"), and again while another session is active ("busy": a second
  process decodes with the embedded LLM on one thread, as a concurrent answer does, or
  synthesizes with the same voice, ``--load tts``); CPU seconds per audio second too, which
  contention does not inflate;
* round-trip WER: five sentences spoken and transcribed by the server's ASR (Whisper base).

``--languages`` also scores the Kokoro packs speaking other languages through Whisper base.

    python bench/voices.py [--voices marin,cedar] [--load llm|tts|none] [--languages]

Writes bench/results/voices.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.engines.base import Synthesizer
from openrealtime.engines.tts.voices import OPENAI_VOICES, VoiceTable, default_engines

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
LANGUAGE_SENTENCES = {
    "es": ["Buenos días, ¿en qué puedo ayudarle hoy?", "Su pedido llegará el viernes por la mañana."],
    "fr": ["Bonjour, comment puis-je vous aider aujourd'hui ?", "Votre commande arrivera vendredi matin."],
    "it": ["Buongiorno, come posso aiutarla oggi?", "Il suo ordine arriverà venerdì mattina."],
    "pt": ["Bom dia, como posso ajudar você hoje?", "Seu pedido vai chegar na sexta-feira de manhã."],
    "de": ["Guten Tag, wie kann ich Ihnen heute helfen?", "Ihre Bestellung kommt am Freitag an."],
    "hi": ["नमस्ते, मैं आज आपकी कैसे मदद कर सकता हूँ?"],
}


@dataclass
class VoiceResult:
    names: list[str]
    engine: str
    voice: str
    first_chunk_ms_p50: float
    first_chunk_ms_p95: float
    rtf_idle: float
    rtf_busy: float | None
    cpu_per_audio_second_idle: float
    cpu_per_audio_second_busy: float | None
    long_audio_s: float
    wer: float
    hypotheses: list[str] = field(default_factory=list)


def _load_llm(stop: Any) -> None:
    """Another session's answer: the embedded LLM decoding on one thread until stopped."""
    from llama_cpp import Llama

    from openrealtime.engines.assets import resolve

    llm = Llama(str(resolve("qwen2.5-0.5b")), n_threads=1, n_ctx=1024, verbose=False)
    while not stop.is_set():
        for _ in llm("Write a long story about a lighthouse keeper.", max_tokens=256, stream=True):
            if stop.is_set():
                break


def _load_tts(stop: Any, engine: str, voice: str) -> None:
    """Another session's answer: the same voice synthesizing until stopped."""
    table = VoiceTable(default_engines(kokoro=engine == "kokoro", onnx_threads=1))
    synth, _ = table.resolve(f"{engine}:{voice}")
    while not stop.is_set():
        for _ in synth.synthesize(LONG_REPLY, voice=voice):
            if stop.is_set():
                break


class Load:
    """A background process keeping one core busy the way another session would."""

    def __init__(self, kind: str, engine: str, voice: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        target: Any = _load_llm if kind == "llm" else _load_tts
        args = (self.stop,) if kind == "llm" else (self.stop, engine, voice)
        self.process = ctx.Process(target=target, args=args, daemon=True)

    def __enter__(self) -> Load:
        self.process.start()
        time.sleep(8.0)  # model load; then it decodes steadily
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def first_chunk_ms(synth: Synthesizer, voice: str, text: str) -> float:
    start = time.perf_counter()
    first = 0.0
    for chunk in synth.synthesize(text, voice=voice):
        if not first and len(chunk):
            first = time.perf_counter() - start
    return 1000 * first


def rtf(synth: Synthesizer, voice: str) -> tuple[float, float, float]:
    """(wall RTF, CPU seconds per audio second, audio seconds) for the long reply."""

    def cpu_seconds() -> float:  # this process and its finished children (espeak-ng)
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    wall, cpu = time.perf_counter(), cpu_seconds()
    samples = sum(len(c) for c in synth.synthesize(LONG_REPLY, voice=voice))
    audio = samples / synth.sample_rate
    return (time.perf_counter() - wall) / audio, (cpu_seconds() - cpu) / audio, audio


def transcribe(transcriber: Any, audio: np.ndarray, rate: int, language: str = "en") -> str:
    import soxr

    pcm = soxr.resample(audio.astype(np.float32) / 32768.0, rate, 16000).astype(np.float32)
    return str(transcriber.transcribe(pcm, language=language).text).strip()


def speak(synth: Synthesizer, voice: str, text: str) -> np.ndarray:
    return np.concatenate([c for c in synth.synthesize(text, voice=voice)])


def bench_voice(
    names: list[str], synth: Synthesizer, engine: str, voice: str, transcriber: Any, load: str
) -> VoiceResult:
    from openrealtime.engines.asr.wer import corpus_wer

    list(synth.synthesize("Warm up, please.", voice=voice))
    firsts = [first_chunk_ms(synth, voice, text) for text in SHORT_REPLIES]
    idle_rtf, idle_cpu, audio_s = rtf(synth, voice)
    busy_rtf = busy_cpu = None
    if load != "none":
        with Load(load, engine, voice):
            busy_rtf, busy_cpu, _ = rtf(synth, voice)
    hyps = [transcribe(transcriber, speak(synth, voice, s), synth.sample_rate) for s in WER_SENTENCES]
    return VoiceResult(
        names=names,
        engine=engine,
        voice=voice,
        first_chunk_ms_p50=round(statistics.median(firsts), 1),
        first_chunk_ms_p95=round(float(np.percentile(firsts, 95)), 1),
        rtf_idle=round(idle_rtf, 3),
        rtf_busy=None if busy_rtf is None else round(busy_rtf, 3),
        cpu_per_audio_second_idle=round(idle_cpu, 3),
        cpu_per_audio_second_busy=None if busy_cpu is None else round(busy_cpu, 3),
        long_audio_s=round(audio_s, 2),
        wer=round(corpus_wer(zip(WER_SENTENCES, hyps, strict=True)), 4),
        hypotheses=hyps,
    )


def bench_languages(table: VoiceTable, transcriber: Any) -> dict[str, Any]:
    from openrealtime.engines.asr.wer import corpus_wer

    out: dict[str, Any] = {}
    for lang, sentences in LANGUAGE_SENTENCES.items():
        for name in ("marin", "cedar"):
            synth, voice = table.resolve(name, language=lang)
            hyps = [
                transcribe(transcriber, speak(synth, voice, s), synth.sample_rate, lang) for s in sentences
            ]
            key = f"{lang}:{name}"
            out[key] = {
                "voice": f"{synth.name}:{voice}",
                "wer": round(corpus_wer(zip(sentences, hyps, strict=True)), 4),
                "hypotheses": hyps,
            }
            print(f"{key:10} {out[key]['voice']:22} WER {100 * out[key]['wer']:5.1f}%  {hyps}", flush=True)
    return out


def publish(
    results: list[VoiceResult],
    info: dict[str, Any],
    args: argparse.Namespace,
    notes: dict[str, str] | None = None,
) -> None:
    """Record each voice's figures where ``GET /v1/voices`` reads them (``notes``: what a
    results file says about the conditions of a voice's run)."""
    from openrealtime.engines.tts.measured import record

    start, end = info["load_average_start"][0], info.get("load_average_end", os.getloadavg())[0]
    machine = (
        f"{info.get('cpu', '?')}, {info.get('logical_cpus', '?')} cores, "
        f"load average {start:.1f}-{end:.1f}, {str(info.get('time', ''))[:10]}"
    )
    command = "python bench/voices.py " + " ".join(a for a in (args.argv or []))
    record(
        {
            f"{r.engine}:{r.voice}": {
                "first_chunk_ms_p50": r.first_chunk_ms_p50,
                "first_chunk_ms_p95": r.first_chunk_ms_p95,
                "rtf_idle": r.rtf_idle,
                "rtf_busy": r.rtf_busy,
                "busy_with": None if r.rtf_busy is None else f"another session ({str(args.load).split()[0]})",
                "cpu_seconds_per_audio_second": r.cpu_per_audio_second_idle,
                "round_trip_wer": r.wer,
                "measured_on": machine,
                "command": command.strip(),
                "note": (notes or {}).get(f"{r.engine}:{r.voice}"),
            }
            for r in results
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--voices", default=",".join(OPENAI_VOICES), help="names to measure")
    parser.add_argument("--load", choices=("llm", "tts", "none"), default="llm")
    parser.add_argument("--no-kokoro", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="ONNX threads per engine")
    parser.add_argument("--languages", action="store_true", help="also score other languages")
    parser.add_argument("--out", type=Path, default=RESULTS / "voices.json")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also record the figures for GET /v1/voices (engines/tts/measured.py)",
    )
    parser.add_argument(
        "--publish-from", type=Path, metavar="RESULTS", help="publish a finished run's results file and exit"
    )
    args = parser.parse_args(argv)
    if args.publish_from is not None:
        saved = json.loads(args.publish_from.read_text())
        args.argv, args.load = saved.get("argv", []), saved.get("load", "llm")
        known = {f.name for f in fields(VoiceResult)}
        saved_results = [VoiceResult(**{k: v for k, v in r.items() if k in known}) for r in saved["results"]]
        notes = {
            f"{r['engine']}:{r['voice']}": r.get("note") or saved.get("note")
            for r in saved["results"]
            if r.get("note") or saved.get("note")
        }
        publish(saved_results, saved["machine"], args, notes)
        return 0
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--publish"]

    from openrealtime.engines.asr.whisper import WhisperTranscriber

    info = machine_info("onnxruntime", "piper-tts", "kokoro-onnx")
    info["load_average_start"] = os.getloadavg()
    print("machine:", json.dumps(info), flush=True)
    table = VoiceTable(default_engines(kokoro=not args.no_kokoro, onnx_threads=args.threads))
    transcriber = WhisperTranscriber("whisper-base", cpu_threads=1)
    groups: dict[tuple[str, str], list[str]] = {}
    synths: dict[tuple[str, str], Synthesizer] = {}
    for name in [n.strip() for n in args.voices.split(",") if n.strip()]:
        synth, voice = table.resolve(name)
        key = (table.spec(name).engine, voice)
        groups.setdefault(key, []).append(name)
        synths.setdefault(key, synth)
    results: list[VoiceResult] = []
    languages: dict[str, Any] = {}

    def write() -> None:  # after every voice, so a long run keeps what it measured
        info["load_average_end"] = os.getloadavg()
        payload = {
            "machine": info,
            "onnx_threads": args.threads,
            "load": args.load,
            "argv": args.argv,
            "short_replies": SHORT_REPLIES,
            "long_reply": LONG_REPLY,
            "results": [asdict(r) for r in results],
            "languages": languages,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    for key, names in groups.items():
        r = bench_voice(names, synths[key], key[0], key[1], transcriber, args.load)
        results.append(r)
        write()
        busy = "" if r.rtf_busy is None else f" busy {r.rtf_busy:.2f} (cpu {r.cpu_per_audio_second_busy:.2f})"
        print(
            f"{','.join(names):22} {r.engine}:{r.voice:18} first chunk p50 {r.first_chunk_ms_p50:6.0f} ms "
            f"p95 {r.first_chunk_ms_p95:6.0f} ms  RTF idle {r.rtf_idle:.2f} (cpu {r.cpu_per_audio_second_idle:.2f})"
            f"{busy}  WER {100 * r.wer:.1f}%",
            flush=True,
        )
    if args.languages:
        languages.update(bench_languages(table, transcriber))
        write()
    print(f"wrote {args.out}")
    if args.publish:
        publish(results, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
