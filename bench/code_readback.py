"""Read-back benchmark: codes, numbers, addresses, amounts and dates spoken by a voice of the
server's table and written back by the server's ASR (Whisper base).

The 50 seeded codes of the read-back test (30 confirmation codes such as ``BN8-2977`` or
``K3X9Q2``, 10 order numbers, 10 phone numbers) and 12 e-mail addresses, amounts and dates,
each in a sentence, through the same synthesizer a session uses (text normaliser included);
a code counts as read back when the transcript, normalised as a listener writes down what was
spelled (``openrealtime.benchmark.readback.canonical``), contains it.

    python bench/code_readback.py [--voices marin,cedar] [--kokoro]

Writes bench/results/code_readback.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.benchmark.readback import canonical, generated_codes, generated_details, read_well
from openrealtime.engines.tts.normalize import normalize_for_speech
from openrealtime.engines.tts.voices import VoiceTable, default_engines

RESULTS = Path(__file__).resolve().parent / "results"


def hear(transcriber: Any, table: VoiceTable, name: str, text: str) -> str:
    import soxr

    synth, voice = table.resolve(name)
    audio = np.concatenate(list(synth.synthesize(text, voice=voice)))
    pcm = soxr.resample(audio.astype(np.float32) / 32768.0, synth.sample_rate, 16000)
    return str(transcriber.transcribe(pcm.astype(np.float32), language="en").text).strip()


def bench_voice(table: VoiceTable, transcriber: Any, name: str) -> dict[str, Any]:
    start = time.perf_counter()
    codes: list[dict[str, Any]] = []
    for sentence, code in generated_codes():
        heard = hear(transcriber, table, name, sentence)
        kind = "code" if re.search(r"[A-Z]", code) else "order" if code.isdigit() else "phone"
        codes.append(
            {
                "kind": kind,
                "written": code,
                "spoken": normalize_for_speech(sentence),
                "heard": heard,
                "ok": canonical(code) in canonical(heard),
            }
        )
        mark = "ok  " if codes[-1]["ok"] else "MISS"
        print(f"  {mark} {code:16} {heard}", flush=True)
    details = []
    for kind, sentence, written in generated_details():
        heard = hear(transcriber, table, name, sentence)
        details.append(
            {"kind": kind, "written": written, "heard": heard, "ok": read_well(kind, written, heard)}
        )
    exact = sum(c["ok"] for c in codes)
    by_kind = {
        kind: f"{sum(c['ok'] for c in codes if c['kind'] == kind)}/{sum(c['kind'] == kind for c in codes)}"
        for kind in ("code", "order", "phone")
    }
    synth, voice = table.resolve(name)
    return {
        "voice": f"{synth.name}:{voice}",
        "codes_exact": f"{exact}/{len(codes)}",
        "codes_exact_fraction": exact / len(codes),
        "by_kind": by_kind,
        "details_read_well": f"{sum(d['ok'] for d in details)}/{len(details)}",
        "seconds": round(time.perf_counter() - start, 1),
        "misses": [c for c in codes if not c["ok"]],
        "detail_misses": [d for d in details if not d["ok"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--voices", default="marin,cedar", help="names to measure")
    parser.add_argument("--kokoro", action="store_true", help="with the Kokoro voices (KOKORO=true)")
    parser.add_argument("--out", type=Path, default=RESULTS / "code_readback.json")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also record the figures for GET /v1/voices (engines/tts/measured.py)",
    )
    args = parser.parse_args(argv)

    from openrealtime.engines.asr.whisper import WhisperTranscriber

    info = machine_info("onnxruntime", "piper-tts", "faster-whisper")
    info["load_average_start"] = os.getloadavg()
    table = VoiceTable(default_engines(kokoro=args.kokoro, onnx_threads=1))
    transcriber = WhisperTranscriber("whisper-base", cpu_threads=1)
    results: dict[str, Any] = {}
    for name in [n.strip() for n in args.voices.split(",") if n.strip()]:
        print(f"{name}:", flush=True)
        results[name] = bench_voice(table, transcriber, name)
        r = results[name]
        print(
            f"{name} ({r['voice']}): codes {r['codes_exact']} exact {r['by_kind']}, "
            f"addresses/amounts/dates {r['details_read_well']}, {r['seconds']} s",
            flush=True,
        )
    info["load_average_end"] = os.getloadavg()
    args.out.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    if args.publish:
        from openrealtime.engines.tts.measured import record

        end = info["load_average_end"][0]
        machine = (
            f"{info.get('cpu', '?')}, {info.get('logical_cpus', '?')} cores, "
            f"load average {info['load_average_start'][0]:.1f}-{end:.1f}, {time.strftime('%Y-%m-%d')}"
        )
        flags = " --kokoro" if args.kokoro else ""
        record(
            {
                r["voice"]: {
                    "codes_read_back": r["codes_exact"],
                    "codes_measured_on": machine,
                    "codes_command": f"python bench/code_readback.py --voices {name}{flags}",
                }
                for name, r in results.items()
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
