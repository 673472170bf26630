"""Voice-to-voice latency over a real WebSocket, on the shared real-speech clips.

A thin wrapper over ``openrealtime bench`` (``openrealtime.benchmark``): the 11 shared clips
with their hand-annotated speech edges, spoken once each at 1 session and again spread over
N concurrent sessions (real-time paced, room tone between turns, server VAD). Per turn:
voice-to-voice (end of speech → first ``response.output_audio.delta``), the client-side
stages, the server's ``turn timings`` stages, and playback underruns. Writes
``bench/results/voice_latency-<timestamp>.json/.png`` and ``voice_latency-latest.*``.

    .venv/bin/python bench/voice_latency.py [--silence-ms 300] [--concurrency 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.speech_audio import AUDIO_DIR, REFERENCE_EDGES, transcripts  # noqa: E402

from openrealtime.benchmark.audio import load_utterance  # noqa: E402
from openrealtime.benchmark.runner import BenchOptions, run_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--silence-ms", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--clips", nargs="*", default=list(REFERENCE_EDGES))
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra argument for openrealtime serve"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    texts = transcripts()
    utterances = [
        load_utterance(AUDIO_DIR / f"{name}.wav", end_ms=REFERENCE_EDGES[name][1], transcript=texts.get(name))
        for name in args.clips
    ]
    spoken = len(utterances) * args.repeat
    run_benchmark(
        BenchOptions(
            utterances=utterances,
            levels=sorted({1, args.concurrency}),
            turns=1,
            min_turns=spoken,
            silence_ms=args.silence_ms,
            serve_args=args.server_arg,
            out=args.out,
            name="voice_latency",
            command=" ".join(["python", *sys.argv]),
        )
    )


if __name__ == "__main__":
    main()
