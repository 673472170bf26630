"""Which spelling word makes a letter read back best: candidate words for one letter, spoken
inside real codes by a voice of the server's table and written back by the server's ASR.

The codes are those of the read-back benchmark (``openrealtime.benchmark.readback``) that
contain the letter (``--contexts`` of them), each read ``--repeats`` times (Piper samples its
noise afresh on every call); a reading counts when the listener's normalisation of the
transcript contains the code.

    python bench/spelling.py --letter S --words Sugar,Sunday,Sam [--contexts 4] [--repeats 3]

Writes bench/results/spelling-<letter>.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.benchmark import readback
from openrealtime.engines.tts import normalize
from openrealtime.engines.tts.voices import VoiceTable, default_engines

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--letter", required=True)
    parser.add_argument("--words", required=True, help="comma-separated candidate words")
    parser.add_argument("--alone", action="store_true", help="say the word alone, not 'X as in word'")
    parser.add_argument("--voice", default="marin")
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import soxr

    from openrealtime.engines.asr.whisper import WhisperTranscriber

    letter = args.letter.upper()
    codes = [code for _, code in readback.generated_codes() if letter in code][: args.contexts]
    table = VoiceTable(default_engines(kokoro=False, onnx_threads=1))
    synth, voice = table.resolve(args.voice)
    transcriber = WhisperTranscriber("whisper-base", cpu_threads=1)
    info = machine_info("onnxruntime", "piper-tts", "faster-whisper")
    results: dict[str, Any] = {}
    for word in [w.strip() for w in args.words.split(",") if w.strip()]:
        normalize.SPELLING_ALPHABET[letter] = word
        readback.SPELLING_WORDS[word.lower()] = letter.lower()
        alone = set(normalize.WORD_ALONE)
        normalize.WORD_ALONE = frozenset(alone | {letter} if args.alone else alone - {letter})
        readings = []
        for code in codes:
            for _ in range(args.repeats):
                spoken = f"Your confirmation code is {normalize.spell_code(code)}."
                audio = np.concatenate(list(synth.synthesize(spoken, voice=voice)))
                pcm = soxr.resample(audio.astype(np.float32) / 32768.0, synth.sample_rate, 16000)
                heard = str(transcriber.transcribe(pcm.astype(np.float32), language="en").text).strip()
                readings.append(
                    {
                        "code": code,
                        "heard": heard,
                        "ok": readback.canonical(code) in readback.canonical(heard),
                    }
                )
        ok = sum(r["ok"] for r in readings)
        results[word] = {"read_back": f"{ok}/{len(readings)}", "misses": [r for r in readings if not r["ok"]]}
        print(f"{letter} {'alone' if args.alone else 'as in'} {word}: {ok}/{len(readings)}", flush=True)
    out = RESULTS / f"spelling-{letter}.json"
    out.write_text(json.dumps({"machine": info, "codes": codes, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
