"""Do final transcriptions of different sessions gain from being decoded together?

    python bench/asr_batch.py --rounds 5 --threads 1

Whisper base (CTranslate2 int8, greedy) on real speech clips, each padded to Whisper's 30 s
window as faster-whisper does: ``batch`` clips encoded and decoded one after another (batch
size 1, what the ASR queue does now) against the same clips as one batch
(``WhisperModel.model.encode`` / ``generate`` on a stacked batch). Prints median/p95 wall
time and process CPU time (all threads; robust on a busy machine) per round for each batch size and writes ``bench/results/asr_batch.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openrealtime.benchmark.machine import machine_info  # noqa: E402
from openrealtime.benchmark.stats import summarize  # noqa: E402

AUDIO = ROOT.parent.parent / "shared" / "audio"
CLIPS = [
    "librivox-0880",
    "cards-005",
    "librivox-0930",
    "goforward",
    "cards-001",
    "librivox-0890",
    "cards-003",
    "librivox-0920",
]
RESULTS = ROOT / "bench" / "results"


def load(name: str) -> np.ndarray:
    with wave.open(str(Path("/work/shared/audio") / f"{name}.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2, 4])
    args = parser.parse_args()
    import ctranslate2
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(Path.home() / ".cache/openrealtime/models/whisper-base"),
        device="cpu",
        compute_type="int8",
        cpu_threads=args.threads,
    )
    clips = [load(name) for name in CLIPS]
    features = [
        model.feature_extractor(c, padding=model.feature_extractor.n_samples - c.size)[:, :3000]
        for c in clips
    ]
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language="en")
    start = [tokenizer.sot, tokenizer.language, tokenizer.transcribe, tokenizer.no_timestamps]

    def decode(batch: list[np.ndarray]) -> list[str]:
        stacked = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(batch)))
        encoded = model.model.encode(stacked, to_cpu=False)
        results = model.model.generate(
            encoded, [start] * len(batch), beam_size=1, max_length=224, suppress_blank=True
        )
        return [tokenizer.decode([t for t in r.sequences_ids[0] if t < tokenizer.eot]) for r in results]

    decode(features[:1])  # warm up
    report: dict[str, object] = {"command": " ".join(["python", *sys.argv]), "machine": machine_info()}
    for size in args.sizes:
        batch = features[:size]
        apart, together, apart_cpu, together_cpu = [], [], [], []
        for _ in range(args.rounds):
            t, c = time.perf_counter(), time.process_time()
            texts_apart = [decode([f])[0] for f in batch]
            apart.append((time.perf_counter() - t) * 1000)
            apart_cpu.append((time.process_time() - c) * 1000)
            t, c = time.perf_counter(), time.process_time()
            texts_together = decode(batch)
            together.append((time.perf_counter() - t) * 1000)
            together_cpu.append((time.process_time() - c) * 1000)
        same = sum(a.strip() == b.strip() for a, b in zip(texts_apart, texts_together, strict=True))
        row = {
            "one_after_another_ms": summarize(apart),
            "as_one_batch_ms": summarize(together),
            "one_after_another_cpu_ms": summarize(apart_cpu),
            "as_one_batch_cpu_ms": summarize(together_cpu),
            "same_text": f"{same}/{size}",
        }
        report[f"batch_{size}"] = row
        print(size, json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "asr_batch.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
